"""The per-step record of a run, with named columns."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

#: What the compiled step returns, in order; the last is the batch's summed score (not kept per step).
STEP_FIELDS = ("loss", "norm_before", "norm_after", "clipped", "threshold", "nonfinite")
RECORD_FIELDS = STEP_FIELDS + ("batch_score",)


class StepLog:
    """Rows of ``RECORD_FIELDS`` and step times for up to ``capacity`` steps."""

    def __init__(self, capacity: int):
        self._rows = np.full((capacity, len(RECORD_FIELDS)), np.nan, dtype=np.float64)
        self._times = np.full(capacity, np.nan)
        self._column = {name: i for i, name in enumerate(RECORD_FIELDS)}
        self.steps = 0

    @property
    def capacity(self) -> int:
        return len(self._times)

    def append(self, record, seconds: float) -> dict:
        """Store one step's record; return it by field name, as given (float32 from the compiled step,
        so running sums over an epoch add up in the step's own precision)."""
        self._rows[self.steps] = record
        self._times[self.steps] = seconds
        self.steps += 1
        return dict(zip(RECORD_FIELDS, record))

    def column(self, name: str) -> np.ndarray:
        """The values of field ``name`` for the steps done so far."""
        return self._rows[: self.steps, self._column[name]]

    def step_times(self) -> np.ndarray:
        return self._times[: self.steps]

    def frame(self, steps_per_epoch: int, epochs: int) -> pd.DataFrame:
        """One row per step done: ``step``, ``epoch``, the ``STEP_FIELDS`` and ``step_time_s``."""
        n = self.steps
        df = pd.DataFrame(self._rows[:n, : len(STEP_FIELDS)], columns=list(STEP_FIELDS))
        df.insert(0, "step", np.arange(1, n + 1))
        df.insert(1, "epoch", np.minimum((np.arange(n) // steps_per_epoch) + 1, epochs))
        df["nonfinite"] = df["nonfinite"].astype(bool)
        df["step_time_s"] = self._times[:n]
        return df

    def median_step_time(self) -> float:
        return float(np.median(self.step_times())) if self.steps else math.nan
