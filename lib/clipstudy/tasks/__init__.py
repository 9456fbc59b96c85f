"""What is learned: each task implements the ``Task`` protocol (``tasks.base``) that the loop knows."""
from clipstudy.tasks.base import Task
from clipstudy.tasks.classification import ClassificationTask
from clipstudy.tasks.detection import DetectionTask

#: task name (``RunConfig.task``) -> its class
BY_NAME = {cls.name: cls for cls in (ClassificationTask, DetectionTask)}


def for_config(config) -> Task:
    """The task object of ``config.task`` (the detector on ``config.dataset``)."""
    if config.task not in BY_NAME:
        raise ValueError(f"unknown task {config.task!r}; valid choices: {', '.join(BY_NAME)}")
    return DetectionTask(config.dataset) if config.task == "detector" else BY_NAME[config.task]()


__all__ = ["BY_NAME", "Task", "ClassificationTask", "DetectionTask", "for_config"]
