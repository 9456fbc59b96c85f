"""One split of a data set, the same type for every task: examples and one target per example."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    """``x``: the examples, an array with one row each (images ``(n, H, W)``, sequences ``(n, T, 2)``); ``y``: one
    target per example, in a NumPy array (a class, a sum) or a list (a detector's ``Annotations``)."""

    x: np.ndarray
    y: Sequence

    def __post_init__(self):
        if len(self.x) != len(self.y):
            raise ValueError(f"Split: {len(self.x)} images but {len(self.y)} targets")

    def __len__(self):
        return len(self.x)

    def take(self, indices) -> Split:
        """The images at ``indices``, in that order, with their targets."""
        indices = np.asarray(indices)
        y = self.y[indices] if isinstance(self.y, np.ndarray) else [self.y[int(i)] for i in indices]
        return Split(np.asarray(self.x)[indices], y)


def subset_indices(n: int, subset: int | None, seed: int, name: str) -> np.ndarray:
    """``subset`` sorted indices of ``range(n)`` drawn by ``seed`` alone (all of them for ``None``),
    so every method of a seed sees the same images."""
    if subset is None:
        return np.arange(n)
    if not isinstance(subset, int) or isinstance(subset, bool) or not 0 < subset <= n:
        raise ValueError(f"{name}={subset!r} is invalid; it must be an integer in [1, {n}] or None")
    return np.sort(np.random.default_rng([seed, 1]).choice(n, size=subset, replace=False))
