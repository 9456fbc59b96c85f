"""The detector: targets and decoding, COCO scoring, and training through the shared loop."""

import json

import numpy as np
import pytest

from clipstudy import training
from clipstudy.data.boxes import Annotations
from clipstudy.data.canvases import split_canvases
from clipstudy.data.split import Split
from clipstudy.study import runfiles
from clipstudy.tasks.detection import DetectionTask, coco
from clipstudy.tasks.detection import centernet as detector
from clipstudy.training import RunConfig


def random_boxes(rng, n=20, size=64):
    xy = rng.uniform(0, size / 2, size=(n, 2))
    wh = rng.uniform(1, size / 2, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


# --- COCO scoring ----------------------------------------------------------------------------------


def test_ground_truth_fed_back_as_detections_scores_ap_one(rng):
    boxes = [random_boxes(rng, 3) for _ in range(10)]
    labels = [rng.integers(0, 10, size=3) for _ in range(10)]
    gt = coco.ground_truth(boxes, labels, 64, 64)
    dets = coco.detections(boxes, [np.ones(3) for _ in boxes], labels)
    metrics = coco.evaluate(gt, dets)
    assert metrics == {"AP": 1.0, "AP50": 1.0, "AP75": 1.0, "AR100": 1.0}


def test_no_detections_scores_zero_without_an_error(rng):
    gt = coco.ground_truth([random_boxes(rng, 2)], [np.array([1, 2])], 64, 64)
    assert coco.evaluate(gt, []) == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "AR100": 0.0}


def test_a_wrong_class_scores_zero_and_a_shifted_box_fails_ap75_only():
    gt = coco.ground_truth([np.array([[0, 0, 20, 20]])], [np.array([3])], 64, 64)
    assert (
        coco.evaluate(gt, coco.detections([np.array([[0, 0, 20, 20]])], [np.array([0.9])], [np.array([4])]))["AP"] == 0
    )
    # Shifted by 3 px: IoU = 17*20 / (2*400 - 17*20) = 340/460 ≈ 0.739, between 0.5 and 0.75.
    shifted = coco.evaluate(gt, coco.detections([np.array([[3, 0, 23, 20]])], [np.array([0.9])], [np.array([3])]))
    assert shifted["AP50"] == pytest.approx(1.0) and shifted["AP75"] == 0.0


def test_coco_files_are_written_as_json(tmp_path, rng):
    gt = coco.ground_truth([random_boxes(rng, 2)], [np.array([1, 2])], 64, 64)
    g, d = coco.write_coco_files(gt, [], tmp_path)
    assert json.loads(g.read_text())["categories"][0] == {"id": 1, "name": "0"}
    assert json.loads(d.read_text()) == []


# --- encoding and decoding -------------------------------------------------------------------------


def test_decode_finds_hand_placed_peaks():
    out = np.zeros((16, 16, 14), np.float32)
    out[5, 7, 3] = 0.9  # class 3 at cell (x=7, y=5)
    out[5, 8, 3] = 0.8  # its neighbour: not a local maximum, suppressed
    out[12, 2, 7] = 0.6  # class 7 at cell (x=2, y=12)
    out[5, 7, 10:14] = [4.0, 5.0, 0.5, 0.25]  # w, h (grid units), offset x, y
    out[12, 2, 10:14] = [2.0, 2.0, 0.0, 0.0]
    boxes, scores, classes = detector.decode(out, min_score=0.5)
    # Centre (7.5, 5.25) * 4 = (30, 21); size 16 x 20 px  ->  (22, 11, 38, 31).
    np.testing.assert_allclose(boxes, [[22, 11, 38, 31], [4, 44, 12, 52]], atol=1e-6)
    np.testing.assert_allclose(scores, [0.9, 0.6], rtol=1e-6)
    assert classes.tolist() == [3, 7]


def test_encoded_targets_decode_back_to_the_boxes(rng):
    boxes = np.array([[5, 6, 21, 30], [40, 38, 60, 62]], np.float32)
    classes = np.array([4, 9])
    target = detector.encode_targets(boxes, classes)
    assert target.shape == (16, 16, 15)
    assert target[..., 10 + 4].sum() == 2  # two centres
    assert target[..., 4].max() == 1.0 and (target[..., 4] < 1).sum() == 255
    decoded, scores, found = detector.decode(target[..., :14], min_score=0.99)
    order = np.argsort(found)
    np.testing.assert_allclose(decoded[order], boxes, atol=1e-5)
    assert found[order].tolist() == [4, 9]


def test_the_detector_has_under_a_million_parameters_and_outputs_stride_4_maps():
    model = detector.centernet()
    assert model.count_params() < 1_000_000
    assert model.output_shape == (None, 16, 16, 14)


# --- training through the shared loop -------------------------------------------------------------


def as_split(canvases, boxes, classes):
    return Split(canvases, [Annotations(b, c) for b, c in zip(boxes, classes)])


def test_the_detector_trains_through_the_shared_loop_with_telemetry_and_coco_metrics(mnist, tmp_path):
    data = tuple(as_split(*split_canvases("smoke", s, mnist)) for s in ("train", "test"))
    config = RunConfig.for_task(
        "detector",
        method="zclip",
        clip_params={"warmup_steps": 2},
        epochs=1,
        batch_size=16,
        train_subset=64,
        test_subset=32,
    )
    task = DetectionTask("smoke")
    run = training.train(config, task, data, progress=False)
    assert list(run.epochs.columns) == [
        "epoch",
        "step",
        "epoch_end",
        "train_loss",
        "train_heatmap_loss",
        "test_loss",
        "AP",
        "AP50",
        "AP75",
        "AR100",
        "wall_time_s",
        "eval_time_s",
    ]
    assert len(run.steps) == 4 and run.steps["norm_before"].notna().all()
    assert run.summary["task"] == "detector" and "final_AP50" in run.summary and "steps_to_ap50_90" in run.summary
    # The COCO files kept are those of the last evaluation: scoring them again gives its metrics.
    gt, dets = task.last_coco
    assert len(gt["images"]) == 32
    assert coco.evaluate(gt, dets) == {k: run.epochs[k].iloc[-1] for k in coco.METRICS}
    runfiles.save_run(run, tmp_path, config, task)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [
            "ground_truth.json",
            "detections.json",
            runfiles.SUMMARY,
            runfiles.STEPS,
            runfiles.EPOCHS,
            runfiles.PARAMS_FILE,
            runfiles.MANIFEST,
        ]
    )
    assert json.loads((tmp_path / "ground_truth.json").read_text()) == gt


def test_targets_of_read_only_annotations_are_encoded_once_and_of_writable_ones_every_time():
    from clipstudy.tasks.detection import task as detection_task

    boxes, classes = np.array([[5, 6, 21, 30], [40, 38, 60, 62]], np.float32), np.array([4, 9])
    reference = detector.encode_targets(boxes, classes)
    boxes.flags.writeable = classes.flags.writeable = False
    frozen = Annotations(boxes, classes)
    first = detection_task.encoded_targets(frozen, 64)
    assert np.array_equal(first, reference) and detection_task.encoded_targets(frozen, 64) is first
    assert not first.flags.writeable
    assert detection_task.encoded_targets(frozen, 32).shape == (8, 8, 15)  # the input size is part of the key
    writable = Annotations(np.array(boxes), np.array(classes))
    assert np.array_equal(detection_task.encoded_targets(writable, 64), reference)
    writable.boxes[0] = [0, 0, 10, 10]  # changed after encoding: encoded again, not read from a cache
    moved = detection_task.encoded_targets(writable, 64)
    assert np.array_equal(moved, detector.encode_targets(writable.boxes, writable.classes))
    assert not np.array_equal(moved, reference)


def test_prepare_gives_the_targets_encode_targets_gives_for_the_loaded_canvases():
    task = DetectionTask("smoke")
    train = task.load_data()[0]
    for _ in range(2):  # the second time from the kept encodings
        images, targets = task.prepare(train.take(np.arange(0, len(train), 3)))
        expected = [detector.encode_targets(np.array(a.boxes), np.array(a.classes)) for a in train.y[::3]]
        assert targets.dtype == np.float32 and np.array_equal(targets, np.stack(expected))
        assert targets.flags.writeable  # a new array for the run
