"""The detection half: canvases, the TFDS builder, box formats, decoding, COCO scoring, training."""
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from clipstudy import coco, detection_data, detector, runs, training


def random_boxes(rng, n=20, size=64):
    xy = rng.uniform(0, size / 2, size=(n, 2))
    wh = rng.uniform(1, size / 2, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


# --- box formats ----------------------------------------------------------------------------------

def test_boxes_round_trip_between_formats_without_loss(rng):
    boxes = random_boxes(rng)
    np.testing.assert_allclose(coco.coco_to_xyxy(coco.xyxy_to_coco(boxes)), boxes, rtol=0, atol=1e-12)
    np.testing.assert_allclose(coco.tfds_to_xyxy(coco.xyxy_to_tfds(boxes, 64, 80), 64, 80), boxes, rtol=0, atol=1e-12)
    # Hand-checked: a box from (10, 20) to (30, 50) is [10, 20, 20, 30] in COCO and
    # [20/64, 10/80, 50/64, 30/80] in TFDS' normalized [ymin, xmin, ymax, xmax].
    np.testing.assert_allclose(coco.xyxy_to_coco([[10, 20, 30, 50]]), [[10, 20, 20, 30]])
    np.testing.assert_allclose(coco.xyxy_to_tfds([[10, 20, 30, 50]], 64, 80), [[20 / 64, 10 / 80, 50 / 64, 30 / 80]])


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
    assert coco.evaluate(gt, coco.detections([np.array([[0, 0, 20, 20]])], [np.array([0.9])], [np.array([4])]))["AP"] == 0
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
    out[5, 7, 3] = 0.9          # class 3 at cell (x=7, y=5)
    out[5, 8, 3] = 0.8          # its neighbour: not a local maximum, suppressed
    out[12, 2, 7] = 0.6         # class 7 at cell (x=2, y=12)
    out[5, 7, 10:14] = [4.0, 5.0, 0.5, 0.25]   # w, h (grid units), offset x, y
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
    assert target[..., 10 + 4].sum() == 2                      # two centres
    assert target[..., 4].max() == 1.0 and (target[..., 4] < 1).sum() == 255
    decoded, scores, found = detector.decode(target[..., :14], min_score=0.99)
    order = np.argsort(found)
    np.testing.assert_allclose(decoded[order], boxes, atol=1e-5)
    assert found[order].tolist() == [4, 9]


def test_the_detector_has_under_a_million_parameters_and_outputs_stride_4_maps():
    model = detector.centernet()
    assert model.count_params() < 1_000_000
    assert model.output_shape == (None, 16, 16, 14)


# --- canvases and the TFDS builder ------------------------------------------------------------------

def test_canvases_are_deterministic_and_boxes_are_tight(mnist):
    (x, y), _ = mnist
    spec = detection_data.CanvasSpec(min_digits=1, max_digits=1)
    a = detection_data.make_canvases(x[:200], y[:200], 30, spec, seed=5)
    b = detection_data.make_canvases(x[:200], y[:200], 30, spec, seed=5)
    c = detection_data.make_canvases(x[:200], y[:200], 30, spec, seed=6)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    for canvas, boxes in zip(a[0], a[1]):
        rows = np.flatnonzero((canvas >= spec.ink_threshold).any(axis=1))
        cols = np.flatnonzero((canvas >= spec.ink_threshold).any(axis=0))
        np.testing.assert_array_equal(boxes[0], [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])


def test_boxes_stay_inside_and_overlap_little(mnist):
    (x, y), _ = mnist
    spec = detection_data.CanvasSpec()
    _, boxes, classes = detection_data.make_canvases(x[:500], y[:500], 100, spec, seed=1)
    for b, c in zip(boxes, classes):
        assert len(b) == len(c) >= 1
        assert (b[:, :2] >= 0).all() and (b[:, 2:] <= spec.size).all()
        for i in range(len(b)):
            for j in range(i + 1, len(b)):
                assert detection_data._iou(b[i], b[j]) <= spec.max_iou


def test_splits_draw_from_disjoint_digit_pools():
    # Fake MNIST whose pools are told apart by their labels: train 0, test halves 1 and 2.
    square = np.zeros((28, 28), np.uint8)
    square[6:22, 6:22] = 255
    x_train, y_train = np.stack([square] * 10), np.zeros(10, np.uint8)
    x_test = np.stack([square] * 10000)
    y_test = np.r_[np.ones(5000, np.uint8), np.full(5000, 2, np.uint8)]
    fake = ((x_train, y_train), (x_test, y_test))
    for split, label in (("train", 0), ("validation", 1), ("test", 2)):
        _, _, classes = detection_data.split_canvases("smoke", split, fake)
        assert set(np.concatenate(classes).tolist()) == {label}


def test_tfds_load_works_offline_and_gives_the_generated_canvases(tmp_path, mnist):
    ds, info = tfds.load("mnist_detection/smoke", split="test", data_dir=str(tmp_path), with_info=True)
    assert info.version == "1.0.0" and info.splits["test"].num_examples == 128
    assert set(info.features["objects"].keys()) == {"bbox", "label"}
    canvases, boxes, classes = detection_data.load_split("smoke", "test", tmp_path)
    expected = detection_data.split_canvases("smoke", "test", mnist)
    np.testing.assert_array_equal(canvases, expected[0])
    for got, want in zip(boxes, expected[1]):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(classes, expected[2]):
        np.testing.assert_array_equal(got, want)


def test_unknown_dataset_size_names_the_choices():
    with pytest.raises(ValueError, match="valid choices: smoke, quick, full"):
        detection_data.split_canvases("huge", "train")


# --- training through the shared loop -------------------------------------------------------------

def test_the_detector_trains_through_the_shared_loop_with_telemetry_and_coco_metrics(mnist, tmp_path):
    split = {s: detection_data.split_canvases("smoke", s, mnist) for s in ("train", "test")}
    data = (detection_data.as_training_data(*split["train"]), detection_data.as_training_data(*split["test"]))
    run = training.train(detector.centernet, data, task=detector.DetectionTask(), clipper="zclip",
                         clip_params={"warmup_steps": 2}, epochs=1, batch_size=16, train_subset=64,
                         test_subset=32, progress=False)
    assert list(run.epochs.columns) == ["epoch", "step", "epoch_end", "train_loss", "train_heatmap_loss", "test_loss",
                                        "AP", "AP50", "AP75", "AR100", "wall_time_s", "eval_time_s"]
    assert len(run.steps) == 4 and run.steps["norm_before"].notna().all()
    assert run.summary["task"] == "detector" and "final_AP50" in run.summary and "steps_to_ap50_90" in run.summary
    canvases, boxes, classes = split["test"]
    gt, dets, metrics = detector.coco_results(run.model, canvases[:32], boxes[:32], classes[:32])
    assert len(gt["images"]) == 32 and set(metrics) == set(coco.METRICS)
    coco.write_coco_files(gt, dets, tmp_path)
    runs.save_run(run, tmp_path, {"task": "detector"})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["ground_truth.json", "detections.json", runs.SUMMARY, runs.STEPS, runs.EPOCHS, runs.PARAMS])
