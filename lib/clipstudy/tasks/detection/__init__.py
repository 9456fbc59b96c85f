"""The detection task: a CenterNet-style detector (``centernet``), COCO files and scoring (``coco``),
and the task that trains it through the shared loop (``task``)."""

from clipstudy.tasks.detection.task import SPEC, DetectionTask

__all__ = ["SPEC", "DetectionTask"]
