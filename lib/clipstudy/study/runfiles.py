"""A run's identity and files: ``params.json``, the tables, task artifacts, ``summary.json``, and
``manifest.json`` last.

A run directory holds a finished run exactly when its ``manifest.json`` (each result file's size
and sha256, written after everything else) is there and every file still matches it: a run killed
half-way has no manifest, and a damaged one (a truncated or altered file) no longer matches. A failed
run holds ``error.json`` instead.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from clipstudy.fileio import jsonable, sha256_file, write_json_atomic, write_parquet_atomic

SUMMARY = "summary.json"
ERROR = "error.json"
PARAMS_FILE = "params.json"
MANIFEST = "manifest.json"
STEPS = "steps.parquet"
EPOCHS = "epochs.parquet"
#: Files of a run folder the manifest leaves out: written by papermill and the sweep after the run.
UNLISTED = {MANIFEST, "notebook.ipynb", "kernel.log", ERROR}
#: Files every finished run has, so its manifest must list them (a manifest cannot vouch for a run by omission).
REQUIRED = (SUMMARY, STEPS, EPOCHS)
#: Shown for every run by ``format_summary``, before and after the task's own ``summary_keys``.
COMMON_KEYS = ("task", "method", "optimizer", "learning_rate", "seed", "train_images", "steps_run", "diverged")
TELEMETRY_KEYS = ("clip_fraction", "steps_clipped", "median_norm_before", "max_norm_before", "parameters")


def params_hash(params: dict[str, Any], length: int = 8) -> str:
    """Short digest of a run's parameters: the same parameters, the same hash, on any machine."""
    canonical = json.dumps(jsonable(params), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def run_id(config) -> str:
    """Readable, unique name of a run, e.g. ``classifier-global_norm-adam-lr0.001-s0-1a2b3c4d``."""
    params = config.to_params()
    parts = [config.task, config.method, config.optimizer, f"lr{config.learning_rate:g}", f"s{config.seed}"]
    return "-".join(str(p) for p in parts) + "-" + params_hash(params)


def save_run(result, output_dir: str | Path, config=None, task=None) -> Path:
    """Write a ``training.RunResult`` (and ``task``'s artifacts) into ``output_dir``; the summary goes last."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(result.steps, out / STEPS)
    write_parquet_atomic(result.epochs, out / EPOCHS)
    if task is not None:
        task.write_artifacts(out)
    summary = dict(result.summary)
    if config is not None:
        params = config.to_params()
        write_json_atomic(params, out / PARAMS_FILE)
        summary["params"] = params
        summary["params_hash"] = params_hash(params)
    write_json_atomic(summary, out / SUMMARY)
    write_manifest(out)
    return out


def write_manifest(run_dir: str | Path) -> Path:
    """Record the size and sha256 of every result file of ``run_dir`` (not the executed notebook or
    its log, which papermill writes after the run); written last, it marks the run finished."""
    run_dir = Path(run_dir)
    entries = {
        p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(run_dir.iterdir())
        if p.is_file() and p.name not in UNLISTED and not p.name.startswith(".")
    }
    write_json_atomic(entries, run_dir / MANIFEST)
    return run_dir / MANIFEST


def manifest_problems(run_dir: str | Path) -> list[str]:
    """How ``run_dir`` differs from its manifest (``["no manifest"]`` for an unfinished run)."""
    run_dir = Path(run_dir)
    try:
        entries = json.loads((run_dir / MANIFEST).read_text())
    except FileNotFoundError:
        return ["no manifest"]
    except (OSError, ValueError) as exc:
        return [f"{MANIFEST} unreadable ({exc})"]
    if not isinstance(entries, dict):
        return [f"{MANIFEST} is not a mapping of file names"]
    outside = sorted(n for n in entries if not _plain_name(n))
    if outside:  # never read or hash what a manifest names outside the run folder
        return [f"{MANIFEST} names {', '.join(map(repr, outside))}, outside the run folder"]
    problems = [f"{MANIFEST} does not list {name}" for name in REQUIRED if name not in entries]
    for name, expected in entries.items():
        path = run_dir / name
        if not isinstance(expected, dict) or not {"size", "sha256"} <= set(expected):
            problems.append(f"{MANIFEST} entry {name!r} has no size and sha256")
        elif not path.is_file():
            problems.append(f"{name} missing")
        elif path.stat().st_size != expected["size"]:
            problems.append(f"{name} has {path.stat().st_size} bytes, the manifest says {expected['size']}")
        elif sha256_file(path) != expected["sha256"]:
            problems.append(f"{name} does not match its sha256 in the manifest")
    return problems


def _plain_name(name) -> bool:
    """A file name in the run folder itself: no folder part, not ``.`` or ``..``, not absolute."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def is_finished(run_dir: str | Path) -> bool:
    return not manifest_problems(run_dir)


def is_damaged(run_dir: str | Path) -> bool:
    """A run that was finished (it has a manifest) but whose files no longer match it."""
    return (Path(run_dir) / MANIFEST).exists() and not is_finished(run_dir)


def load_summary(run_dir: str | Path) -> dict[str, Any]:
    with open(Path(run_dir) / SUMMARY) as f:
        return json.load(f)


def format_params(params: dict[str, Any]) -> str:
    """``threshold=1`` style, sorted; ``-`` for none."""
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items())) or "-"


def format_summary(summary: dict[str, Any], task_keys=(), digits: int = 4) -> str:
    """The deterministic part of a run summary, rounded, one field a line (no timings)."""

    def fmt(v):
        if isinstance(v, float):
            return "nan" if not math.isfinite(v) else f"{v:.{digits}f}"
        return str(v)

    keys = [*COMMON_KEYS, *task_keys, *TELEMETRY_KEYS]
    lines = [f"{'clip_params':20s} {format_params(summary.get('clip_params', {}))}"]
    lines += [f"{k:20s} {fmt(summary[k])}" for k in keys if k in summary]
    return "\n".join(lines)
