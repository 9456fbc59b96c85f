"""When a run must stop, and how a finished run is judged to have failed.

A run stops only when it cannot go on: a non-finite loss or gradient (that update is not applied,
so the weights stay finite and the run is scored as it stood). Everything else is judged after the
run, by its task, so a run hit by a few bad batches is free to recover or not.
"""
from __future__ import annotations

import math

import numpy as np


#: Steps whose losses set a run's starting level (their median).
START_STEPS = 5


class DivergenceMonitor:
    """Stops a run at once on a non-finite loss or gradient."""

    def check(self, step: dict) -> str | None:
        """The reason to stop after ``step`` (a record of ``steplog.RECORD_FIELDS``), or ``None`` to go on."""
        if not math.isfinite(step["loss"]) or step["nonfinite"] > 0:
            return "non-finite loss or gradient"
        return None


def loss_start(losses) -> float:
    """The starting loss level: the median of the first ``START_STEPS`` finite losses."""
    finite = [v for v in list(losses)[:START_STEPS] if math.isfinite(v)]
    return float(np.median(finite)) if finite else math.nan


def failure_reason(*, diverged: bool, metric: str, value: float, floor: float, final_train_loss: float,
                   loss_start: float) -> str | None:
    """Why a run failed: it diverged, its ``metric`` ended below ``floor`` (collapsed), or its training
    loss ended no lower than it started (collapsed); ``None`` if none of these."""
    if diverged:
        return "diverged: non-finite loss or gradient"
    if not value >= floor:
        return f"collapsed: {metric} {value:.4f} < {floor}"
    if stuck(final_train_loss, loss_start):
        return f"collapsed: training loss {final_train_loss:.3f} no lower than at its start {loss_start:.3f}"
    return None


def stuck(final_train_loss: float, start: float) -> bool:
    """Whether training ended with its loss no lower than where it started (a slow run still
    descends; a collapsed one sits at or above its start, e.g. at ln 10 for a dead classifier)."""
    return not math.isfinite(final_train_loss) or (math.isfinite(start) and final_train_loss >= start)
