"""A profile's published results: a compact copy of every finished run, kept in the repository.

``results/<profile>/runs/<run_id>/`` holds ``summary.json``, ``epochs.parquet`` and a downsampled
``steps.parquet`` (every step for short runs; for long ones every k-th step, plus the first steps and
every step around injected spikes); ``results/<profile>/probes/`` the threshold probes. Executed
notebooks and COCO files stay out. A run in the bundle is a finished run: the sweep skips it and the
report reads it, so a fresh clone can rebuild the report, and resume the sweep, from the bundle alone.

Integrity that does not trust what it checks: each run's ``manifest.json`` holds the size and sha256 of its
files, and ``results/<profile>/index.json`` the sha256 of every run's manifest and of every probe file, so an
edited summary cannot be made to pass by editing (or emptying) its manifest too. ``index_problems`` names
every run and probe that does not match; a damaged run is moved to ``results/<profile>/.damaged/`` (never
deleted) and published again from an intact local copy, or trained again. Publishing holds the bundle's
lock, so sweeps writing to different report folders publish one at a time.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from clipstudy import paths
from clipstudy.fileio import atomic_target, sha256_file, write_json_atomic, write_parquet_atomic
from clipstudy.study import runfiles
from clipstudy.study.lock import SweepLock

INDEX = "index.json"
PUBLISH_LOCK = ".publish.lock"
DAMAGED = ".damaged"

#: Step tables longer than this are thinned to about this many rows.
MAX_STEP_ROWS = 600
KEEP_FIRST = 50  # the first steps (warm-up of the adaptive methods) are kept whole
SPIKE_MARGIN = 30  # steps kept whole before and after injected spikes


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
    """Copy the finished run ``run_dir`` into ``bundle_runs`` in compact form, under the bundle's lock: all or
    nothing, and an earlier copy is replaced only once the new one is whole (a damaged one is set aside)."""
    summary = runfiles.load_summary(run_dir)
    spikes = (summary.get("params", {}).get("spikes") or {}).get("steps", [])
    target = bundle_runs / run_dir.name
    bundle_runs.mkdir(parents=True, exist_ok=True)
    with SweepLock(bundle_runs.parent, wait=True, name=PUBLISH_LOCK, holder="publisher"):
        staging = bundle_runs / f".{run_dir.name}.publishing-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            steps = downsample_steps(pd.read_parquet(run_dir / runfiles.STEPS), spikes)
            write_parquet_atomic(steps, staging / runfiles.STEPS)
            shutil.copy2(run_dir / runfiles.EPOCHS, staging / runfiles.EPOCHS)
            shutil.copy2(run_dir / runfiles.SUMMARY, staging / runfiles.SUMMARY)
            runfiles.write_manifest(staging)  # last: it marks the run finished
            if target.exists():
                set_aside(target, "replaced")
            staging.rename(target)
            _index_entry(bundle_runs.parent, "runs", target.name, sha256_file(target / runfiles.MANIFEST))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def set_aside(path: Path, why: str) -> Path:
    """Move a bundle's run folder to ``<bundle>/.damaged/`` (never deleted: it may be all there is of it)."""
    bundle = path.parent.parent
    target = bundle / DAMAGED / f"{path.name}-{why}-{uuid.uuid4().hex[:8]}"
    target.parent.mkdir(parents=True, exist_ok=True)
    path.rename(target)
    return target


def publish_probe(probe_file: Path, bundle: Path) -> Path:
    target = bundle / "probes" / probe_file.name
    target.parent.mkdir(parents=True, exist_ok=True)
    with SweepLock(bundle, wait=True, name=PUBLISH_LOCK, holder="publisher"):
        with atomic_target(target) as tmp:
            shutil.copy2(probe_file, tmp)
        _index_entry(bundle, "probes", target.name, sha256_file(target))
    return target


def index_probe(bundle: Path, probe_file: Path) -> None:
    """Enter a probe the sweep wrote into the bundle in the bundle's index."""
    with SweepLock(bundle, wait=True, name=PUBLISH_LOCK, holder="publisher"):
        _index_entry(bundle, "probes", probe_file.name, sha256_file(probe_file))


class UnindexedBundle(ValueError):
    """A bundle holds runs but no index: nothing vouches for them, and nothing is set aside on its word."""


def read_index(bundle: Path, adding: str | None = None) -> dict:
    """The bundle's index: ``{"runs": {run_id: manifest sha256}, "probes": {file name: sha256}}``; empty for a
    new bundle, refused for one that holds runs (other than the run being ``adding``) but no index."""
    path = bundle / INDEX
    runs = bundle / "runs"
    held = (
        [p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != adding]
        if runs.is_dir()
        else []
    )
    if not path.exists() and held:
        raise UnindexedBundle(
            f"{bundle} holds runs but no {INDEX}, so nothing vouches for them; if you trust these files, index "
            f"them once with: python -m clipstudy.study.bundle --reindex {bundle.name}"
        )
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        return {"runs": {}, "probes": {}}
    except (OSError, ValueError) as exc:
        raise UnindexedBundle(f"{path} is unreadable ({type(exc).__name__}: {exc}); {_repair(bundle)}") from None
    if not isinstance(index, dict) or not all(isinstance(index.get(k, {}), dict) for k in ("runs", "probes")):
        raise UnindexedBundle(f"{path} is not an index of runs and probes; {_repair(bundle)}")
    return {"runs": dict(index.get("runs", {})), "probes": dict(index.get("probes", {}))}


def _repair(bundle: Path) -> str:
    return (
        f"restore the committed copy (git checkout -- {bundle / INDEX}) or, if you trust the files, index them "
        f"again with: python -m clipstudy.study.bundle --reindex {bundle.name}"
    )


def _index_entry(bundle: Path, kind: str, name: str, digest: str) -> None:
    index = read_index(bundle, adding=name)
    index[kind][name] = digest
    index[kind] = dict(sorted(index[kind].items()))
    write_json_atomic(index, bundle / INDEX)


def run_problems(bundle: Path, run_id: str, index: dict | None = None) -> list[str]:
    """Why the bundle's copy of ``run_id`` cannot be trusted: its files against its manifest, its manifest
    against the bundle's index (``[]``: whole; ``["no manifest"]``: not there)."""
    run_dir = bundle / "runs" / run_id
    problems = runfiles.manifest_problems(run_dir)
    if problems:
        return problems
    index = read_index(bundle) if index is None else index
    recorded = index["runs"].get(run_id)
    if recorded is None:
        return [f"{INDEX} does not list it"]
    if sha256_file(run_dir / runfiles.MANIFEST) != recorded:
        return [f"its {runfiles.MANIFEST} does not match the sha256 in {INDEX}"]
    return []


def probe_problems(bundle: Path, name: str, index: dict | None = None) -> list[str]:
    """Why the bundle's probe file ``name`` cannot be trusted (``[]``: it matches the index)."""
    path = bundle / "probes" / name
    index = read_index(bundle) if index is None else index
    if not path.is_file():
        return ["missing"]
    if name not in index["probes"]:
        return [f"{INDEX} does not list it"]
    if sha256_file(path) != index["probes"][name]:
        return [f"it does not match its sha256 in {INDEX}"]
    return []


def reindex(bundle: Path) -> dict:
    """Write the index of a bundle from its runs and probes, refusing any run whose files do not match its
    manifest (for a bundle made before the index existed; afterwards publishing keeps it)."""
    index = {"runs": {}, "probes": {}}
    for run_dir in sorted(p for p in (bundle / "runs").iterdir() if p.is_dir() and not p.name.startswith(".")):
        problems = runfiles.manifest_problems(run_dir)
        if problems:
            raise ValueError(f"run {run_dir.name} is damaged ({'; '.join(problems)}): not indexed")
        index["runs"][run_dir.name] = sha256_file(run_dir / runfiles.MANIFEST)
    probes_dir = bundle / "probes"
    for probe in sorted(probes_dir.glob("*.json")) if probes_dir.is_dir() else []:
        json.loads(probe.read_text())  # a probe that does not parse is not indexed
        index["probes"][probe.name] = sha256_file(probe)
    write_json_atomic(index, bundle / INDEX)
    return index


def size_bytes(bundle: Path) -> int:
    return sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())


def step_rows_kept(n: int) -> int:
    """How many rows ``downsample_steps`` keeps of an unspiked ``n``-step table (for the README)."""
    return len(downsample_steps(pd.DataFrame({"step": np.arange(1, n + 1)})))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipstudy.study.bundle", description="A results bundle's index.")
    parser.add_argument(
        "--reindex",
        metavar="PROFILE",
        required=True,
        help="write results/PROFILE/index.json from its runs and probes (refuses damaged runs)",
    )
    args = parser.parse_args(argv)
    try:
        index = reindex(bundle_dir(args.reindex))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{bundle_dir(args.reindex) / INDEX}: {len(index['runs'])} runs, {len(index['probes'])} probes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
