"""``RunConfig``: the one definition of a run's parameters, with their types, defaults and checks.

A run of the study is a function of its ``RunConfig`` (and the machine): profiles are lists of
them, the notebooks' parameters cell holds overrides of them, ``training.train`` reads them and a
run's id is a digest of them. Building one checks every value, so a bad profile fails before
anything runs. No TensorFlow is imported here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from clipstudy import clipping, tasks
from clipstudy.training.spikes import spike_plan

#: The tasks a run can learn: every module of ``clipstudy.tasks`` that defines a ``SPEC``.
TASKS = tasks.NAMES
OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam")
#: A global-norm threshold written ``{probe_percentile: p}`` is read from an unclipped probe before the run.
FROM_DATA = "probe_percentile"


class ConfigError(ValueError):
    """A run parameter is invalid; the message names the field, the value and what is valid."""


class FrozenDict(dict):
    """A dict that cannot change and can be hashed: ``RunConfig`` keeps its caller's mappings as these
    (copied, nested values frozen too), so changing the caller's dict later changes neither the run nor its id."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("a run's parameters cannot change; build another RunConfig (config.replace(...))")

    __setitem__ = __delitem__ = __ior__ = update = pop = popitem = clear = setdefault = _refuse

    def __hash__(self):
        return hash(tuple(sorted((k, v) for k, v in self.items())))

    def __reduce__(self):  # pickled (Dask ships run specs) and copied as a plain dict, frozen again on load
        return FrozenDict, (dict(self),)

    def __repr__(self):
        return dict.__repr__(self)


#: The most elements a run's nested parameters (clip_params, task_params, spikes) may hold. A YAML alias bomb
#: (each list repeating the one before ten times) reads as a few lines and expands to billions of elements.
MAX_PARAM_ELEMENTS = 10_000


def freeze(value, _budget: list[int] | None = None):
    """``value`` with every dict a ``FrozenDict`` and every list a tuple, all the way down (copies). Refuses
    (``ConfigError``) a value of more than ``MAX_PARAM_ELEMENTS`` elements before copying more of it."""
    budget = _budget if _budget is not None else [MAX_PARAM_ELEMENTS]
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigError(
            f"a run parameter holds more than {MAX_PARAM_ELEMENTS:,} elements (a YAML alias that expands "
            "without bound?); a run's parameters are a handful of numbers"
        )
    if isinstance(value, dict):
        return FrozenDict({k: freeze(v, budget) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v, budget) for v in value)
    return value


def thaw(value):
    """The plain JSON-like form of a frozen value: dicts and lists again."""
    if isinstance(value, dict):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


def _doc(text: str):
    return {"doc": text}


#: The fields of a run that vary within an experiment of a profile (its axes: which task, which method with which
#: parameters, which optimizer at which rate, which seed, and how a threshold was read from data). Every other
#: field is a setting, the same for every run of the experiment; runs that share their settings, task, optimizer
#: and rate are one cell, and pairs within a cell differ in method (or seed) only.
AXES = ("task", "method", "clip_params", "optimizer", "learning_rate", "seed", "threshold_rule")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one run. Build with ``RunConfig.for_task(task, **overrides)``."""

    task: str = field(default="classifier", metadata=_doc("what is learned: " + ", ".join(TASKS)))
    task_params: dict = field(
        default_factory=dict,
        metadata=_doc("the task's own parameters (its spec's task_params, e.g. the recurrent task's sequence length)"),
    )
    method: str = field(default="none", metadata=_doc("clipping method, a name of clipping.METHODS"))
    clip_params: dict = field(default_factory=dict, metadata=_doc("the method's parameters (clipping.get)"))
    optimizer: str = field(default="adam", metadata=_doc("one of " + ", ".join(OPTIMIZERS)))
    learning_rate: float = field(default=1e-3, metadata=_doc("the optimizer's step size, > 0"))
    seed: int = field(default=0, metadata=_doc("seeds weights, shuffling and subsets"))
    epochs: int = field(default=1, metadata=_doc("passes over the training images"))
    batch_size: int = field(default=128, metadata=_doc("images per optimizer step"))
    train_subset: int | None = field(default=None, metadata=_doc("train on this many images (None: all)"))
    test_subset: int | None = field(default=None, metadata=_doc("test on this many images (None: all)"))
    eval_every: int | None = field(default=None, metadata=_doc("also evaluate every this many steps"))
    validation: int | None = field(
        default=None,
        metadata=_doc("evaluate on this many validation examples too (classifier: held out of the training images)"),
    )
    spikes: dict | None = field(default=None, metadata=_doc("bad batches to inject (training.spikes)"))
    dataset: str | None = field(
        default=None,
        metadata=_doc("the task's data set, for tasks that have several (the detector: an mnist_detection size)"),
    )
    threads: int = field(
        default=1,
        metadata=_doc("TensorFlow intra- and inter-op threads: they change the numbers, so they are part of the run"),
    )
    threshold_rule: str | None = field(default=None, metadata=_doc("how a threshold read from data was chosen"))
    warmup_steps: int = field(
        default=0,
        metadata=_doc("linear learning-rate warm-up: rate × k/N at step k until step N, then the rate (0: none)"),
    )

    @classmethod
    def for_task(cls, task: str, /, **overrides) -> RunConfig:
        """A config with ``task``'s defaults and ``overrides``; unknown names are refused."""
        if task not in TASKS:
            raise ConfigError(f"task={task!r} is invalid; valid choices: {', '.join(TASKS)}")
        if overrides.get("task", task) != task:
            raise ConfigError(f"task={overrides['task']!r} given for a {task} run")
        spec = tasks.spec(task)
        if spec.task_params:
            given = overrides.get("task_params") or {}
            if not isinstance(given, dict):
                raise ConfigError(f"task_params={given!r} is invalid; it must be a dict of the {task}'s parameters")
            overrides = {**overrides, "task_params": {**spec.task_params, **given}}
        return cls.from_params({**spec.defaults, **overrides, "task": task})

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> RunConfig:
        """The inverse of ``to_params``; a key that is not a field is refused, naming the valid ones."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise ConfigError(f"unknown run parameter(s) {', '.join(unknown)}; valid: {', '.join(names)}")
        return cls(**params)

    def to_params(self) -> dict[str, Any]:
        """The parameters as a plain dict (what a run's id digests); unset optional labels left out."""
        params = {f.name: thaw(getattr(self, f.name)) for f in dataclasses.fields(self)}
        for optional in ("dataset", "threshold_rule", "validation"):
            if params[optional] is None:
                del params[optional]
        if not params["task_params"]:
            del params["task_params"]  # tasks without parameters: the ids of runs made before it existed
        if not params["warmup_steps"]:
            del params["warmup_steps"]  # no warm-up: the ids of every run made before warm-up existed
        return params

    def settings(self) -> dict[str, Any]:
        """The parameters that are not axes (``AXES``): what every run of an experiment shares."""
        return {k: v for k, v in self.to_params().items() if k not in AXES}

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)

    @property
    def threshold_from_data(self) -> float | None:
        """The percentile ``p`` of a threshold still to be read from data, else ``None``."""
        threshold = self.clip_params.get("threshold")
        return threshold[FROM_DATA] if isinstance(threshold, dict) else None

    @property
    def task_spec(self):
        """The task's ``TaskSpec`` (``clipstudy.tasks``): its defaults, data sizes, failure rule."""
        return tasks.spec(self.task)

    def planned_steps(self) -> int:
        """Optimizer steps the run will take if it is not stopped (from the data sizes and its settings)."""
        images = self.train_subset or self.task_spec.train_pool(self)
        return self.epochs * -(-images // self.batch_size)

    def test_examples(self) -> int:
        """Examples each test evaluation scores."""
        return self.test_subset or self.task_spec.test_pool(self)

    def clipper(self):
        """The configured ``Clipper`` (the threshold must have been read from data already)."""
        if self.threshold_from_data is not None:
            raise ConfigError(
                f"clip_params threshold={self.clip_params['threshold']!r} has not been read from "
                "data yet; the sweep resolves it from the baseline run before the run starts"
            )
        return clipping.get(self.method, **self.clip_params)

    def __post_init__(self):
        for name in ("clip_params", "task_params", "spikes"):  # copies: the caller's dicts stay theirs
            if isinstance(getattr(self, name), (dict, list, tuple)):
                object.__setattr__(self, name, freeze(getattr(self, name)))
        _check_choice("task", self.task, TASKS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_clipping(self)
        _check_number("learning_rate", self.learning_rate)
        if self.learning_rate > LIMITS["learning_rate"]:
            raise ConfigError(
                f"learning_rate={self.learning_rate!r} is invalid; it must be at most {LIMITS['learning_rate']:g}"
            )
        object.__setattr__(self, "learning_rate", float(self.learning_rate))
        _check_int("seed", self.seed, minimum=0, maximum=LIMITS["seed"])
        _check_int("warmup_steps", self.warmup_steps, minimum=0, maximum=LIMITS["warmup_steps"])
        for name in ("epochs", "batch_size", "threads"):
            _check_int(name, getattr(self, name), minimum=1, maximum=LIMITS[name])
        for name in ("train_subset", "test_subset", "eval_every", "validation"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1, optional=True, maximum=LIMITS.get(name))
        _check_task(self)
        try:
            spike_plan(self.spikes)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.threshold_rule is not None and not isinstance(self.threshold_rule, str):
            raise ConfigError(f"threshold_rule={self.threshold_rule!r} is invalid; it must be a string or None")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is invalid; valid choices: {', '.join(choices)}")


def _check_number(name, value):
    if isinstance(value, str):
        raise ConfigError(
            f"{name}={value!r} is a string, not a number (YAML reads 1e-3 as a string: write 1.0e-3 or 0.001)"
        )
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}={value!r} is invalid; it must be a finite number > 0")


#: Sane upper bounds of a run's numbers: beyond them a run is a typo (a rate of 1e300, 1e8 epochs), refused
#: before anything runs rather than failing hours later or asking for terabytes. The data sizes are bounded by
#: each task's own pool.
LIMITS = {
    "learning_rate": 1e6,
    "warmup_steps": 10_000_000,
    "seed": 2**32 - 1,
    "epochs": 1_000,
    "batch_size": 65_536,
    "threads": 256,
    "eval_every": 10_000_000,
}


def _check_int(name, value, minimum, optional=False, maximum=None):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        tail = " or None" if optional else ""
        raise ConfigError(f"{name}={value!r} is invalid; it must be an integer ≥ {minimum}{tail}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={value!r} is invalid; it must be an integer from {minimum} to {maximum:,}")


def _check_clipping(config: RunConfig):
    if not isinstance(config.clip_params, dict):
        raise ConfigError(
            f"clip_params={config.clip_params!r} is invalid; it must be a dict of the method's parameters"
        )
    clip_params = dict(config.clip_params)
    rule = clip_params.get("threshold")
    if isinstance(rule, dict):
        p = rule.get(FROM_DATA)
        if config.method != "global_norm" or set(rule) != {FROM_DATA}:
            raise ConfigError(
                f"clip_params threshold={rule!r} is invalid; a threshold from data must be "
                f"{{{FROM_DATA}: p}} on global_norm"
            )
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 < p <= 100:
            raise ConfigError(f"clip_params threshold.{FROM_DATA}={p!r} is invalid; it must be a number in (0, 100]")
        clip_params["threshold"] = 1.0  # the rest of the parameters are checked with a stand-in
    try:
        clipping.get(config.method, **clip_params)
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None


def _check_task(config: RunConfig):
    """The task's own checks (its data set and sizes, its parameters), from its spec."""
    spec = tasks.spec(config.task)
    if not isinstance(config.task_params, dict):
        raise ConfigError(f"task_params={config.task_params!r} is invalid; it must be a dict")
    unknown = sorted(set(config.task_params) - set(spec.task_params))
    if unknown:
        valid = ", ".join(spec.task_params) or "none"
        raise ConfigError(
            f"task_params: unknown parameter(s) {', '.join(unknown)} for the {config.task}; valid: {valid}"
        )
    try:
        spec.check(config)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
