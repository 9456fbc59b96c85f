"""Injected bad batches: which steps, and what is done to them."""

from __future__ import annotations

import math
from dataclasses import dataclass

KINDS = ("scale_loss", "shuffle_labels")


@dataclass(frozen=True)
class SpikePlan:
    """``steps`` (1-based optimizer steps), the loss ``scale`` there, and whether labels are shuffled."""

    steps: frozenset = frozenset()
    scale: float = 1.0
    shuffle: bool = False

    def at(self, step: int) -> tuple[float, bool]:
        """Loss scale and label shuffling for 1-based ``step``."""
        if step in self.steps:
            return self.scale, self.shuffle
        return 1.0, False


def spike_plan(spikes: dict | None) -> SpikePlan:
    """The checked plan of a ``spikes`` request, e.g. ``{"steps": [150, 151], "kind": "scale_loss",
    "factor": 100}`` (the loss, hence the gradient, of those steps × ``factor``) or
    ``{"steps": [...], "kind": "shuffle_labels"}`` (each example gets its neighbour's label)."""
    if not spikes:
        return SpikePlan()
    if not isinstance(spikes, dict):
        raise ValueError(f"spikes={spikes!r} is invalid; it must be a mapping with kind and steps, or None")
    kind = spikes.get("kind")
    if kind not in KINDS:
        raise ValueError(f"spikes kind={kind!r} is invalid; valid choices: {', '.join(KINDS)}")
    steps = spikes.get("steps")
    if (
        not isinstance(steps, (list, tuple))
        or not steps
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in steps)
    ):
        shown = list(steps) if isinstance(steps, tuple) else steps  # a RunConfig keeps a frozen copy of the list
        raise ValueError(f"spikes steps={shown!r} is invalid; it must be a non-empty list of step numbers ≥ 1")
    unknown = sorted(set(spikes) - {"kind", "steps", "factor"})
    if unknown:
        raise ValueError(f"spikes: unknown field(s) {', '.join(unknown)}; valid: kind, steps, factor")
    factor = spikes.get("factor", 100.0) if kind == "scale_loss" else 1.0
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not math.isfinite(factor) or factor <= 0:
        raise ValueError(f"spikes factor={factor!r} is invalid; it must be a finite number > 0")
    return SpikePlan(frozenset(steps), float(factor), kind == "shuffle_labels")
