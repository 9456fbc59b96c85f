"""The detection data: box formats, canvases and the TFDS builder, against hand-computed values."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from clipstudy.data import boxes as box_formats
from clipstudy.data import canvases as detection_data
from clipstudy.data import tfds_builder


def random_boxes(rng, n=20, size=64):
    xy = rng.uniform(0, size / 2, size=(n, 2))
    wh = rng.uniform(1, size / 2, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


# --- box formats ----------------------------------------------------------------------------------


def test_boxes_round_trip_between_formats_without_loss(rng):
    boxes = random_boxes(rng)
    np.testing.assert_allclose(box_formats.coco_to_xyxy(box_formats.xyxy_to_coco(boxes)), boxes, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        box_formats.tfds_to_xyxy(box_formats.xyxy_to_tfds(boxes, 64, 80), 64, 80), boxes, rtol=0, atol=1e-12
    )
    # Hand-checked: a box from (10, 20) to (30, 50) is [10, 20, 20, 30] in COCO and
    # [20/64, 10/80, 50/64, 30/80] in TFDS' normalized [ymin, xmin, ymax, xmax].
    np.testing.assert_allclose(box_formats.xyxy_to_coco([[10, 20, 30, 50]]), [[10, 20, 20, 30]])
    np.testing.assert_allclose(
        box_formats.xyxy_to_tfds([[10, 20, 30, 50]], 64, 80), [[20 / 64, 10 / 80, 50 / 64, 30 / 80]]
    )


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
    split = tfds_builder.load_split("smoke", "test", tmp_path)
    expected = detection_data.split_canvases("smoke", "test", mnist)
    np.testing.assert_array_equal(split.x, expected[0])
    for got, want in zip(split.y, expected[1]):
        np.testing.assert_array_equal(got.boxes, want)
    for got, want in zip(split.y, expected[2]):
        np.testing.assert_array_equal(got.classes, want)


def test_unknown_dataset_size_names_the_choices():
    with pytest.raises(ValueError, match="valid choices: smoke, quick, full"):
        detection_data.split_canvases("huge", "train")


def test_an_unknown_size_is_refused_before_building():
    with pytest.raises(ValueError, match="valid choices: smoke, quick, full"):
        tfds_builder.prepare("huge")


def test_annotations_refuse_mismatched_boxes_and_classes():
    with pytest.raises(ValueError, match="2 boxes but 1 classes"):
        box_formats.Annotations(np.zeros((2, 4)), np.zeros(1))


def test_the_decoded_copy_of_a_split_gives_the_tfds_arrays_exactly(tmp_path):
    """Runs read the canvases from a decoded copy after the first read through TFDS: same arrays, same dtypes."""
    from clipstudy import paths

    via_tfds = tfds_builder._load_through_tfds("smoke", "test", paths.tfds_dir())
    cache = tmp_path / "smoke-test.npz"
    tfds_builder._write_decoded(via_tfds, cache)
    for copy in (tfds_builder._read_decoded(cache), tfds_builder.load_split("smoke", "test")):
        assert copy.x.dtype == via_tfds.x.dtype and np.array_equal(copy.x, via_tfds.x)
        assert len(copy.y) == len(via_tfds.y)
        for a, b in zip(copy.y, via_tfds.y):
            assert a.boxes.dtype == b.boxes.dtype and np.array_equal(a.boxes, b.boxes)
            assert a.classes.dtype == b.classes.dtype and np.array_equal(a.classes, b.classes)


def test_a_decoded_split_is_read_once_per_process_and_again_when_its_file_changes(tmp_path):
    """A warm kernel's runs get the same read-only ``Split`` from one read; a rewritten file is read anew."""
    import os
    import shutil

    from clipstudy import paths

    name = f"smoke-test-{tfds_builder.MnistDetection.VERSION}.npz"
    (tmp_path / "decoded").mkdir()
    shutil.copy(paths.tfds_dir() / "decoded" / name, tmp_path / "decoded" / name)
    first = tfds_builder.load_split("smoke", "test", tmp_path)
    assert tfds_builder.load_split("smoke", "test", tmp_path) is first
    assert not first.x.flags.writeable and not first.y[0].boxes.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        first.x[0, 0, 0] = 1
    stat = (tmp_path / "decoded" / name).stat()
    os.utime(tmp_path / "decoded" / name, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = tfds_builder.load_split("smoke", "test", tmp_path)
    assert again is not first and np.array_equal(again.x, first.x)
