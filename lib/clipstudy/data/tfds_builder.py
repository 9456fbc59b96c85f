"""The detection canvases as a TensorFlow Datasets builder, built offline from ``data/mnist.npz``.

After ``import clipstudy.data.tfds_builder``, ``tfds.load("mnist_detection/quick", data_dir=...)``
builds and reads it, with the standard detection features (``image``; ``objects`` with normalized
``bbox`` and ``label``). Importing this module imports TensorFlow Datasets (and TensorFlow).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from clipstudy import caches, paths
from clipstudy.data import boxes as box_formats
from clipstudy.data import mnist
from clipstudy.data.canvases import SPLIT_SEEDS, SPLIT_SIZES, CanvasSpec, split_canvases
from clipstudy.data.split import Split
from clipstudy.fileio import atomic_target, file_identity
from clipstudy.lazy_tf import import_tensorflow_quietly, verbose

import_tensorflow_quietly()
import tensorflow_datasets as tfds  # noqa: E402  (after TensorFlow's quiet import)


class MnistDetectionConfig(tfds.core.BuilderConfig):
    def __init__(self, *, sizes: dict[str, int], **kwargs):
        super().__init__(**kwargs)
        self.sizes = sizes


class MnistDetection(tfds.core.GeneratorBasedBuilder):
    """MNIST digits on 64×64 canvases, one to three per canvas, with tight boxes and classes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: 64×64 canvases, 1–3 digits of 16–28 px, IoU ≤ 0.1."}
    BUILDER_CONFIGS = [
        MnistDetectionConfig(
            name=name,
            sizes=sizes,
            description=f"{sizes['train']} train, {sizes['validation']} validation, {sizes['test']} test canvases",
        )
        for name, sizes in SPLIT_SIZES.items()
    ]
    DEFAULT_CONFIG_NAME = "quick"

    def _info(self) -> tfds.core.DatasetInfo:
        size = CanvasSpec().size
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(size, size, 1)),
                    "objects": tfds.features.Sequence(
                        {
                            "bbox": tfds.features.BBoxFeature(),
                            "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
                        }
                    ),
                }
            ),
            supervised_keys=None,
            disable_shuffling=True,  # keep canvas i at position i, as generated
            homepage="https://github.com/clipstudy",
            description=__doc__,
        )

    def _split_generators(self, dl_manager):
        arrays = mnist.load_mnist()  # the local, verified arrays: nothing is downloaded
        return {split: self._generate_examples(split, arrays) for split in SPLIT_SEEDS}

    def _generate_examples(self, split, arrays):
        canvases, boxes, classes = split_canvases(self.builder_config.name, split, arrays)
        size = canvases.shape[1]
        for i, (canvas, b, c) in enumerate(zip(canvases, boxes, classes)):
            normalized = np.clip(box_formats.xyxy_to_tfds(b, size, size), 0.0, 1.0).astype(np.float32)
            yield (
                i,
                {
                    "image": canvas[..., None],
                    "objects": {"bbox": [tfds.features.BBox(*row) for row in normalized], "label": c},
                },
            )


#: The splits read from their decoded copies in this process, read-only, by path: ``path -> (file_identity,
#: Split)``. A warm kernel's runs (``clipstudy.study.kernels``) read each file once, and get the same
#: ``Annotations`` objects every time, whose encoded targets the detector keeps (``DetectionTask.prepare``).
#: Nine at most: three sizes of canvases, three splits each.
_DECODED = caches.ProcessCache("canvases", 9, "detection splits read from their decoded copies, by path")


def load_split(config: str, split: str, data_dir: str | Path | None = None) -> Split:
    """A split as a ``Split`` of ``Annotations``: read through TFDS (building it on first use) once, then from
    a decoded copy beside it (``decoded/<config>-<split>-<version>.npz``), which gives the same arrays in a
    fraction of the time; every run of a sweep reads its canvases, so they are decoded once per machine.

    What is read from the decoded copy is read-only and kept for this process: the same file again (same
    path, size and modification time) gives the same ``Split`` without reading it."""
    root = Path(data_dir or paths.tfds_dir())
    cache = root / "decoded" / f"{config}-{split}-{MnistDetection.VERSION}.npz"
    try:
        return _read_decoded_once(cache)
    except (OSError, KeyError, ValueError):
        pass
    decoded = _load_through_tfds(config, split, root)
    _write_decoded(decoded, cache)
    return _read_decoded_once(cache)


def _read_decoded_once(cache: Path) -> Split:
    identity = file_identity(cache)
    kept = _DECODED.get(identity[0])
    if kept is not None and kept[0] == identity:
        return kept[1]
    _DECODED.pop(identity[0])  # never a stale entry beside a failed read
    decoded = _read_decoded(cache)
    _DECODED.put(identity[0], (identity, decoded))
    return decoded


def _load_through_tfds(config: str, split: str, root: Path) -> Split:
    ds = tfds.load(f"mnist_detection/{config}", split=split, data_dir=str(root), download=True, shuffle_files=False)
    images, targets = [], []
    for example in tfds.as_numpy(ds):
        image = example["image"][..., 0]
        size = image.shape[0]
        images.append(image)
        # Normalized boxes were stored as float32: round back to whole pixels, as they were drawn.
        pixel_boxes = np.round(box_formats.tfds_to_xyxy(example["objects"]["bbox"], size, size)).astype(np.float32)
        targets.append(box_formats.Annotations(pixel_boxes, example["objects"]["label"].astype(np.int64)))
    return Split(np.stack(images), targets)


def _write_decoded(decoded: Split, cache: Path) -> None:
    counts = np.array([len(a.classes) for a in decoded.y], np.int64)
    boxes = np.concatenate([a.boxes for a in decoded.y]).astype(np.float32) if len(counts) else np.zeros((0, 4))
    classes = np.concatenate([a.classes for a in decoded.y]).astype(np.int64) if len(counts) else np.zeros(0)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(cache) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, images=decoded.x, counts=counts, boxes=boxes, classes=classes)


def _read_decoded(cache: Path) -> Split:
    with np.load(cache) as z:
        images, counts, boxes, classes = z["images"], z["counts"], z["boxes"], z["classes"]
    if len(counts) != len(images) or counts.sum() != len(boxes) or len(boxes) != len(classes):
        raise ValueError(f"{cache} is inconsistent")
    for array in (images, boxes, classes):
        array.flags.writeable = False  # shared by every later read in this process
    ends = np.cumsum(counts)
    starts = ends - counts
    return Split(images, [box_formats.Annotations(boxes[a:b], classes[a:b]) for a, b in zip(starts, ends)])


def prepare(config: str, data_dir: str | Path | None = None) -> None:
    """Build the TFDS dataset ``mnist_detection/<config>`` if it is not there yet."""
    if config not in SPLIT_SIZES:
        raise ValueError(f"unknown detection dataset size {config!r}; valid choices: {', '.join(SPLIT_SIZES)}")
    builder = tfds.builder(f"mnist_detection/{config}", data_dir=str(data_dir or paths.tfds_dir()))
    if builder.is_prepared():
        return
    if verbose():
        builder.download_and_prepare()
        return
    import absl.logging  # TFDS logs its steps through absl and prints its "Unknown size" banners

    level = absl.logging.get_verbosity()
    absl.logging.set_verbosity(absl.logging.ERROR)
    tfds.disable_progress_bar()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            builder.download_and_prepare()
    finally:
        absl.logging.set_verbosity(level)
        tfds.enable_progress_bar()
