"""Where a run's time goes, outside and inside its notebook (``make bench`` reports it for one run of each task).

    python -m clipstudy.orchestration.breakdown [--tasks classifier adding detector] [--json FILE]

Each run executes the run notebook through ``notebooks.execute``, as the sweep does: in a warm kernel
after two other runs of the same task (other seeds), the sweep's default, and in a kernel of its own
(``--fresh-kernels``). The phases come from three independent clocks: the wall time around the execution,
papermill's duration of each cell, and the run's own ``timings`` (``training.loop.phase_timings`` and
``study.run.run_one``):

* ``kernel``: the execution's wall time less the time of its cells: starting the kernel (fresh) or
  resetting it (warm), and papermill's own work;
* ``imports``: the cell that imports the package, and TensorFlow (imported on first use, in the run cell);
* ``load_data``, ``setup`` (model, data arrays, step function), ``trace`` (the first step less a median one:
  tracing the compiled step), ``steps`` (every optimizer step, the first at median cost), ``evaluations``
  (test and validation scoring, the first also traces the prediction function), ``write`` (the summary, the
  run's files and the rest of the run cell);
* ``notebook_rest``: every other cell (the printed numbers and the figures).

``overhead_ratio`` is the whole notebook, kernel included, over its training steps.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from clipstudy import paths, platforms
from clipstudy.fileio import write_json_atomic
from clipstudy.study import kernels, notebooks, runfiles
from clipstudy.study.profiles import RUN_NOTEBOOK

#: One run of each task, sized as the ``quick`` profile sizes them (the detector at one epoch of its four).
RUNS = {
    "classifier": dict(task="classifier", method="global_norm", clip_params={"threshold": 1.0}, optimizer="sgd",
                       learning_rate=0.1, epochs=1, batch_size=128, train_subset=8192, test_subset=2000,
                       eval_every=16, validation=2000, seed=0),
    "adding": dict(task="adding", method="global_norm", clip_params={"threshold": 1.0}, optimizer="sgd",
                   learning_rate=0.1, epochs=1, train_subset=64 * 500, test_subset=1000, validation=500,
                   eval_every=125, seed=0),
    "detector": dict(task="detector", method="global_norm", clip_params={"threshold": 10.0}, optimizer="adam",
                     learning_rate=0.003, dataset="quick", epochs=1, batch_size=32, eval_every=64, validation=256,
                     seed=0),
}  # fmt: skip


def _cell_durations(executed: Path) -> tuple[float, float, float]:
    """Seconds of the imports cell, the run cell and every other cell, from papermill's cell metadata."""
    nb = nbformat.read(executed, as_version=4)
    imports = run = rest = 0.0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        seconds = float(cell.metadata.get("papermill", {}).get("duration") or 0.0)
        if "run_one(" in cell.source:
            run += seconds
        elif "import " in cell.source and "parameters" not in cell.metadata.get("tags", []):
            imports += seconds
        else:
            rest += seconds
    return imports, run, rest


def measure(task: str, out: Path, kernel=None, config: dict | None = None) -> dict:
    """Execute one run of ``task`` (``RUNS``, or ``config``), in ``kernel`` if given, and split its wall time
    into phases (see the module's text)."""
    config = config or RUNS[task]
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    executed = notebooks.execute(
        paths.notebook(RUN_NOTEBOOK),
        out / "notebook.ipynb",
        {"config": config, "output_dir": str(out)},
        keep_papermill=True,
        kernel=kernel,
    )
    total = time.perf_counter() - t0
    imports, run_cell, rest = _cell_durations(executed)
    summary = runfiles.load_summary(out)
    t = summary["timings"]
    median = summary["median_step_time_s"]
    loop = t["setup_s"] + t["first_step_s"] + t["steps_s"] + t["evaluations_s"] + t["other_s"]
    steps = t["steps_s"] + median
    phases = {
        "kernel": max(0.0, total - imports - run_cell - rest),
        "imports": imports + t.get("import_tensorflow_s", 0.0),
        "load_data": t["load_data_s"],
        "setup": t["setup_s"],
        "trace": max(0.0, t["first_step_s"] - median),
        "steps": steps,
        "evaluations": t["evaluations_s"],
        "write": max(0.0, run_cell - t.get("import_tensorflow_s", 0.0) - t["load_data_s"] - loop) + t["other_s"],
        "notebook_rest": rest,
    }
    return {
        "config": config,
        "steps_run": summary["steps_run"],
        "evaluations": t["evaluations"],
        "median_step_s": median,
        "phases_s": phases,
        "total_s": total,
        "overhead_ratio": total / steps if steps > 0 else float("nan"),
    }


def breakdown(task_names=tuple(RUNS)) -> dict:
    """Per task: the run in a warm kernel after two other runs (``warm``, the sweep's way once a worker's
    kernel has run a few runs) and in a kernel of its own (``fresh``)."""
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for task in task_names:
            print(f"breakdown: a {task} run in a warm kernel after two others, then in a fresh one ...", flush=True)
            key = kernels.KernelKey.for_notebook(paths.notebook(RUN_NOTEBOOK), 1)
            try:
                kernel = kernels.kernel_for(key)
                for i in (1, 2):  # the first run imports, the second's reset freezes what they left
                    before = dict(RUNS[task], seed=RUNS[task]["seed"] + i)
                    measure(task, Path(scratch) / task / f"before{i}", kernel, before)
                warm = measure(task, Path(scratch) / task / "warm", kernel)
            finally:
                kernels.close_all()
            results[task] = {"warm": warm, "fresh": measure(task, Path(scratch) / task / "fresh")}
    return results


def print_breakdown(results: dict) -> None:
    columns = {f"{task} {way}": r[way] for task, r in results.items() for way in ("warm", "fresh")}
    names = list(next(iter(columns.values()))["phases_s"])
    width = max(len(c) for c in columns) + 2
    print(f"\nwhere a run's time goes (seconds; {platforms.describe(platforms.current())})")
    print("warm: in the sweep's warm kernel, after two other runs; fresh: in a kernel of its own")
    print(f"{'phase':14s}" + "".join(f"{c:>{width}s}" for c in columns))
    for name in names:
        print(f"{name:14s}" + "".join(f"{r['phases_s'][name]:{width}.2f}" for r in columns.values()))
    print(f"{'total':14s}" + "".join(f"{r['total_s']:{width}.2f}" for r in columns.values()))
    print(f"{'total / steps':14s}" + "".join(f"{r['overhead_ratio']:{width}.2f}" for r in columns.values()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clipstudy.orchestration.breakdown", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--tasks", nargs="*", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    results = breakdown(args.tasks)
    print_breakdown(results)
    if args.json:
        write_json_atomic(
            {"breakdown": results, "cpu": platforms.cpu()["cpu_model_name"], "machine": platform.machine()}, args.json
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
