"""How many runs an hour each worker and thread setting gives on this machine (docs/running.md, "Choosing workers").

    python -m clipstudy.orchestration.bench_workers [--runs 8] [--settings 2x1 1x2 2x2 3x1] [--json FILE]

Each setting sweeps the same ``--runs`` quick-sized classifier runs (``breakdown.RUNS``, seeds 0, 1, ...)
into a scratch folder of its own, as ``make sweep`` does (a local Dask cluster of that many workers, each
run with that many TensorFlow threads, warm kernels), and the wall time of the whole sweep, its cluster's
start included, gives runs per hour.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

from clipstudy import platforms
from clipstudy.fileio import write_json_atomic
from clipstudy.orchestration import breakdown
from clipstudy.study import sweep
from clipstudy.training.config import AXES


def parse_setting(text: str) -> tuple[int, int]:
    """``"2x1"`` -> (2 workers, 1 thread each)."""
    try:
        workers, threads = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WORKERSxTHREADS, e.g. 2x1") from None
    if workers < 1 or threads < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: workers and threads must be at least 1")
    return workers, threads


def profile_doc(runs: int, threads: int) -> dict:
    """A profile of ``runs`` quick-sized classifier runs (seeds 0, 1, ...) with ``threads`` TensorFlow threads."""
    run = breakdown.RUNS["classifier"]
    settings = {k: v for k, v in run.items() if k not in AXES}
    return {
        "experiments": [
            {
                "name": "workers",
                "task": run["task"],
                "settings": {**settings, "threads": threads},
                "methods": [{"method": run["method"], **run["clip_params"]}],
                "optimizers": {run["optimizer"]: [run["learning_rate"]]},
                "seeds": list(range(runs)),
            }
        ]
    }


def measure(workers: int, threads: int, runs: int, scratch: Path) -> dict:
    """Sweep ``runs`` runs with ``workers`` workers of ``threads`` threads; their wall time, cluster included."""
    profile = scratch / f"workers-{workers}x{threads}.yaml"
    profile.write_text(yaml.safe_dump(profile_doc(runs, threads)))
    t0 = time.perf_counter()
    result = sweep.run_sweep(profile, scratch / "reports", workers=workers, progress=False)
    seconds = time.perf_counter() - t0
    if not result.ok or len(result.done) != runs:
        raise RuntimeError(f"{workers}x{threads}: {len(result.done)} of {runs} runs done; failed: {result.failed}")
    return {
        "workers": workers,
        "threads": threads,
        "runs": runs,
        "seconds": seconds,
        "runs_per_hour": runs * 3600 / seconds,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clipstudy.orchestration.bench_workers", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--settings", nargs="+", type=parse_setting, default=[(2, 1), (1, 2), (2, 2), (3, 1)])
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for workers, threads in args.settings:
            print(f"workers: {args.runs} runs, {workers} workers x {threads} threads ...", flush=True)
            rows.append(measure(workers, threads, args.runs, Path(scratch)))
    print(f"\nruns per hour ({platforms.describe(platforms.current())}), higher is better")
    for r in rows:
        print(f"{r['workers']} workers x {r['threads']} threads: {r['runs_per_hour']:6.0f}  ({r['seconds']:.0f} s)")
    if args.json:
        write_json_atomic({"settings": rows, "cpu": platforms.cpu()["cpu_model_name"]}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
