"""A profile's published results: a compact copy of every finished run, kept in the repository.

``results/<profile>/runs/<run_id>/`` holds ``summary.json``, ``epochs.parquet`` and a downsampled
``steps.parquet`` (every step for short runs; for long ones every k-th step, plus the first steps and
every step around injected spikes); ``results/<profile>/probes/`` the threshold probes. Executed
notebooks and COCO files stay out. A run in the bundle is a finished run: the sweep skips it and the
report reads it, so a fresh clone can rebuild the report, and resume the sweep, from the bundle alone.
"""
from __future__ import annotations

import math
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from clipstudy import paths
from clipstudy.fileio import write_parquet_atomic
from clipstudy.study import runfiles

#: Step tables longer than this are thinned to about this many rows.
MAX_STEP_ROWS = 600
KEEP_FIRST = 50      # the first steps (warm-up of the adaptive methods) are kept whole
SPIKE_MARGIN = 30    # steps kept whole before and after injected spikes


def bundle_dir(name: str) -> Path:
    return paths.results_dir() / name


def downsample_steps(steps: pd.DataFrame, spike_steps=()) -> pd.DataFrame:
    """``steps`` thinned to about ``MAX_STEP_ROWS`` rows, keeping the first steps, the last one and the
    steps around ``spike_steps`` whole (the ``step`` column keeps each row's true step number)."""
    n = len(steps)
    if n <= MAX_STEP_ROWS:
        return steps.reset_index(drop=True)
    every = math.ceil(n / MAX_STEP_ROWS)
    step = steps["step"].to_numpy()
    keep = (step % every == 0) | (step <= KEEP_FIRST) | (step == step.max())
    for s in spike_steps:
        keep |= (step >= s - SPIKE_MARGIN) & (step <= s + SPIKE_MARGIN)
    return steps[keep].reset_index(drop=True)


def publish(run_dir: Path, bundle_runs: Path) -> Path:
    """Copy the finished run ``run_dir`` into ``bundle_runs`` in compact form (all or nothing)."""
    summary = runfiles.load_summary(run_dir)
    spikes = (summary.get("params", {}).get("spikes") or {}).get("steps", [])
    target = bundle_runs / run_dir.name
    staging = bundle_runs / f".{run_dir.name}.publishing-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        write_parquet_atomic(downsample_steps(pd.read_parquet(run_dir / runfiles.STEPS), spikes), staging / runfiles.STEPS)
        shutil.copy2(run_dir / runfiles.EPOCHS, staging / runfiles.EPOCHS)
        shutil.copy2(run_dir / runfiles.SUMMARY, staging / runfiles.SUMMARY)
        runfiles.write_manifest(staging)  # last: it marks the run finished
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def publish_probe(probe_file: Path, bundle: Path) -> Path:
    target = bundle / "probes" / probe_file.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(probe_file, target)
    return target


def size_bytes(bundle: Path) -> int:
    return sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())


def step_rows_kept(n: int) -> int:
    """How many rows ``downsample_steps`` keeps of an unspiked ``n``-step table (for the README)."""
    return len(downsample_steps(pd.DataFrame({"step": np.arange(1, n + 1)})))
