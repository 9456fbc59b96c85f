"""MNIST detection: digits pasted onto blank canvases, with tight boxes and classes.

Built from ``data/mnist.npz`` alone and deterministic from a seed. Train canvases use MNIST
training digits; validation canvases the first 5,000 test digits and test canvases the last
5,000, so no digit image is shared between splits.

Also a TensorFlow Datasets builder: after ``import clipstudy.detection_data``,
``tfds.load("mnist_detection/quick", data_dir=...)`` builds and reads it offline, with the
standard detection features (``image``; ``objects`` with normalized ``bbox`` and ``label``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from clipstudy import coco, data


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
            raise ValueError(f"digits per canvas: need 1 ≤ min_digits ≤ max_digits, got {self.min_digits}, {self.max_digits}")
        if not 8 <= self.min_scale <= self.max_scale <= self.size:
            raise ValueError(f"digit scale: need 8 ≤ min_scale ≤ max_scale ≤ size, got "
                             f"{self.min_scale}, {self.max_scale}, size {self.size}")


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
                    region = canvases[n, top:top + side, left:left + side]
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
    (x_train, y_train), (x_test, y_test) = mnist or data.load_mnist()
    pools = {"train": (x_train, y_train), "validation": (x_test[:5000], y_test[:5000]),
             "test": (x_test[5000:], y_test[5000:])}
    images, labels = pools[split]
    return make_canvases(images, labels, SPLIT_SIZES[config][split], spec, seed=SPLIT_SEEDS[split])


def default_tfds_dir() -> Path:
    return data.default_mnist_path().parent / "tfds"


# --- TensorFlow Datasets builder ---------------------------------------------------------------

import tensorflow_datasets as tfds  # noqa: E402  (after the numpy-only part, which does not need it)


class MnistDetectionConfig(tfds.core.BuilderConfig):
    def __init__(self, *, sizes: dict[str, int], **kwargs):
        super().__init__(**kwargs)
        self.sizes = sizes


class MnistDetection(tfds.core.GeneratorBasedBuilder):
    """MNIST digits on 64×64 canvases, one to three per canvas, with tight boxes and classes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: 64×64 canvases, 1–3 digits of 16–28 px, IoU ≤ 0.1."}
    BUILDER_CONFIGS = [
        MnistDetectionConfig(name=name, sizes=sizes, description=f"{sizes['train']} train, "
                             f"{sizes['validation']} validation, {sizes['test']} test canvases")
        for name, sizes in SPLIT_SIZES.items()
    ]
    DEFAULT_CONFIG_NAME = "quick"

    def _info(self) -> tfds.core.DatasetInfo:
        size = CanvasSpec().size
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(size, size, 1)),
                "objects": tfds.features.Sequence({
                    "bbox": tfds.features.BBoxFeature(),
                    "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
                }),
            }),
            supervised_keys=None,
            disable_shuffling=True,  # keep canvas i at position i, as generated
            homepage="https://github.com/clipstudy",
            description=__doc__,
        )

    def _split_generators(self, dl_manager):
        mnist = data.load_mnist()  # the local, verified arrays: nothing is downloaded
        return {split: self._generate_examples(split, mnist) for split in SPLIT_SEEDS}

    def _generate_examples(self, split, mnist):
        canvases, boxes, classes = split_canvases(self.builder_config.name, split, mnist)
        size = canvases.shape[1]
        for i, (canvas, b, c) in enumerate(zip(canvases, boxes, classes)):
            normalized = np.clip(coco.xyxy_to_tfds(b, size, size), 0.0, 1.0).astype(np.float32)
            yield i, {"image": canvas[..., None],
                      "objects": {"bbox": [tfds.features.BBox(*row) for row in normalized], "label": c}}


def load_split(config: str, split: str, data_dir: str | Path | None = None):
    """Read a split through TFDS (building it on first use); return ``(canvases, boxes_xyxy, classes)``."""
    ds = tfds.load(f"mnist_detection/{config}", split=split, data_dir=str(data_dir or default_tfds_dir()),
                   download=True, shuffle_files=False)
    images, boxes, classes = [], [], []
    for example in tfds.as_numpy(ds):
        image = example["image"][..., 0]
        size = image.shape[0]
        images.append(image)
        # Normalized boxes were stored as float32: round back to whole pixels, as they were drawn.
        boxes.append(np.round(coco.tfds_to_xyxy(example["objects"]["bbox"], size, size)).astype(np.float32))
        classes.append(example["objects"]["label"].astype(np.int64))
    return np.stack(images), boxes, classes


def as_training_data(canvases, boxes, classes):
    """``(canvases, y)`` for ``training.train``: ``y[i]`` is canvas i's ``(boxes, classes)``."""
    y = np.empty(len(canvases), dtype=object)
    for i, pair in enumerate(zip(boxes, classes)):
        y[i] = pair
    return np.asarray(canvases), y


def prepare(config: str, data_dir: str | Path | None = None) -> None:
    """Build the TFDS dataset ``mnist_detection/<config>`` if it is not there yet."""
    builder = tfds.builder(f"mnist_detection/{config}", data_dir=str(data_dir or default_tfds_dir()))
    builder.download_and_prepare()


