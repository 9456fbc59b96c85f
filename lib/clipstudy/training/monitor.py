"""When a run is stopped as diverged."""
from __future__ import annotations

import math

from clipstudy.training.steplog import StepLog


class DivergenceMonitor:
    """Stops a run at once on a non-finite loss or gradient (that update is not applied), or when
    the mean loss of the last ``window`` steps exceeds ``factor`` × the first step's loss."""

    def __init__(self, factor: float = 3.0, window: int = 20):
        self.factor = factor
        self.window = window

    def check(self, log: StepLog) -> str | None:
        """The reason to stop after the latest step of ``log``, or ``None`` to go on."""
        loss = log.column("loss")
        if not math.isfinite(loss[-1]) or log.column("nonfinite")[-1] > 0:
            return "non-finite loss or gradient"
        if log.steps >= self.window and loss[-self.window:].mean() > self.factor * loss[0]:
            return f"loss above {self.factor:g}x its start for {self.window} steps"
        return None
