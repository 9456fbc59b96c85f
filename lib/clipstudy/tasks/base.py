"""The ``Task`` protocol: what ``training.train`` needs from anything it learns.

A task owns its model, its data, its loss and its metrics; the loop knows only this protocol.
Both tasks of the study implement it: ``ClassificationTask`` (the article's CNN on MNIST) and
``DetectionTask`` (a CenterNet-style detector on MNIST canvases).

Data flows as ``Split`` objects (``clipstudy.data.split``): images and one target per image.
``prepare`` turns a split into the two arrays the compiled step gathers batches from;
``prepare_test`` into the images and whatever ``evaluate`` needs to score them.
"""
from __future__ import annotations

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

    def failure(self, *, diverged: bool, final: dict[str, float], loss_start: float) -> str | None:
        """Why a finished run counts as failed (diverged or collapsed), or ``None``. ``final`` holds
        the summary's ``final_*`` metrics; ``loss_start`` the loss level the run started from."""

    def write_artifacts(self, directory: Path) -> list[Path]:
        """Files beside the run's tables that the last evaluation produced (may be none)."""
