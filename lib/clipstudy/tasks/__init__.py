"""What is learned: every module of this package that defines ``SPEC`` (a ``tasks.base.TaskSpec``) is a
task the study can run. ``spec(name)`` gives a task's spec, ``for_config(config)`` the ``Task`` object of a
run; nothing outside a task's own module names it.
"""

from __future__ import annotations

import importlib
import pkgutil

from clipstudy.tasks.base import Task, TaskSpec


def _discover() -> dict[str, TaskSpec]:
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        task_spec = getattr(module, "SPEC", None)
        if isinstance(task_spec, TaskSpec):
            if task_spec.name in found:
                raise RuntimeError(f"two task modules define the task {task_spec.name!r}")
            found[task_spec.name] = task_spec
    return found


#: task name (``RunConfig.task``) -> its spec, in the order of their modules' names
SPECS: dict[str, TaskSpec] = _discover()
#: The tasks' names.
NAMES: tuple[str, ...] = tuple(SPECS)


def spec(name: str) -> TaskSpec:
    """The spec of the task ``name``; an unknown name is refused, naming the valid ones."""
    if name not in SPECS:
        raise ValueError(f"task={name!r} is invalid; valid choices: {', '.join(NAMES)}")
    return SPECS[name]


def for_config(config) -> Task:
    """The task object of a run: its spec's ``make(config)``."""
    return spec(config.task).make(config)


__all__ = ["NAMES", "SPECS", "Task", "TaskSpec", "for_config", "spec"]
