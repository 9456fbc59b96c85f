"""MNIST detection: digits pasted onto blank canvases, with tight boxes and classes (NumPy only).

Built from ``data/mnist.npz`` alone and deterministic from a seed. Train canvases use MNIST
training digits; validation canvases the first 5,000 test digits and test canvases the last
5,000, so no digit image is shared between splits. ``clipstudy.data.tfds_builder`` serves them
as a TensorFlow Datasets builder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from clipstudy.data import mnist as mnist_module


@dataclass(frozen=True)
class CanvasSpec:
    """How canvases are drawn: side in pixels, digits per canvas, digit side range, overlap limit."""

    size: int = 64
    min_digits: int = 1
    max_digits: int = 3
    min_scale: int = 16
    max_scale: int = 28
    max_iou: float = 0.1
    ink_threshold: int = 32  # a pixel ≥ this (of 255) is ink, for the tight box

    def __post_init__(self):
        if not 1 <= self.min_digits <= self.max_digits:
            raise ValueError(
                f"digits per canvas: need 1 ≤ min_digits ≤ max_digits, got {self.min_digits}, {self.max_digits}"
            )
        if not 8 <= self.min_scale <= self.max_scale <= self.size:
            raise ValueError(
                f"digit scale: need 8 ≤ min_scale ≤ max_scale ≤ size, got "
                f"{self.min_scale}, {self.max_scale}, size {self.size}"
            )


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def make_canvases(images: np.ndarray, labels: np.ndarray, count: int, spec: CanvasSpec = CanvasSpec(), seed: int = 0):
    """Draw ``count`` canvases from ``images``/``labels`` (uint8 28×28 digits).

    Returns:
      ``(canvases, boxes, classes)``: uint8 ``(count, size, size)``, and per canvas a float32
      ``(k, 4)`` array of xyxy pixel boxes (``x_max``/``y_max`` exclusive) and an int64 ``(k,)`` array.
    """
    rng = np.random.default_rng(seed)
    canvases = np.zeros((count, spec.size, spec.size), np.uint8)
    all_boxes, all_classes = [], []
    for n in range(count):
        wanted = int(rng.integers(spec.min_digits, spec.max_digits + 1))
        boxes, classes = [], []
        for _ in range(wanted):
            for _attempt in range(20):  # look for a place that overlaps little
                k = int(rng.integers(len(images)))
                side = int(rng.integers(spec.min_scale, spec.max_scale + 1))
                digit = np.asarray(Image.fromarray(images[k]).resize((side, side), Image.BILINEAR))
                ink_rows = np.flatnonzero((digit >= spec.ink_threshold).any(axis=1))
                ink_cols = np.flatnonzero((digit >= spec.ink_threshold).any(axis=0))
                if len(ink_rows) == 0:
                    continue
                top = int(rng.integers(0, spec.size - side + 1))
                left = int(rng.integers(0, spec.size - side + 1))
                box = [left + ink_cols[0], top + ink_rows[0], left + ink_cols[-1] + 1, top + ink_rows[-1] + 1]
                if all(_iou(box, other) <= spec.max_iou for other in boxes):
                    region = canvases[n, top : top + side, left : left + side]
                    np.maximum(region, digit, out=region)
                    boxes.append(box)
                    classes.append(int(labels[k]))
                    break
        all_boxes.append(np.asarray(boxes, np.float32).reshape(-1, 4))
        all_classes.append(np.asarray(classes, np.int64))
    return canvases, all_boxes, all_classes


#: name -> canvases per split; the profiles pick one by name.
SPLIT_SIZES = {
    "smoke": {"train": 512, "validation": 64, "test": 128},
    "quick": {"train": 4096, "validation": 256, "test": 500},
    "full": {"train": 30000, "validation": 1000, "test": 2000},
}
SPLIT_SEEDS = {"train": 101, "validation": 202, "test": 303}


def split_canvases(config: str, split: str, mnist=None, spec: CanvasSpec = CanvasSpec()):
    """The canvases of one split of one size configuration, straight from the MNIST arrays."""
    if config not in SPLIT_SIZES:
        raise ValueError(f"unknown detection dataset size {config!r}; valid choices: {', '.join(SPLIT_SIZES)}")
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; valid choices: {', '.join(SPLIT_SEEDS)}")
    (x_train, y_train), (x_test, y_test) = mnist or mnist_module.load_mnist()
    pools = {
        "train": (x_train, y_train),
        "validation": (x_test[:5000], y_test[:5000]),
        "test": (x_test[5000:], y_test[5000:]),
    }
    images, labels = pools[split]
    return make_canvases(images, labels, SPLIT_SIZES[config][split], spec, seed=SPLIT_SEEDS[split])
