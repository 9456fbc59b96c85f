"""Where things are: the one module that knows the repository's layout.

Every default path of the package comes from here. ``CLIPSTUDY_DATA_DIR`` moves the data
folder (``mnist.npz`` and ``tfds/``), ``CLIPSTUDY_REPORTS_DIR`` the reports folder,
``CLIPSTUDY_RESULTS_DIR`` the published results bundles.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parents[1]
NOTEBOOKS = REPO / "notebooks"
PROFILES = PACKAGE / "profiles"


def data_dir() -> Path:
    """``$CLIPSTUDY_DATA_DIR``, else ``data/`` in the repository."""
    return Path(os.environ.get("CLIPSTUDY_DATA_DIR") or REPO / "data")


def mnist_file() -> Path:
    return data_dir() / "mnist.npz"


def tfds_dir() -> Path:
    return data_dir() / "tfds"


def reports_dir() -> Path:
    """``$CLIPSTUDY_REPORTS_DIR``, else ``reports/`` in the repository."""
    return Path(os.environ.get("CLIPSTUDY_REPORTS_DIR") or REPO / "reports")


def results_dir() -> Path:
    """``$CLIPSTUDY_RESULTS_DIR``, else ``results/`` in the repository: the published bundles."""
    return Path(os.environ.get("CLIPSTUDY_RESULTS_DIR") or REPO / "results")


def notebook(name: str) -> Path:
    return NOTEBOOKS / name
