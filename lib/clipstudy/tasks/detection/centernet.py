"""A small anchor-free detector (CenterNet-style) for the MNIST detection canvases.

Zhou et al., 2019, "Objects as Points" (https://arxiv.org/abs/1904.07850): per class a heatmap
of object centres at stride 4, plus the box size and the sub-cell offset of the centre. The model
outputs one tensor ``(H/4, W/4, classes + 4)``: sigmoid heatmaps, then size (w, h) and offset
(x, y), both in output-grid units. Targets are packed the same way plus a centre mask channel.
"""

from __future__ import annotations

import math

import numpy as np

from clipstudy.lazy_tf import keras, tf

STRIDE = 4
NUM_CLASSES = 10
SIZE_WEIGHT = 0.1  # CenterNet's weight of the size loss
OFFSET_WEIGHT = 1.0


def _conv(x, filters, stride=1, kernel=3):
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", activation="relu")(x)


def centernet(input_size: int = 64, num_classes: int = NUM_CLASSES, width: int = 16):
    """The study's detector: a small conv backbone to stride 8, one top-down merge at stride 4
    (FPN-style), a shared 3×3 head and one 1×1 output layer per target. No normalization layers,
    so the clipping methods act on plain conv weights; about 0.1M parameters at ``width=16``."""
    layers = keras.layers
    inputs = keras.Input((input_size, input_size, 1))
    x = _conv(inputs, width // 2)
    x = _conv(x, width, stride=2)
    x = _conv(x, width)
    x = _conv(x, 2 * width, stride=2)
    c4 = _conv(x, 2 * width)  # stride 4
    y = _conv(c4, 4 * width, stride=2)  # stride 8: context for the largest digits
    y = _conv(y, 4 * width)
    y = layers.UpSampling2D(2)(_conv(y, 4 * width, kernel=1))
    merged = layers.Add()([_conv(c4, 4 * width, kernel=1), y])
    features = _conv(_conv(merged, 2 * width), 2 * width)

    # Bias -2.19: initial centre probability 0.1, as in CenterNet, so the focal loss starts sane.
    heat = layers.Conv2D(
        num_classes, 1, activation="sigmoid", name="heatmap", bias_initializer=keras.initializers.Constant(-2.19)
    )(features)
    size = layers.Conv2D(2, 1, name="size")(features)
    offset = layers.Conv2D(2, 1, name="offset")(features)
    return keras.Model(inputs, layers.Concatenate(name="packed")([heat, size, offset]), name="centernet")


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius: the largest centre shift that keeps IoU ≥ ``min_overlap`` with the true box."""
    a1, b1 = 1, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2 = 4, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def encode_targets(boxes, classes, input_size: int = 64, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Packed targets ``(S/4, S/4, classes + 5)``: heatmaps, size, offset, centre mask."""
    grid = input_size // STRIDE
    target = np.zeros((grid, grid, num_classes + 5), np.float32)
    ys, xs = np.mgrid[0:grid, 0:grid]
    for (x0, y0, x1, y1), c in zip(np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes).reshape(-1)):
        w, h = (x1 - x0) / STRIDE, (y1 - y0) / STRIDE
        cx, cy = (x0 + x1) / 2 / STRIDE, (y0 + y1) / 2 / STRIDE
        ix, iy = min(int(cx), grid - 1), min(int(cy), grid - 1)
        radius = max(0, int(gaussian_radius(h, w)))
        sigma = (2 * radius + 1) / 6
        blob = np.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma**2))
        target[..., c] = np.maximum(target[..., c], blob)
        target[iy, ix, c] = 1.0
        target[iy, ix, num_classes : num_classes + 2] = (w, h)
        target[iy, ix, num_classes + 2 : num_classes + 4] = (cx - ix, cy - iy)
        target[iy, ix, num_classes + 4] = 1.0
    return target


def losses(y, pred, num_classes: int = NUM_CLASSES):
    """Per-example (focal heatmap loss, size L1, offset L1), each normalised by the number of objects."""
    gt_heat, pred_heat = y[..., :num_classes], tf.clip_by_value(pred[..., :num_classes], 1e-4, 1 - 1e-4)
    mask = y[..., num_classes + 4 : num_classes + 5]
    centres = tf.cast(gt_heat >= 1.0, pred.dtype)
    positives = tf.math.log(pred_heat) * tf.square(1 - pred_heat) * centres
    negatives = tf.math.log(1 - pred_heat) * tf.square(pred_heat) * tf.pow(1 - gt_heat, 4) * (1 - centres)
    n = tf.maximum(tf.reduce_sum(mask, axis=[1, 2, 3]), 1.0)
    focal = -tf.reduce_sum(positives + negatives, axis=[1, 2, 3]) / n
    size = (
        tf.reduce_sum(
            tf.abs(pred[..., num_classes : num_classes + 2] - y[..., num_classes : num_classes + 2]) * mask,
            axis=[1, 2, 3],
        )
        / n
    )
    offset = (
        tf.reduce_sum(
            tf.abs(pred[..., num_classes + 2 : num_classes + 4] - y[..., num_classes + 2 : num_classes + 4]) * mask,
            axis=[1, 2, 3],
        )
        / n
    )
    return focal, size, offset


def detection_loss(y, pred):
    focal, size, offset = losses(y, pred)
    return focal + SIZE_WEIGHT * size + OFFSET_WEIGHT * offset


def _max_pool_3x3(heat: np.ndarray) -> np.ndarray:
    padded = np.pad(heat, ((1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    h, w = heat.shape[:2]
    return np.max([padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)], axis=0)


def decode(output: np.ndarray, max_detections: int = 20, min_score: float = 0.05, num_classes: int = NUM_CLASSES):
    """Boxes (xyxy pixels), scores and classes of one image's packed output ``(S/4, S/4, classes + 4)``.

    A detection is a heatmap cell that is the maximum of its 3×3 neighbourhood in its class
    (CenterNet's NMS), scoring at least ``min_score``; the best ``max_detections`` are kept (a canvas
    holds at most three digits, so 20 costs next to nothing in AP and keeps COCO scoring fast).
    """
    output = np.asarray(output, np.float64)
    heat = output[..., :num_classes]
    peaks = np.where(heat == _max_pool_3x3(heat), heat, 0.0)
    flat = peaks.reshape(-1)
    order = np.argsort(-flat, kind="stable")[:max_detections]
    order = order[flat[order] >= min_score]
    iy, ix, cls = np.unravel_index(order, heat.shape)
    w, h = output[iy, ix, num_classes], output[iy, ix, num_classes + 1]
    cx = (ix + output[iy, ix, num_classes + 2]) * STRIDE
    cy = (iy + output[iy, ix, num_classes + 3]) * STRIDE
    boxes = np.stack([cx - w * STRIDE / 2, cy - h * STRIDE / 2, cx + w * STRIDE / 2, cy + h * STRIDE / 2], axis=1)
    return boxes.reshape(-1, 4), flat[order], cls.astype(np.int64)
