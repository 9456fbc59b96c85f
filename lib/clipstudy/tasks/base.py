"""The ``Task`` protocol, what ``training.train`` needs from anything it learns, and the ``TaskSpec``
that tells every layer above what a task's runs are.

A task owns its model, its data, its loss and its metrics; the loop knows only this protocol. Each
task module of ``clipstudy.tasks`` also defines ``SPEC``, a ``TaskSpec``: its run-parameter defaults
and checks, the sizes of its data, its cost, its notebook figures. ``clipstudy.tasks`` finds every
module that defines one, so adding a task touches its own module, its tests and a profile.

Data flows as ``Split`` objects (``clipstudy.data.split``): images and one target per image.
``prepare`` turns a split into the two arrays the compiled step gathers batches from;
``prepare_test`` into the images and whatever ``evaluate`` needs to score them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from clipstudy.data.split import Split


@runtime_checkable
class Task(Protocol):
    name: str
    """The task's name in run parameters and summaries (``classifier``, ``detector``)."""
    score_name: str
    """The per-batch score summed by ``batch_score``, reported per epoch as ``train_<score_name>``."""
    metric_names: tuple[str, ...]
    """The keys ``evaluate`` returns (columns of the epochs table)."""
    summary_keys: tuple[str, ...]
    """The summary fields a notebook prints for a run of this task (deterministic ones only)."""
    eval_batch_size: int
    """Images per prediction batch during evaluation."""

    def build_model(self) -> Any:
        """A new, untrained Keras model (called after seeding)."""

    def load_data(self) -> tuple[Split, ...]:
        """``(train, test)`` or ``(train, validation, test)`` splits, from local files only."""

    def prepare(self, split: Split) -> tuple[Any, Any]:
        """``(x, y)`` arrays for training: float32 images and the targets ``per_example_loss`` reads."""

    def prepare_test(self, split: Split) -> tuple[Any, Any]:
        """``(x, targets)`` for ``evaluate``."""

    def per_example_loss(self, y, pred):
        """The loss of each example of a batch (a tensor of shape ``(batch,)``)."""

    def batch_score(self, y, pred):
        """A score summed over the batch (accuracy counts, heatmap loss, ...)."""

    def evaluate(self, predict, x, targets, batch_size: int) -> dict[str, float]:
        """The test metrics (``metric_names``) of the model behind ``predict``."""

    def targets(self) -> dict[str, tuple[str, float]]:
        """Summary key -> (epochs-table column, value to reach), e.g. ``steps_to_98``."""

    def final_metrics(self, row) -> dict[str, float]:
        """Summary fields from the last row of the epochs table."""

    #: Why a finished run counts as failed (diverged or collapsed), or ``None``: the task's ``FailureRule``, called
    #: with ``diverged``, ``final`` (the summary's ``final_*`` metrics) and ``loss_start`` (the loss it started at).
    failure: FailureRule

    def write_artifacts(self, directory: Path) -> list[Path]:
        """Files beside the run's tables that the last evaluation produced (may be none)."""


def _no_check(config) -> None:
    return None


def _nothing_to_prepare(configs) -> None:
    return None


@dataclass(frozen=True)
class TaskSpec:
    """What the layers above the tasks know of one: nothing else about it is written anywhere else.

    ``check``, ``train_pool`` and ``test_pool`` take the run's ``RunConfig``; ``check`` raises
    ``ValueError`` with a message naming the field, the value and what is valid.
    """

    name: str
    """The task's name in run parameters (``RunConfig.task``) and summaries."""
    summary: str
    """One line: what is learned, from what data."""
    make: Callable[[Any], Task]
    """The ``Task`` object of a run (``config -> Task``)."""
    train_pool: Callable[[Any], int]
    """Training examples available to a run before its ``train_subset`` (validation held out)."""
    test_pool: Callable[[Any], int]
    """Test examples available before its ``test_subset``."""
    seconds_per_example: float
    """The sweep's cost model: seconds of one training example's step on one thread (ratios matter)."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """``RunConfig`` fields whose default differs for this task (e.g. its batch size)."""
    task_params: Mapping[str, Any] = field(default_factory=dict)
    """The task's own run parameters (``RunConfig.task_params``) with their defaults."""
    check: Callable[[Any], None] = _no_check
    """Raises ``ValueError`` for a run configuration this task cannot run."""
    prepare: Callable[[list], None] = _nothing_to_prepare
    """Build what the runs ``configs`` read, once, before a sweep starts them in parallel."""
    curve_metrics: tuple[str, ...] = ("train_loss", "test_loss")
    """Columns of the epochs table its notebook draws against steps."""
    sample_figure: Callable[[Any, Any], Any] | None = None
    """``(result, config) -> figure``: what a trained model of this task does on a few test examples."""
    primary_metric: str = "final_train_loss"
    """The summary field a report compares first (higher is better), e.g. ``final_test_accuracy``."""
    metric_range: tuple[float, float] | None = None
    """The range the primary metric's figures show (a diverged run's value beyond it is drawn at its edge and
    marked failed); None: the data's own range."""
    summary_keys: tuple[str, ...] = ()
    """The summary fields a run's notebook prints and ``verify`` checks (its ``Task.summary_keys``)."""


def failure_reason(
    *, diverged: bool, metric: str, value: float, floor: float, final_train_loss: float, loss_start: float
) -> str | None:
    """Why a run failed: it diverged, its ``metric`` ended below ``floor`` (collapsed), or its training
    loss ended no lower than it started (collapsed); ``None`` if none of these."""
    if diverged:
        return "diverged: non-finite loss or gradient"
    if not value >= floor:
        return f"collapsed: {metric} {value:.4f} < {floor}"
    if stuck(final_train_loss, loss_start):
        return f"collapsed: training loss {final_train_loss:.3f} no lower than at its start {loss_start:.3f}"
    return None


@dataclass(frozen=True)
class FailureRule:
    """A task's rule for a failed run, as data: the metric (in words, and its summary key) and the floor below which
    the run collapsed; a diverged run, or one whose training loss ended no lower than it started, failed too. A task
    holds it as its ``failure`` (``task.failure(diverged=..., final=..., loss_start=...)``); the protocol's outcome
    kinds (``analysis.outcomes``) read the reason it gives."""

    metric: str
    summary_key: str
    floor: float

    def __call__(self, *, diverged: bool, final: dict[str, float], loss_start: float) -> str | None:
        return failure_reason(
            diverged=diverged,
            metric=self.metric,
            value=final[self.summary_key],
            floor=self.floor,
            final_train_loss=final["final_train_loss"],
            loss_start=loss_start,
        )


def stuck(final_train_loss: float, start: float) -> bool:
    """Whether training ended with its loss no lower than where it started (a slow run still
    descends; a collapsed one sits at or above its start, e.g. at ln 10 for a dead classifier)."""
    return not math.isfinite(final_train_loss) or (math.isfinite(start) and final_train_loss >= start)


def check_size(name: str, value, largest: int) -> None:
    """A size parameter of a run is None or an integer in [1, ``largest``]."""
    if value is not None and value > largest:
        raise ValueError(f"{name}={value!r} is invalid; it must be an integer in [1, {largest}] or None")
