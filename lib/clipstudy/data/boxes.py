"""Boxes in the formats the study meets, and the annotations of one detection image.

Formats: ``xyxy`` pixel corners ``[x_min, y_min, x_max, y_max]`` (the study's own), COCO
``[x, y, width, height]`` in pixels, and TensorFlow Datasets' normalized ``[y_min, x_min, y_max, x_max]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Annotations:
    """The objects of one image: ``boxes`` float32 ``(k, 4)`` xyxy pixels, ``classes`` int64 ``(k,)``."""

    boxes: np.ndarray
    classes: np.ndarray

    def __post_init__(self):
        boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        classes = np.asarray(self.classes, np.int64).reshape(-1)
        if len(boxes) != len(classes):
            raise ValueError(f"Annotations: {len(boxes)} boxes but {len(classes)} classes")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "classes", classes)

    def __len__(self):
        return len(self.classes)


def xyxy_to_coco(boxes) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def coco_to_xyxy(boxes) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]], axis=1)


def xyxy_to_tfds(boxes, height: int, width: int) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([b[:, 1] / height, b[:, 0] / width, b[:, 3] / height, b[:, 2] / width], axis=1)


def tfds_to_xyxy(boxes, height: int, width: int) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([b[:, 1] * width, b[:, 0] * height, b[:, 3] * width, b[:, 2] * height], axis=1)
