"""A run's identity and files: ``summary.json``, ``steps.parquet``, ``epochs.parquet``.

A run directory holds a finished run exactly when it holds ``summary.json``: the tables are
written first and the summary last, each to a temporary name and then renamed, so a run killed
half-way never looks finished. A failed run holds ``error.json`` instead.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clipstudy._atomic import atomic_target

SUMMARY = "summary.json"
ERROR = "error.json"
PARAMS = "params.json"
STEPS = "steps.parquet"
EPOCHS = "epochs.parquet"


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None  # JSON has no NaN; None reads back as missing
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def params_hash(params: dict[str, Any], length: int = 8) -> str:
    """Short digest of a run's parameters: the same parameters, the same hash, on any machine."""
    canonical = json.dumps(_jsonable(params), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def run_id(params: dict[str, Any]) -> str:
    """Readable, unique name of a run, e.g. ``classifier-global_norm-adam-lr0.001-s0-1a2b3c4d``."""
    parts = [params.get("task", "run"), params.get("method", "none"), params.get("optimizer", "opt"),
             f"lr{float(params.get('learning_rate', 0)):g}", f"s{params.get('seed', 0)}"]
    return "-".join(str(p) for p in parts) + "-" + params_hash(params)


def write_json_atomic(obj, path: Path) -> None:
    with atomic_target(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=True))


def write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    with atomic_target(path) as tmp:
        df.to_parquet(tmp, index=False)


def save_run(result, output_dir: str | Path, params: dict[str, Any] | None = None) -> Path:
    """Write a ``training.RunResult`` into ``output_dir``; the summary goes last."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(result.steps, out / STEPS)
    write_parquet_atomic(result.epochs, out / EPOCHS)
    summary = dict(result.summary)
    if params is not None:
        write_json_atomic(params, out / PARAMS)
        summary["params"] = params
        summary["params_hash"] = params_hash(params)
    write_json_atomic(summary, out / SUMMARY)
    return out


def is_finished(run_dir: str | Path) -> bool:
    return (Path(run_dir) / SUMMARY).is_file()


def load_summary(run_dir: str | Path) -> dict[str, Any]:
    with open(Path(run_dir) / SUMMARY) as f:
        return json.load(f)


def format_params(params: dict[str, Any]) -> str:
    """``threshold=1`` style, sorted; ``-`` for none."""
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items())) or "-"


def format_summary(summary: dict[str, Any], digits: int = 4) -> str:
    """The deterministic part of a run summary, rounded, one field a line (no timings)."""
    def fmt(v):
        if isinstance(v, float):
            return "nan" if not math.isfinite(v) else f"{v:.{digits}f}"
        return str(v)

    keys = ["task", "method", "optimizer", "learning_rate", "seed", "train_images", "steps_run", "diverged",
            "final_train_loss", "final_test_loss", "final_test_accuracy", "best_test_accuracy",
            "final_AP", "final_AP50", "final_AP75", "final_AR100", "best_AP50",
            "steps_to_98", "steps_to_99", "steps_to_ap50_80", "steps_to_ap50_90",
            "clip_fraction", "steps_clipped", "median_norm_before", "max_norm_before", "parameters"]
    lines = [f"{'clip_params':20s} {format_params(summary.get('clip_params', {}))}"]
    lines += [f"{k:20s} {fmt(summary[k])}" for k in keys if k in summary]
    return "\n".join(lines)
