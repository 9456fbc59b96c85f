"""COCO-format files and COCO evaluation (pycocotools) of the detector.

Boxes are ``xyxy`` pixel corners in the study (``clipstudy.data.boxes``) and ``[x, y, width,
height]`` in COCO files. Category ids in COCO files are ``digit + 1`` (COCO reserves 0).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from clipstudy.data.boxes import xyxy_to_coco
from clipstudy.fileio import write_json_atomic
from clipstudy.tasks.detection import fast_ap

METRICS = ("AP", "AP50", "AP75", "AR100")


def ground_truth(boxes: list, labels: list, height: int, width: int) -> dict:
    """A COCO ground-truth dataset: image ``i`` holds ``boxes[i]`` (xyxy) with classes ``labels[i]``."""
    images, annotations = [], []
    for image_id, (image_boxes, image_labels) in enumerate(zip(boxes, labels), start=1):
        images.append({"id": image_id, "width": int(width), "height": int(height), "file_name": f"{image_id}.png"})
        for box, label in zip(xyxy_to_coco(image_boxes), np.asarray(image_labels).reshape(-1)):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label) + 1,
                    "bbox": [round(float(v), 4) for v in box],
                    "area": float(box[2] * box[3]),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": d + 1, "name": str(d)} for d in range(10)]
    return {"images": images, "annotations": annotations, "categories": categories}


def detections(boxes: list, scores: list, labels: list) -> list[dict]:
    """COCO detection results; image ``i`` (id ``i + 1``) has ``boxes[i]`` (xyxy), ``scores[i]``, ``labels[i]``."""
    out = []
    for image_id, (image_boxes, image_scores, image_labels) in enumerate(zip(boxes, scores, labels), start=1):
        for box, score, label in zip(
            xyxy_to_coco(image_boxes), np.asarray(image_scores).reshape(-1), np.asarray(image_labels).reshape(-1)
        ):
            out.append(
                {
                    "image_id": image_id,
                    "category_id": int(label) + 1,
                    "bbox": [round(float(v), 4) for v in box],
                    "score": round(float(score), 6),
                }
            )
    return out


def evaluate(gt: dict, dets: list[dict]) -> dict[str, float]:
    """AP@[.5:.95], AP50, AP75 and AR@100 as pycocotools' COCOeval (bbox) gives them, computed by ``fast_ap`` (the
    same numbers to the last bit, in a fraction of the time) or by pycocotools where ``fast_ap`` does not cover the
    input (crowd boxes). No detections scores 0."""
    if not dets or not gt["annotations"]:
        return {k: 0.0 for k in METRICS}
    found = fast_ap.evaluate(gt, dets)
    if found is None:
        return evaluate_pycocotools(gt, dets)
    return {k: max(float(v), 0.0) for k, v in found.items()}  # -1 means "no such objects": report 0


def evaluate_pycocotools(gt: dict, dets: list[dict]) -> dict[str, float]:
    """``evaluate`` by pycocotools' COCOeval itself (the reference ``fast_ap`` is tested against)."""
    if not dets or not gt["annotations"]:
        return {k: 0.0 for k in METRICS}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and tables
        coco_gt = COCO()
        coco_gt.dataset = {k: list(v) for k, v in gt.items()}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([dict(d) for d in dets])
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [max(float(v), 0.0) for v in ev.stats]  # -1 means "no such objects": report 0
    return {"AP": stats[0], "AP50": stats[1], "AP75": stats[2], "AR100": stats[8]}


def write_coco_files(gt: dict, dets: list[dict], directory: str | Path) -> tuple[Path, Path]:
    """``ground_truth.json`` and ``detections.json`` in ``directory``, each written atomically."""
    directory = Path(directory)
    write_json_atomic(gt, directory / "ground_truth.json")
    write_json_atomic(dets, directory / "detections.json")
    return directory / "ground_truth.json", directory / "detections.json"
