"""fast_ap gives pycocotools' COCOeval numbers exactly (==, not approximately) on scored canvases built to reach
every branch of COCOeval's matching and accumulation: boxes jittered off the truth (IoUs across the thresholds),
duplicates and false positives, tied scores, images or categories with no detections or no truth, detections with
negative extents, more than 100 detections in one image and category; and the decoded output of a detector."""

import numpy as np
import pytest

from clipstudy.data.boxes import Annotations
from clipstudy.data.canvases import split_canvases
from clipstudy.data.split import Split
from clipstudy.tasks.detection import DetectionTask, coco, fast_ap
from clipstudy.tasks.detection.centernet import NUM_CLASSES


def scene(rng, images=60, crowded=False):
    """Ground truth of 0 to 3 boxes an image and detections drawn around it (some far off, some duplicated)."""
    boxes, labels, det_boxes, det_scores, det_labels = [], [], [], [], []
    for _ in range(images):
        n = int(rng.integers(0, 4))
        xy = rng.uniform(0, 40, size=(n, 2))
        truth = np.concatenate([xy, xy + rng.uniform(4, 24, size=(n, 2))], axis=1)
        cls = rng.integers(0, NUM_CLASSES, size=n)
        found, score, label = [], [], []
        for box, c in zip(truth, cls):
            for _ in range(int(rng.integers(0, 4))):  # 0 to 3 detections of this box, jittered by 0 to 6 pixels
                found.append(box + rng.normal(0, rng.uniform(0, 6), size=4))
                label.append(c if rng.uniform() < 0.85 else int(rng.integers(0, NUM_CLASSES)))
        for _ in range(int(rng.integers(0, 5))):  # false positives anywhere, some with negative extents
            xy = rng.uniform(0, 60, size=2)
            found.append(np.r_[xy, xy + rng.uniform(-3, 20, size=2)])
            label.append(int(rng.integers(0, NUM_CLASSES)))
        if crowded and rng.uniform() < 0.05:  # more than 100 detections of one category in one image
            xy = rng.uniform(0, 40, size=(130, 2))
            found += list(np.concatenate([xy, xy + 10], axis=1))
            label += [3] * 130
        score = np.round(rng.uniform(0.05, 1, size=len(found)), 2)  # two decimals: many ties
        boxes.append(truth)
        labels.append(cls)
        det_boxes.append(np.array(found).reshape(-1, 4))
        det_scores.append(score)
        det_labels.append(np.array(label, dtype=np.int64))
    return coco.ground_truth(boxes, labels, 64, 64), coco.detections(det_boxes, det_scores, det_labels)


@pytest.mark.parametrize("seed", range(12))
def test_equals_cocoeval_to_the_last_bit(seed):
    gt, dets = scene(np.random.default_rng(seed), crowded=seed % 3 == 0)
    fast = fast_ap.evaluate(gt, dets)
    assert fast is not None
    assert {k: max(v, 0.0) for k, v in fast.items()} == coco.evaluate_pycocotools(gt, dets)
    assert coco.evaluate(gt, dets) == coco.evaluate_pycocotools(gt, dets)


def test_reaches_the_cases_it_is_tested_for():
    """The scenes above hold what the exactness test is meant to cover (else it could pass vacuously)."""
    gt, dets = scene(np.random.default_rng(0), crowded=True)
    per_pair = {}
    for d in dets:
        per_pair[d["image_id"], d["category_id"]] = per_pair.get((d["image_id"], d["category_id"]), 0) + 1
    assert max(per_pair.values()) > fast_ap.MAX_DETECTIONS
    assert any(d["bbox"][2] < 0 or d["bbox"][3] < 0 for d in dets)
    scores = [d["score"] for d in dets]
    assert len(set(scores)) < len(scores)
    with_truth = {a["image_id"] for a in gt["annotations"]}
    assert len(with_truth) < len(gt["images"])
    metrics = coco.evaluate_pycocotools(gt, dets)
    assert 0.05 < metrics["AP"] < metrics["AP50"] < 0.95  # neither trivial nor perfect


def test_a_class_with_truth_and_no_detection_and_one_with_detections_and_no_truth():
    gt = coco.ground_truth([np.array([[0.0, 0, 20, 20], [30, 30, 50, 50]])], [np.array([1, 2])], 64, 64)
    dets = coco.detections([np.array([[1.0, 0, 21, 20], [5, 5, 9, 9]])], [np.array([0.9, 0.8])], [np.array([1, 7])])
    assert coco.evaluate(gt, dets) == coco.evaluate_pycocotools(gt, dets)


def test_equal_ious_go_to_the_last_box_and_an_iou_at_a_threshold_matches():
    """Two boxes of a class, a detection exactly between them (IoU 0.818 with both) and one on the first box (IoU
    1 with it, 0.667 with the second): COCOeval gives the first detection the *last* of the equal boxes, so at
    thresholds 0.7 to 0.8 both detections match (the first-of-equal rule would leave the second unmatched). A
    third image: a detection of IoU exactly 0.5, which matches at 0.5 (``>=``)."""
    truth = [np.array([[0.0, 0, 10, 10], [2, 0, 12, 10]]), np.array([[0.0, 0, 10, 10]])]
    found = [np.array([[1.0, 0, 11, 10], [0, 0, 10, 10]]), np.array([[0.0, 0, 10, 20]])]
    gt = coco.ground_truth(truth, [np.array([4, 4]), np.array([2])], 64, 64)
    dets = coco.detections(found, [np.array([0.9, 0.8]), np.array([0.7])], [np.array([4, 4]), np.array([2])])
    reference = coco.evaluate_pycocotools(gt, dets)
    assert coco.evaluate(gt, dets) == reference
    # by hand, at IoU 0.5: class 4's two detections match its two boxes, class 2's one its box (IoU 0.5 >= 0.5)
    assert reference["AP50"] == 1.0


def test_decoded_detector_output_equals_cocoeval(mnist):
    """The detector's own path: the smoke test canvases' exact boxes as truth, ``decode`` of noisy target maps."""
    canvases, boxes, classes = split_canvases("smoke", "test", mnist)
    annotations = [Annotations(b, c) for b, c in zip(boxes, classes)]
    task = DetectionTask("smoke")
    _, targets = task.prepare(Split(canvases, annotations))
    outputs = targets + np.random.default_rng(5).normal(0, 0.15, size=targets.shape).astype(targets.dtype)
    gt, dets = task.coco_files(outputs, annotations)
    assert len(dets) > 100
    assert fast_ap.evaluate(gt, dets) is not None
    assert coco.evaluate(gt, dets) == coco.evaluate_pycocotools(gt, dets)


def test_crowds_and_foreign_images_go_to_pycocotools():
    gt = coco.ground_truth([np.array([[0.0, 0, 20, 20]])], [np.array([1])], 64, 64)
    dets = coco.detections([np.array([[1.0, 0, 21, 20]])], [np.array([0.9])], [np.array([1])])
    assert fast_ap.evaluate(gt, dets) is not None
    crowd = {**gt, "annotations": [{**gt["annotations"][0], "iscrowd": 1}]}
    assert fast_ap.evaluate(crowd, dets) is None
    assert coco.evaluate(crowd, dets) == coco.evaluate_pycocotools(crowd, dets)
    assert fast_ap.evaluate(gt, [{**dets[0], "image_id": 99}]) is None
    assert fast_ap.evaluate(gt, [{**dets[0], "bbox": [np.inf, 0, 1, 1]}]) is None
