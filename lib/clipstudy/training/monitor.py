"""When a run must stop.

A run stops only when it cannot go on: a non-finite loss or gradient (that update is not applied,
so the weights stay finite and the run is scored as it stood). Everything else is judged after the
run, by its task (``Task.failure``, with ``tasks.base.failure_reason``), so a run hit by a few bad
batches is free to recover or not.
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
