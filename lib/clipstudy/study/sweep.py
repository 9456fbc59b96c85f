"""The sweep runner: a profile's runs, each one papermill execution of its task notebook, on Dask.

    python -m clipstudy.study.sweep --profile quick [--scheduler tcp://host:8786] [--workers 2]

Every run lands in ``reports/<profile>/runs/<run_id>/``: the executed notebook, ``params.json``,
``summary.json``, the step and epoch tables and ``manifest.json``. A run whose files match its manifest
is skipped (a damaged one is set aside and redone), so an interrupted sweep resumes and a repeated one
does nothing. A run that raises keeps its executed
notebook and an ``error.json``; the sweep goes on and exits non-zero, naming the failed runs.

Runs go to a Dask ``LocalCluster`` by default, or to an existing cluster given by ``--scheduler``
or ``$CLIPSTUDY_SCHEDULER`` (its workers must see this repository and the output folder at the
same paths, e.g. on a shared file system). No TensorFlow is imported in this process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import traceback
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from clipstudy import paths
from clipstudy.fileio import naming_full_disk, write_json_atomic
from clipstudy.lazy_tf import quiet_dask
from clipstudy.study import bundle, kernels, notebooks, probes, processes, runfiles
from clipstudy.study.lock import FolderBusy, SweepLock
from clipstudy.study.plan import Plan, load_plan
from clipstudy.study.profiles import ProfileError, RunSpec

#: Measured on the 2-core machine (docs/running.md, "Choosing workers"): two workers, each run single-threaded.
DEFAULT_WORKERS = 2
#: A run's cost model, for ordering and for the progress bar's estimate: each task's spec gives its seconds per
#: training example (measured on the 2-core machine with two workers); evaluation examples cost a third of that,
#: plus what a run costs around its training in a warm kernel (reset, tracing, figures, writing; ``make bench``'s
#: breakdown). Only ratios matter: the bar's rate comes from the runs that finished.
RUN_OVERHEAD_S = 3.0


def estimated_seconds(config) -> float:
    """Roughly how long ``config``'s run takes here: training, evaluations and the notebook around them."""
    steps = config.planned_steps()
    evaluations = config.epochs + (steps // config.eval_every if config.eval_every else 0)
    images = steps * config.batch_size + evaluations * (config.test_examples() + (config.validation or 0)) / 3
    return RUN_OVERHEAD_S + config.task_spec.seconds_per_example * images


#: Seconds one cell of a run may take before its kernel is taken as hung (the run fails, the sweep goes on): six
#: hours, twenty times the slowest published run (a detector run on the slowest CPU met: docs/running.md) and room
#: for a CPU eight times slower. ``CLIPSTUDY_RUN_TIMEOUT`` (seconds; 0: none) sets another.
RUN_TIMEOUT_S = 6 * 3600


def run_timeout() -> float | None:
    """The per-cell limit of a run (``RUN_TIMEOUT_S`` or ``$CLIPSTUDY_RUN_TIMEOUT``; None for 0)."""
    raw = os.environ.get("CLIPSTUDY_RUN_TIMEOUT", "").strip()
    try:
        value = float(raw) if raw else RUN_TIMEOUT_S
    except ValueError:
        raise ValueError(f"CLIPSTUDY_RUN_TIMEOUT={raw!r} is not a number of seconds (0: no limit)") from None
    if value < 0:
        raise ValueError(f"CLIPSTUDY_RUN_TIMEOUT={raw!r} is negative; give seconds, or 0 for no limit")
    return value or None


def execute_run(spec: RunSpec, root: str, warm: bool = True) -> dict[str, Any]:
    """Run one notebook into ``root/<run_id>``; a Dask task. Returns a status record and raises only when the
    disk is full (an ``OSError`` naming the folder: nothing can be recorded there, and the sweep stops).
    The run sets TensorFlow's threads itself (``RunConfig.threads``), whoever executes it. ``warm``: in this
    worker's warm kernel (``kernels``: reset before the run, replaced after a failure), else in a kernel
    started for this run."""
    with naming_full_disk(f"writing run {spec.run_id}", Path(root)):
        return _execute_run(spec, root, warm)


def _execute_run(spec: RunSpec, root: str, warm: bool) -> dict[str, Any]:
    root_path = Path(root)
    final = root_path / spec.run_id
    if runfiles.is_finished(final):
        return {"run_id": spec.run_id, "status": "skipped"}
    partial = root_path / f".{spec.run_id}.partial-{uuid.uuid4().hex[:8]}"
    partial.mkdir(parents=True)
    status = {"run_id": spec.run_id, "status": "done"}
    source = paths.notebook(spec.notebook)
    try:  # the kernel's chatter goes to the run's kernel.log, not the terminal
        key = kernels.KernelKey.for_notebook(source, spec.config.threads)
        notebooks.execute(
            source,
            partial / "notebook.ipynb",
            {"config": spec.params, "output_dir": str(partial)},
            keep_papermill=True,
            log=partial / "kernel.log",
            kernel=kernels.kernel_for(key) if warm else None,
            timeout=run_timeout(),
        )
        if not runfiles.is_finished(partial):
            raise RuntimeError(f"{spec.notebook} finished without writing the run's files ({runfiles.MANIFEST})")
    except Exception as exc:  # a failed run is a record, not the end of the sweep
        if interrupted(exc):  # Ctrl-C reached the kernel too: nothing to record, the run is redone on resume
            shutil.rmtree(partial, ignore_errors=True)
            return {"run_id": spec.run_id, "status": "interrupted"}
        status = _record_failure(spec, partial, exc)
    if status["status"] == "failed" and runfiles.is_finished(final):
        shutil.rmtree(partial)  # a failed attempt never replaces a finished run
        return status
    if final.exists():
        shutil.rmtree(final)  # an earlier failed or killed attempt
    os.rename(partial, final)
    return status


def interrupted(exc: BaseException) -> bool:
    """Whether a run ended because its kernel was interrupted (Ctrl-C in the terminal reaches the kernels too: a
    cell raises KeyboardInterrupt), not because it failed."""
    return getattr(exc, "ename", None) == "KeyboardInterrupt" or isinstance(exc, KeyboardInterrupt)


def _record_failure(spec: RunSpec, partial: Path, exc: Exception) -> dict[str, Any]:
    lines = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
    if type(exc).__name__ == "CellTimeoutError":
        message += f" (the kernel hung or the run is slower here: CLIPSTUDY_RUN_TIMEOUT={run_timeout() or 0:g} s)"
    write_json_atomic(
        {"run_id": spec.run_id, "error": message, "params": spec.params, "traceback": traceback.format_exc()},
        partial / runfiles.ERROR,
    )
    # a run that failed after writing its files (a figure cell, a full disk) is a failed run, not a damaged one:
    # without its manifest nothing vouches for the files, and the report reads its error.json
    (partial / runfiles.SUMMARY).unlink(missing_ok=True)
    (partial / runfiles.MANIFEST).unlink(missing_ok=True)
    return {"run_id": spec.run_id, "status": "failed", "error": message}


def prepare_datasets(specs) -> None:
    """Build the data each task's runs read (its spec's ``prepare``), once, before the runs race to build it."""
    by_task: dict[str, list] = {}
    for s in specs:
        by_task.setdefault(s.config.task, []).append(s.config)
    for configs in by_task.values():
        configs[0].task_spec.prepare(configs)


def remove_stale_partials(root: Path) -> int:
    """Delete what killed runs left behind (they are redone); call it only under the folder's lock."""
    stale = list(root.glob(".*.partial-*")) if root.exists() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return len(stale)


def set_aside_damaged(root: Path) -> list[str]:
    """Move every damaged run (its files no longer match its manifest) to ``root/.damaged/`` (never
    deleting it) so that it is redone; return the moved runs, each with what was wrong."""
    moved = []
    for run_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if runfiles.is_damaged(run_dir):
            problems = runfiles.manifest_problems(run_dir)
            target = root / ".damaged" / f"{run_dir.name}-{uuid.uuid4().hex[:8]}"
            target.parent.mkdir(exist_ok=True)
            run_dir.rename(target)
            moved.append(f"{run_dir.name}: {'; '.join(problems)} (moved to {target})")
    return moved


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


def execute_probe(config, path: str) -> dict[str, Any]:
    """Run one threshold probe in a child process (its own TensorFlow, threads from ``config``); a Dask task."""
    env = processes.child_environment(os.environ)
    done = subprocess.run(
        [sys.executable, "-m", "clipstudy.study.probes", "--config", json.dumps(config.to_params()), "--out", path],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return {
            "probe": Path(path).stem,
            "status": "failed",
            "error": lines[-1] if lines else f"exit {done.returncode}",
        }
    return {"probe": Path(path).stem, "status": "done"}


def run_probes(client, specs: list[RunSpec], probes_dir: Path, bundle_root: Path | None = None) -> dict[str, str]:
    """Run the missing probes the runs of ``specs`` need; return the failed ones with their errors. With
    ``bundle_root`` (a published profile's bundle), each new probe is entered in the bundle's index."""
    needed = {}
    for s in specs:
        if s.config.threshold_from_data is not None and not probes.probe_file(probes_dir, s.config).is_file():
            needed.setdefault(probes.probe_id(s.config), s.config)
    if not needed:
        return {}
    probes_dir.mkdir(parents=True, exist_ok=True)
    futures = [
        client.submit(execute_probe, config, str(probes_dir / f"{pid}.json"), key=pid, pure=False)
        for pid, config in needed.items()
    ]
    results = client.gather(futures)
    if probes_dir.parent == bundle_root:  # a published profile's probes go into its bundle's index
        for r in results:
            if r["status"] == "done":
                bundle.index_probe(bundle_root, probes_dir / f"{r['probe']}.json")
    return {r["probe"]: r["error"] for r in results if r["status"] == "failed"}


def _start_client(scheduler: str | None, workers: int, runs: int):
    """A Dask client on ``scheduler``, or on a new local cluster of ``workers`` single-task processes."""
    quiet_dask()
    from dask.distributed import Client, LocalCluster  # deferred: only a sweep with work to do needs Dask

    if scheduler:
        try:
            return Client(scheduler, timeout="10s"), None
        except (OSError, TimeoutError) as exc:
            raise OSError(
                f"cannot reach the Dask scheduler at {scheduler} within 10 s ({type(exc).__name__}); check "
                "that it is running and that this machine can reach that address and port"
            ) from None
    with warnings.catch_warnings():  # its HTTP server takes another port when 8787 is busy: nothing to report
        warnings.filterwarnings("ignore", message="Port .* is already in use")
        cluster = LocalCluster(
            n_workers=min(workers, runs),
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    return Client(cluster), cluster


def run_sweep(
    profile: str | Path | Plan,
    reports: str | Path | None = None,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    plan: list[RunSpec] | None = None,
    wait: bool = False,
    fresh_kernels: bool = False,
) -> SweepResult:
    """Run every run of ``profile`` (or of ``plan``, its runs) not yet finished; return what was done,
    skipped and failed. Probes for thresholds read from data run first. One sweep per output folder:
    a second one refuses (``lock.FolderBusy``) or, with ``wait``, waits. Each worker executes its runs in
    one warm kernel (``kernels``), or with ``fresh_kernels`` each run in a kernel of its own."""
    profile = load_plan(profile)
    specs = list(plan if plan is not None else profile.specs)
    # Resolved before anything sees it: the notebooks run with notebooks/ as their working directory.
    root = profile.local(reports) / "runs"
    root.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        held.enter_context(SweepLock(root, wait=wait))
        if profile.publishes:  # one sweep per bundle too, whatever --reports each was given
            held.enter_context(SweepLock(profile.bundle, wait=wait, holder="sweep publishing to it"))
        return _sweep_locked(profile, specs, root, scheduler, workers, progress, not fresh_kernels)


def _sweep_locked(
    profile: Plan, specs: list[RunSpec], root: Path, scheduler, workers, progress, warm: bool
) -> SweepResult:
    remove_stale_partials(root)  # under the lock, whatever is half-done was abandoned by a dead sweep
    for line in set_aside_damaged(root):
        print(f"damaged run set aside, redoing it: {line}", file=sys.stderr)
    places = RunFolders(root, profile.bundle)
    result = SweepResult(profile.name, root, [], [], {})
    resolved = _resolved(specs, places.probes)
    for line in places.repair(resolved):
        print(f"bundle repaired: {line}", file=sys.stderr)
    if len(resolved) == len(specs) and all(places.finished(s.run_id) for s in resolved):
        result.skipped = [s.run_id for s in resolved]
        return result
    prepare_datasets(specs)
    scheduler = scheduler or os.environ.get("CLIPSTUDY_SCHEDULER")
    client, cluster = _start_client(scheduler, workers or DEFAULT_WORKERS, len(specs))
    try:
        for probe, error in run_probes(client, specs, places.probes, places.bundle).items():
            for s in specs:
                if s.config.threshold_from_data is not None and probes.probe_id(s.config) == probe:
                    result.failed[s.run_id] = f"threshold probe {probe} failed: {error}"
        _run_all(client, _resolved(specs, places.probes), places, result, progress, warm)
    finally:
        _close_kernels(client)
        client.close()
        if cluster is not None:
            cluster.close()
    return result


@dataclass
class RunFolders:
    """Where a sweep's runs go (``root``) and, for a published profile, the bundle they are copied to."""

    root: Path
    bundle: Path | None = None

    @property
    def probes(self) -> Path:
        return self.bundle / "probes" if self.bundle else self.root.parent / "probes"

    def finished(self, run_id: str) -> bool:
        """A run is done when its record is whole: for a published profile its bundle copy (the bundle is
        the record; a local copy only helps repair it), else its local folder."""
        if self.bundle:
            return not bundle.run_problems(self.bundle, run_id)
        return runfiles.is_finished(self.root / run_id)

    def publish(self, run_id: str) -> None:
        if self.bundle and runfiles.is_finished(self.root / run_id):
            bundle.publish(self.root / run_id, self.bundle / "runs")

    def repair(self, specs: list[RunSpec]) -> list[str]:
        """For a published profile: every planned run whose bundle copy is damaged is set aside (never
        deleted), then published again from an intact local copy; the rest of the missing runs are trained."""
        if not self.bundle:
            return []
        messages, index = [], bundle.read_index(self.bundle)
        for s in specs:
            copy = self.bundle / "runs" / s.run_id
            problems = bundle.run_problems(self.bundle, s.run_id, index)
            if problems and copy.exists():
                moved = bundle.set_aside(copy, "damaged")
                messages.append(f"{s.run_id}: its bundle copy is damaged ({'; '.join(problems)}); moved to {moved}")
            if problems and runfiles.is_finished(self.root / s.run_id):
                bundle.publish(self.root / s.run_id, self.bundle / "runs")
                messages.append(f"{s.run_id}: published again from the intact copy in {self.root / s.run_id}")
        return messages


def _resolved(specs: list[RunSpec], probes_dir: Path) -> list[RunSpec]:
    """The specs whose thresholds from data can be read now (their probes are done), resolved."""
    resolved = (probes.resolve(s, probes_dir) for s in specs)
    return [s for s in resolved if s is not None]


def _close_kernels(client) -> None:
    """Shut down the workers' warm kernels (a worker that is gone took its kernel with it)."""
    try:
        client.run(kernels.close_all)
    except Exception as exc:  # the sweep's result stands whatever state the workers are in
        print(f"warning: could not close the workers' kernels ({type(exc).__name__}: {exc})", file=sys.stderr)


def progress_bar(cost: dict[str, float], finished: list[str], profile: str, progress: bool = True):
    """The sweep's bar and what each run adds to it: ``cost``'s estimated seconds of each run as whole
    milliseconds, so that its time left weighs each run by what it costs and its count ends exactly at its
    total whatever order the runs finish in (a sum of floats in another order can overshoot it by a last bit,
    which tqdm shows as "-00:00 left" with a warning). It starts at the ``finished`` runs' work."""
    work = {run_id: max(1, round(1000 * seconds)) for run_id, seconds in cost.items()}
    bar = tqdm(
        total=sum(work.values()),
        initial=sum(work[r] for r in finished),
        desc=f"sweep {profile}",
        unit="ms",
        unit_scale=False,
        disable=not progress,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} left{postfix}",
    )
    return bar, work


def run_order(specs: list[RunSpec], cost: dict[str, float]) -> list[RunSpec]:
    """The order a sweep starts its runs in: whole seeds of a task together (every arm of a seed, whichever
    experiment plans it; cheapest seed group first, cheapest run first within it), so that a sitting cut short
    leaves complete pairs trained on one machine rather than one arm of many seeds."""
    group_cost: dict[tuple[str, int], float] = {}
    for s in specs:
        key = (s.config.task, s.config.seed)
        group_cost[key] = group_cost.get(key, 0.0) + cost[s.run_id]
    return sorted(
        specs,
        key=lambda s: (
            group_cost[(s.config.task, s.config.seed)],
            s.config.task,
            s.config.seed,
            cost[s.run_id],
            s.run_id,
        ),
    )


def task_key(rank: int, run_id: str) -> str:
    """A run's Dask key: ``run-<rank>-<run id>``, which puts every run of a sweep in one Dask task group ("run").
    Dask queues a group's tasks in priority order only once the group holds more than twice the workers' threads;
    the tasks of a smaller group go to a worker at once and run ahead of the queue. Keyed ``run-<run id>``, the
    runs fell into groups by task and method, so the first four of each (a quantile arm of four later seeds, the
    first detector runs) ran before whole seeds planned ahead of them."""
    return f"run-{rank:05d}-{run_id}"


def _run_all(
    client, specs: list[RunSpec], places: RunFolders, result: SweepResult, progress: bool, warm: bool = True
) -> None:
    from dask.distributed import as_completed  # deferred with the client

    root = places.root
    cost = {s.run_id: estimated_seconds(s.config) for s in specs}
    todo = run_order([s for s in specs if not places.finished(s.run_id)], cost)
    result.skipped = [s.run_id for s in specs if s not in todo]
    bar, work = progress_bar(cost, result.skipped, result.profile, progress)
    try:
        # Dask does not keep submission order by itself: the explicit priority does (higher runs first).
        futures = as_completed(
            [
                client.submit(
                    execute_run, s, str(root), warm, key=task_key(i, s.run_id), pure=False, priority=len(todo) - i
                )
                for i, s in enumerate(todo)
            ]
        )
        for future in futures:
            status = future.result()
            if status["status"] == "interrupted":
                raise KeyboardInterrupt  # the terminal's Ctrl-C, seen first by a kernel: end as the driver would
            if status["status"] == "failed":
                result.failed[status["run_id"]] = status["error"]
            else:
                with naming_full_disk(f"publishing run {status['run_id']}", places.bundle or root):
                    places.publish(status["run_id"])
                (result.skipped if status["status"] == "skipped" else result.done).append(status["run_id"])
            bar.update(work[status["run_id"]])
            bar.set_postfix_str(
                f"{len(result.done)} run, {len(result.failed)} failed, "
                f"{len(todo) - len(result.done) - len(result.failed)} to go"
            )
    finally:
        bar.close()


def _finished_anywhere(profile: Plan, run_id: str, reports: str) -> bool:
    """Whether the run is finished in the sweep's folder or in the profile's published bundle."""
    here = profile.local(reports) / "runs" / run_id
    return runfiles.is_finished(here) or bool(profile.bundle and runfiles.is_finished(profile.bundle / "runs" / run_id))


def listing(profile: Plan, reports: str | None) -> tuple[list[str], dict[str, int]]:
    """Each planned run as one line, ``<id> <state> <parameters>``, and the count of each state. A run whose
    threshold comes from a probe is listed under the id it trains under (its threshold read from the probe, as
    the bundle names it) once the probe is recorded; until then under its planned id, waiting for the probe."""
    probes_dir = profile.record(reports) / "probes"
    lines, counts = [], {"finished": 0, "to run": 0, "waiting for a probe": 0}
    for planned in profile.specs:
        s = probes.resolve(planned, probes_dir)
        if s is None:
            state, s = "waiting for a probe", planned
        else:
            state = "finished" if _finished_anywhere(profile, s.run_id, reports) else "to run"
        counts[state] += 1
        lines.append(f"{s.run_id} {state.replace(' ', '-')} {json.dumps(s.params, sort_keys=True)}")
    return lines, counts


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clipstudy.study.sweep", description="Run a profile's grid of runs (skips finished runs)."
    )
    parser.add_argument("--profile", default="quick", help="smoke, quick, paper, full, or a .yaml path")
    parser.add_argument("--reports", default=str(paths.reports_dir()), help="output root (default: reports/)")
    parser.add_argument("--scheduler", help="address of an existing Dask scheduler (or $CLIPSTUDY_SCHEDULER)")
    parser.add_argument("--workers", type=int, help=f"local workers (default {DEFAULT_WORKERS})")
    parser.add_argument(
        "--list", action="store_true", help="print each run with its state (finished, to run, waiting for a probe)"
    )
    parser.add_argument("--wait", action="store_true", help="wait for another sweep on the same folder to finish")
    parser.add_argument(
        "--fresh-kernels",
        action="store_true",
        help="execute each run in a kernel of its own (slower: every run pays the kernel's start and "
        "TensorFlow's import) instead of one warm kernel per worker; the runs' numbers are the same",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="let Dask's logs and the kernels' warnings through (or CLIPSTUDY_VERBOSE=1)",
    )
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.verbose:
        os.environ["CLIPSTUDY_VERBOSE"] = "1"
    try:
        profile = load_plan(args.profile)
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.list:
        lines, counts = listing(profile, args.reports)
        print("\n".join(lines))
        print(", ".join(f"{n} {state}" for state, n in counts.items()) + f" ({len(profile.specs)} planned)")
        return 0
    try:
        result = run_sweep(
            profile,
            args.reports,
            scheduler=args.scheduler,
            workers=args.workers,
            wait=args.wait,
            fresh_kernels=args.fresh_kernels,
        )
    except KeyboardInterrupt:  # one line, not a traceback: nothing finished is lost, the sweep resumes
        done = sum(1 for s in profile.specs if _finished_anywhere(profile, s.run_id, args.reports))
        again = " ".join(sys.argv[1:] if argv is None else argv)
        resume = f"python -m clipstudy.study.sweep {again}"
        print(f"\ninterrupted; {done} of {len(profile.specs)} runs finished, resume with: {resume}", file=sys.stderr)
        return 130
    except (FolderBusy, OSError, probes.ProbeError, bundle.UnindexedBundle) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"sweep {profile.name}: {len(result.done)} run, {len(result.skipped)} already done, "
        f"{len(result.failed)} failed -> {result.root}"
    )
    for run, error in sorted(result.failed.items()):
        print(f"FAILED {run}: {error} (see {result.root / run / 'notebook.ipynb'})", file=sys.stderr)
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
