"""Every cache this process keeps, in one place: each named, bounded, listed and clearable.

A study run reads its data and compiles its training step; a warm kernel (``study.kernels``) runs many runs one
after another, so what can be read or compiled once per process is kept here, and nowhere else:

* ``mnist``: the arrays of the MNIST file last read (``data.mnist.load_mnist``), by the file's identity;
* ``canvases``: the detection splits read from their decoded copies (``data.tfds_builder.load_split``);
* ``adding``: the adding problem's generated splits (``tasks.adding.generated``);
* ``detector targets``: the detector's encoded targets of those canvases (``tasks.detection.task``);
* ``compiled steps``: the last runs' compiled training steps (``training.step``), which a run of the same shape
  loads its own start into.

Data values are read-only NumPy arrays (or hold only such), so a later run cannot see an earlier one's changes; a
compiled step holds variables that each run overwrites with its own start. ``listing()`` says what is kept,
``clear_all()`` forgets it (the next run reads and compiles again, with the same numbers).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


class ProcessCache:
    """A named cache of at most ``max_entries`` values, the oldest dropped first; safe to share between threads."""

    def __init__(self, name: str, max_entries: int, holds: str):
        # a module imported again (importlib.reload) registers its cache anew, in place of the old one
        self.name, self.max_entries, self.holds = name, max_entries, holds
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        _REGISTRY[name] = self

    def get(self, key: Hashable, default=None):
        with self._lock:
            return self._entries.get(key, default)

    def put(self, key: Hashable, value) -> None:
        """Keep ``value`` under ``key`` (it becomes the newest), dropping the oldest beyond ``max_entries``."""
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = value
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def pop(self, key: Hashable, default=None):
        with self._lock:
            return self._entries.pop(key, default)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def keys(self) -> list:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_REGISTRY: dict[str, ProcessCache] = {}


def cache(name: str) -> ProcessCache:
    """The process cache called ``name`` (its module must have been imported)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no process cache {name!r}; there are: {', '.join(_REGISTRY) or 'none yet'}") from None


def listing() -> list[dict[str, Any]]:
    """Every process cache: its name, what it holds, its entries now and at most."""
    return [
        {"name": c.name, "holds": c.holds, "entries": len(c), "max_entries": c.max_entries} for c in _REGISTRY.values()
    ]


def clear_all() -> None:
    """Forget every cached value of this process."""
    for c in _REGISTRY.values():
        c.clear()
