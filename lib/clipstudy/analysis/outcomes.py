"""A run's outcome in one of three kinds, the same in every table, figure and claim (docs/protocol.md):

* ``diverged``: the training loop stopped it on a non-finite loss or gradient, or it ended with a training loss
  more than ``EXPLODED`` times its loss at step 0 (an explosion the loop did not stop: an adding-problem run
  whose loss reached 1e15 finished without a non-finite value);
* ``stalled``: it finished without diverging but no better than its task's floor (the task's own failure rule:
  chance accuracy, AP50 near 0, r2 below 0.1, or a training loss no lower than at step 0);
* ``learned``: every other run.

A *failure* (the claims' ``failed``) is a diverged or a stalled run. Tables never average a diverged run's
metric: they count each kind, then give the median and range over the runs that did not diverge.
"""

from __future__ import annotations

import math

import pandas as pd

KINDS = ("diverged", "stalled", "learned")
#: A final training loss above this many times the loss at step 0 is an explosion: the run diverged.
EXPLODED = 100.0
#: A method that clips more than this share of steps normalises the gradient rather than clipping it.
NORMALISES = 0.9


def outcome(diverged: bool, failure, final_train_loss: float, loss_start: float) -> str:
    """The kind of one run's outcome from its summary's fields."""
    if bool(diverged):
        return "diverged"
    loss = float(final_train_loss) if final_train_loss is not None else math.nan
    start = float(loss_start) if loss_start is not None else math.nan
    if loss == math.inf or (math.isfinite(start) and start > 0 and loss > EXPLODED * start):  # NaN: not recorded
        return "diverged"
    if isinstance(failure, str) and failure:
        return "stalled"
    return "learned"


def add_outcomes(summaries: pd.DataFrame) -> pd.DataFrame:
    """``summaries`` with an ``outcome`` column (one of ``KINDS``)."""
    s = summaries.copy()
    if s.empty:
        s["outcome"] = pd.Series(dtype=str)
        return s
    failure = s["failure"] if "failure" in s else pd.Series(None, index=s.index)
    loss = s["final_train_loss"] if "final_train_loss" in s else pd.Series(math.nan, index=s.index)
    start = s["loss_start"] if "loss_start" in s else pd.Series(math.nan, index=s.index)
    s["outcome"] = [
        outcome(d, f, lo, st) for d, f, lo, st in zip(s["diverged"].astype(bool), failure, loss, start, strict=True)
    ]
    return s


def counts_text(kinds) -> str:
    """``'2 diverged, 3 stalled, 5 learned'`` (kinds with no run left out; ``'no runs'`` when empty)."""
    kinds = list(kinds)
    parts = [f"{kinds.count(k)} {k}" for k in KINDS if kinds.count(k)]
    return ", ".join(parts) if parts else "no runs"


def share_text(fraction: float) -> str:
    """A share of steps as a percentage to one decimal, or to two significant digits where that would print a
    share above 0 as ``0.0%`` (``0.036%``)."""
    return f"{100 * fraction:.2g}%" if 0 < fraction < 0.0005 else f"{fraction:.1%}"


def clipping_words(clip_fraction: float) -> str:
    """What a threshold did, in words: never engaged, clipped some steps, or normalised nearly every step."""
    if not math.isfinite(clip_fraction):
        return "clip share unknown"
    share = f"clipped {share_text(clip_fraction)} of steps"
    if clip_fraction == 0:
        return "never clipped a step"
    if clip_fraction > NORMALISES:
        return share + ": gradient normalisation, not occasional clipping"
    return share
