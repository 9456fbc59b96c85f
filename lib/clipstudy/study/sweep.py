"""The sweep runner: a profile's runs, each one papermill execution of its task notebook, on Dask.

    python -m clipstudy.study.sweep --profile quick [--scheduler tcp://host:8786] [--workers 2]

Every run lands in ``reports/<profile>/runs/<run_id>/``: the executed notebook, ``params.json``,
``summary.json`` and the step and epoch tables. A run whose ``summary.json`` exists is skipped, so
an interrupted sweep resumes and a repeated one does nothing. A run that raises keeps its executed
notebook and an ``error.json``; the sweep goes on and exits non-zero, naming the failed runs.

Runs go to a Dask ``LocalCluster`` by default, or to an existing cluster given by ``--scheduler``
or ``$CLIPSTUDY_SCHEDULER`` (its workers must see this repository and the output folder at the
same paths, e.g. on a shared file system). No TensorFlow is imported in this process.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from clipstudy import paths
from clipstudy.fileio import write_json_atomic
from clipstudy.study import notebooks, runfiles
from clipstudy.study.profiles import ProfileError, RunSpec, load_profile
from clipstudy.training.config import FROM_DATA

#: Measured on the 2-core machine (README, "Choosing workers"): two single-threaded workers.
DEFAULT_WORKERS = 2
DEFAULT_TF_THREADS = 1


def execute_run(spec: RunSpec, root: str, tf_threads: int | None = None) -> dict[str, Any]:
    """Run one notebook into ``root/<run_id>``; a Dask task. Returns a status record, never raises."""
    root_path = Path(root)
    final = root_path / spec.run_id
    if runfiles.is_finished(final):
        return {"run_id": spec.run_id, "status": "skipped"}
    partial = root_path / f".{spec.run_id}.partial-{uuid.uuid4().hex[:8]}"
    partial.mkdir(parents=True)
    if tf_threads:
        # Read by TensorFlow when the kernel (a child of this process) starts.
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(tf_threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = str(tf_threads)
    status = {"run_id": spec.run_id, "status": "done"}
    with _stderr_to(partial / "kernel.log"):  # the kernel's chatter goes to the run's log, not the terminal
        try:
            notebooks.execute(paths.notebook(spec.notebook), partial / "notebook.ipynb",
                              {"config": spec.params, "output_dir": str(partial)}, keep_papermill=True)
            if not runfiles.is_finished(partial):
                raise RuntimeError(f"{spec.notebook} finished without writing {runfiles.SUMMARY}")
        except Exception as exc:  # a failed run is a record, not the end of the sweep
            status = _record_failure(spec, partial, exc)
    if final.exists():
        shutil.rmtree(final)  # an earlier failed or killed attempt
    os.rename(partial, final)
    return status


def _record_failure(spec: RunSpec, partial: Path, exc: Exception) -> dict[str, Any]:
    lines = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
    write_json_atomic({"run_id": spec.run_id, "error": message, "params": spec.params,
                                "traceback": traceback.format_exc()}, partial / runfiles.ERROR)
    (partial / runfiles.SUMMARY).unlink(missing_ok=True)
    return {"run_id": spec.run_id, "status": "failed", "error": message}


class _stderr_to:
    """Send this process's standard error (inherited by child kernels) to a file for a while."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        self.log = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(self.log, 2)

    def __exit__(self, *exc):
        os.dup2(self.saved, 2)
        os.close(self.saved)
        os.close(self.log)
        return False


def prepare_datasets(specs) -> None:
    """Build the TFDS detection datasets the runs need, once, before the runs race to build them."""
    configs = sorted({s.config.dataset for s in specs if s.config.task == "detector"})
    if configs:
        from clipstudy.data import tfds_builder  # deferred: imports TensorFlow Datasets

        for config in configs:
            tfds_builder.prepare(config)


def remove_stale_partials(root: Path) -> int:
    """Delete what killed runs left behind (they are redone)."""
    stale = list(root.glob(".*.partial-*")) if root.exists() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return len(stale)


@dataclass
class SweepResult:
    profile: str
    root: Path
    done: list[str]
    skipped: list[str]
    failed: dict[str, str]

    @property
    def ok(self) -> bool:
        return not self.failed


def baseline_of(spec: RunSpec) -> str:
    """The id of the unclipped run whose norms a threshold from data is read from."""
    return runfiles.run_id(spec.config.replace(method="none", clip_params={}))


def resolve_threshold(spec: RunSpec, root: Path) -> RunSpec:
    """The spec with its threshold read from its finished baseline run (the run id stays the same)."""
    base = root / baseline_of(spec)
    if not runfiles.is_finished(base):
        raise RuntimeError(f"its baseline run {base.name} did not finish")
    norms = pd.read_parquet(base / runfiles.STEPS)["norm_before"].to_numpy()
    norms = norms[np.isfinite(norms)]
    p = spec.config.threshold_from_data
    config = spec.config.replace(clip_params={**spec.config.clip_params, "threshold": float(np.percentile(norms, p))},
                                 threshold_rule=f"{FROM_DATA} {p:g} of {base.name}")
    return RunSpec(spec.run_id, spec.notebook, config)


def _start_client(scheduler: str | None, workers: int, runs: int):
    """A Dask client on ``scheduler``, or on a new local cluster of ``workers`` single-task processes."""
    from dask.distributed import Client, LocalCluster  # deferred: only a sweep with work to do needs Dask

    if scheduler:
        return Client(scheduler), None
    cluster = LocalCluster(n_workers=min(workers, runs), threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=40)
    return Client(cluster), cluster


class _Submissions:
    """Submits the runs; a run whose threshold is read from data waits for its baseline run."""

    def __init__(self, client, root: Path, tf_threads, todo: list[RunSpec], result: SweepResult):
        from dask.distributed import as_completed

        self.client, self.root, self.tf_threads, self.result = client, root, tf_threads, result
        self.waiting = [s for s in todo if s.config.threshold_from_data is not None]
        ready = [s for s in self.waiting if runfiles.is_finished(root / baseline_of(s))]
        self.waiting = [s for s in self.waiting if s not in ready]
        self.futures = as_completed([self._submit(s) for s in todo if s.config.threshold_from_data is None])
        for s in ready:
            self._submit_resolved(s)

    def _submit(self, spec: RunSpec):
        return self.client.submit(execute_run, spec, str(self.root), self.tf_threads, key=f"run-{spec.run_id}",
                                  pure=False)

    def _submit_resolved(self, spec: RunSpec) -> bool:
        try:
            self.futures.add(self._submit(resolve_threshold(spec, self.root)))
            return True
        except RuntimeError as exc:
            self.result.failed[spec.run_id] = f"threshold from data: {exc}"
            return False

    def release_after(self, run_id: str) -> int:
        """Submit the runs waiting for ``run_id``; return how many of them failed to resolve."""
        released = [s for s in self.waiting if baseline_of(s) == run_id]
        self.waiting = [s for s in self.waiting if s not in released]
        return sum(not self._submit_resolved(s) for s in released)


def run_sweep(profile: str | Path, reports: str | Path | None = None, *, scheduler: str | None = None,
              workers: int | None = None, tf_threads: int | None = None, progress: bool = True,
              plan: list[RunSpec] | None = None) -> SweepResult:
    """Run every run of ``profile`` (or of ``plan``, its runs) not yet finished; return what was done,
    skipped and failed."""
    name, specs = load_profile(profile)
    specs = plan if plan is not None else specs
    root = Path(reports or paths.reports_dir()) / name / "runs"
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(root)
    todo = [s for s in specs if not runfiles.is_finished(root / s.run_id)]
    result = SweepResult(name, root, [], [s.run_id for s in specs if s not in todo], {})
    if not todo:
        return result
    prepare_datasets(todo)
    scheduler = scheduler or os.environ.get("CLIPSTUDY_SCHEDULER")
    tf_threads = tf_threads if tf_threads is not None else (None if scheduler else DEFAULT_TF_THREADS)
    client, cluster = _start_client(scheduler, workers or DEFAULT_WORKERS, len(todo))
    bar = tqdm(total=len(specs), initial=len(result.skipped), desc=f"sweep {name}", unit="run", disable=not progress)
    try:
        submissions = _Submissions(client, root, tf_threads, todo, result)
        for future in submissions.futures:
            status = future.result()
            bar.update(1 + submissions.release_after(status["run_id"]))
            if status["status"] == "failed":
                result.failed[status["run_id"]] = status["error"]
            else:
                (result.skipped if status["status"] == "skipped" else result.done).append(status["run_id"])
            bar.set_postfix(done=len(result.done), failed=len(result.failed),
                            remaining=len(todo) - len(result.done) - len(result.failed))
        for s in submissions.waiting:  # baselines that never reported
            result.failed[s.run_id] = f"threshold from data: baseline {baseline_of(s)} did not run"
    finally:
        bar.close()
        client.close()
        if cluster is not None:
            cluster.close()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipstudy.study.sweep",
                                     description="Run a profile's grid of runs (skips finished runs).")
    parser.add_argument("--profile", default="quick", help="smoke, quick, full, or a .yaml path")
    parser.add_argument("--reports", default=str(paths.reports_dir()), help="output root (default: reports/)")
    parser.add_argument("--scheduler", help="address of an existing Dask scheduler (or $CLIPSTUDY_SCHEDULER)")
    parser.add_argument("--workers", type=int, help=f"local workers (default {DEFAULT_WORKERS})")
    parser.add_argument("--tf-threads", type=int, help=f"TensorFlow threads per run (default {DEFAULT_TF_THREADS} locally)")
    parser.add_argument("--list", action="store_true", help="print the runs and exit")
    args = parser.parse_args(argv)
    try:
        name, specs = load_profile(args.profile)
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for s in specs:
            print(s.run_id, json.dumps(s.params, sort_keys=True))
        return 0
    result = run_sweep(args.profile, args.reports, scheduler=args.scheduler, workers=args.workers,
                       tf_threads=args.tf_threads)
    print(f"sweep {name}: {len(result.done)} run, {len(result.skipped)} already done, "
          f"{len(result.failed)} failed -> {result.root}")
    for run, error in sorted(result.failed.items()):
        print(f"FAILED {run}: {error} (see {result.root / run / 'notebook.ipynb'})", file=sys.stderr)
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
