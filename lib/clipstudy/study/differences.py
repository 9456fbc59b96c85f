"""Whether two runs gave the same numbers: every metric of the summary, every step and evaluation,
the COCO files; timings, versions and file paths aside.

    python -m clipstudy.study.differences RUNS_A RUNS_B

compares each run folder present in both ``RUNS_A`` and ``RUNS_B`` and exits non-zero on any difference.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from clipstudy.study import runfiles

#: Fields that measure or name the machine, not the run.
TIMING_FIELDS = {
    "wall_time_s",
    "median_step_time_s",
    "images_per_second",
    "step_time_s",
    "eval_time_s",
    "versions",
    "platform",
    "timings",
}


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def summary_differences(a: dict, b: dict, ignore=()) -> list[str]:
    """Fields of two summaries that differ (timings and ``ignore`` left out)."""
    skip = TIMING_FIELDS | set(ignore)
    keys = sorted((set(a) | set(b)) - skip)
    return [f"{k}: {a.get(k, '<absent>')!r} != {b.get(k, '<absent>')!r}" for k in keys if not _same(a.get(k), b.get(k))]


def table_differences(a: pd.DataFrame, b: pd.DataFrame, name: str) -> list[str]:
    """Columns of two step or epoch tables that differ anywhere (timings left out)."""
    a = a.drop(columns=[c for c in a.columns if c in TIMING_FIELDS])
    b = b.drop(columns=[c for c in b.columns if c in TIMING_FIELDS])
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return [f"{name}: shape or columns differ ({a.shape} {list(a.columns)} vs {b.shape} {list(b.columns)})"]
    return [f"{name}: column {c} differs" for c in a.columns if not a[c].equals(b[c])]


def run_differences(dir_a: Path, dir_b: Path, ignore=()) -> list[str]:
    """Every difference between two finished run folders."""
    problems = summary_differences(runfiles.load_summary(dir_a), runfiles.load_summary(dir_b), ignore)
    for table in (runfiles.STEPS, runfiles.EPOCHS):
        problems += table_differences(pd.read_parquet(dir_a / table), pd.read_parquet(dir_b / table), table)
    for extra in ("ground_truth.json", "detections.json"):
        if (dir_a / extra).exists() or (dir_b / extra).exists():
            if (
                not (dir_a / extra).exists()
                or not (dir_b / extra).exists()
                or json.loads((dir_a / extra).read_text()) != json.loads((dir_b / extra).read_text())
            ):
                problems.append(f"{extra} differs")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipstudy.study.differences", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_a")
    parser.add_argument("runs_b")
    parser.add_argument("--ignore", nargs="*", default=[], help="summary fields to leave out")
    args = parser.parse_args(argv)
    a, b = Path(args.runs_a), Path(args.runs_b)
    shared = sorted(p.name for p in a.iterdir() if runfiles.is_finished(p) and runfiles.is_finished(b / p.name))
    different = 0
    for run in shared:
        problems = run_differences(a / run, b / run, args.ignore)
        different += bool(problems)
        for p in problems:
            print(f"{run}: {p}")
    print(f"{len(shared)} runs compared, {different} differ")
    return 1 if different or not shared else 0


if __name__ == "__main__":
    sys.exit(main())
