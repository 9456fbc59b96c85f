"""The sweep runner: a profile's grid of runs, each one papermill execution of a task notebook, on Dask.

    python -m clipstudy.sweep --profile quick [--scheduler tcp://host:8786] [--workers 2]

A profile (``smoke``, ``quick``, ``full`` in ``clipstudy/profiles/``, or the path of a YAML file
of the same shape) lists experiments; each is the product methods × optimizers × learning rates ×
seeds. Every run lands in ``reports/<profile>/runs/<run_id>/``: the executed notebook,
``params.json``, ``summary.json`` and the step and epoch tables. A run whose ``summary.json``
exists is skipped, so an interrupted sweep resumes and a repeated one does nothing. A run that
raises keeps its executed notebook and an ``error.json``; the sweep goes on and exits non-zero,
naming the failed runs.

Runs go to a Dask ``LocalCluster`` by default, or to an existing cluster given by ``--scheduler``
or ``$CLIPSTUDY_SCHEDULER`` (its workers must see this repository and the output folder at the
same paths, e.g. on a shared file system).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clipstudy import runs

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
PROFILES = Path(__file__).resolve().parent / "profiles"
DEFAULT_REPORTS = REPO / "reports"

_OPTIONAL_INT = (int, type(None))
_OPTIONAL_DICT = (dict, type(None))
#: task -> (notebook, {setting: (type, default)}); every setting goes into a run's parameters (and hash)
TASKS = {
    "classifier": ("10_train_classifier.ipynb", {
        "epochs": (int, 1), "batch_size": (int, 128), "train_subset": (_OPTIONAL_INT, None),
        "test_subset": (_OPTIONAL_INT, None), "eval_every": (_OPTIONAL_INT, None), "spikes": (_OPTIONAL_DICT, None),
    }),
    "detector": ("20_train_detector.ipynb", {
        "dataset": (str, "smoke"), "epochs": (int, 1), "batch_size": (int, 32), "train_subset": (_OPTIONAL_INT, None),
        "test_subset": (_OPTIONAL_INT, None), "eval_every": (_OPTIONAL_INT, None), "spikes": (_OPTIONAL_DICT, None),
    }),
}
#: A threshold given as ``{baseline_percentile: p}`` is read from the data: the p-th percentile of the
#: global gradient norms that the unclipped run with the same optimizer, rate, seed and settings saw.
FROM_DATA = "baseline_percentile"
#: Measured on the 2-core machine (README, "Choosing workers"): two single-threaded workers.
DEFAULT_WORKERS = 2
DEFAULT_TF_THREADS = 1


class ProfileError(ValueError):
    """A profile file is malformed; the message names the file, the field and the reason."""


@dataclass(frozen=True)
class RunSpec:
    run_id: str
    notebook: str
    params: dict[str, Any] = field(hash=False)


def _type_name(t) -> str:
    if isinstance(t, tuple):
        return " or ".join(_type_name(x) for x in t)
    return "null" if t is type(None) else t.__name__


def _check(cond: bool, source: str, where: str, reason: str):
    if not cond:
        raise ProfileError(f"{source}: field {where}: {reason}")


def resolve_profile(profile: str | Path) -> Path:
    """A profile name (``smoke``, ``quick``, ``full``) or the path of a YAML file."""
    path = Path(profile)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ProfileError(f"{path}: no such profile file")
        return path
    candidate = PROFILES / f"{profile}.yaml"
    if not candidate.is_file():
        names = sorted(p.stem for p in PROFILES.glob("*.yaml"))
        raise ProfileError(f"unknown profile {str(profile)!r}; valid choices: {', '.join(names)} or a .yaml path")
    return candidate


def load_profile(profile: str | Path) -> tuple[str, list[RunSpec]]:
    """Parse and validate a profile; return its name and its runs. Nothing runs before this passes."""
    from clipstudy import clipping, training

    path = resolve_profile(profile)
    src = str(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(f"{src}: not valid YAML: {exc}") from exc
    _check(isinstance(doc, dict), src, "(top level)", "must be a mapping with 'experiments'")
    unknown = sorted(set(doc) - {"description", "experiments"})
    _check(not unknown, src, ", ".join(unknown), "unknown field; valid: description, experiments")
    _check("experiments" in doc, src, "experiments", "missing")
    experiments = doc["experiments"]
    _check(isinstance(experiments, list) and experiments, src, "experiments", "must be a non-empty list")

    specs: dict[str, RunSpec] = {}
    for i, exp in enumerate(experiments):
        at = f"experiments[{i}]"
        _check(isinstance(exp, dict), src, at, "must be a mapping")
        required = ["name", "task", "methods", "optimizers", "seeds"]
        for key in required:
            _check(key in exp, src, f"{at}.{key}", "missing")
        extra = sorted(set(exp) - set(required) - {"settings"})
        _check(not extra, src, f"{at}.{', '.join(extra)}", f"unknown field; valid: {', '.join(required + ['settings'])}")
        _check(exp["task"] in TASKS, src, f"{at}.task", f"{exp['task']!r} is not one of {', '.join(TASKS)}")
        notebook, accepted = TASKS[exp["task"]]

        settings = exp.get("settings") or {}
        _check(isinstance(settings, dict), src, f"{at}.settings", "must be a mapping")
        for key, value in settings.items():
            _check(key in accepted, src, f"{at}.settings.{key}", f"unknown setting; valid: {', '.join(accepted)}")
            _check(isinstance(value, accepted[key][0]) and not isinstance(value, bool), src, f"{at}.settings.{key}",
                   f"{value!r} has the wrong type; expected {_type_name(accepted[key][0])}")
        settings = {**{k: default for k, (_, default) in accepted.items()}, **settings}
        if settings.get("spikes") is not None:
            try:
                training.spike_plan(settings["spikes"])
            except ValueError as exc:
                raise ProfileError(f"{src}: field {at}.settings.spikes: {exc}") from None
        if exp["task"] == "detector":
            from clipstudy.detection_data import SPLIT_SIZES

            _check(settings["dataset"] in SPLIT_SIZES, src, f"{at}.settings.dataset",
                   f"{settings['dataset']!r} is not one of {', '.join(SPLIT_SIZES)}")

        methods = exp["methods"]
        _check(isinstance(methods, list) and methods, src, f"{at}.methods", "must be a non-empty list")
        parsed_methods = []
        for j, entry in enumerate(methods):
            mat = f"{at}.methods[{j}]"
            if isinstance(entry, str):
                entry = {"method": entry}
            _check(isinstance(entry, dict) and "method" in entry, src, mat,
                   "must be a method name or a mapping with 'method' and its parameters")
            params = {k: v for k, v in entry.items() if k != "method"}
            checked = dict(params)
            if isinstance(params.get("threshold"), dict):
                rule = params["threshold"]
                _check(entry["method"] == "global_norm" and set(rule) == {FROM_DATA}, src, f"{mat}.threshold",
                       f"a threshold from data must be {{{FROM_DATA}: p}} on global_norm")
                p = rule[FROM_DATA]
                _check(isinstance(p, (int, float)) and not isinstance(p, bool) and 0 < p <= 100, src,
                       f"{mat}.threshold.{FROM_DATA}", f"{p!r} must be a number in (0, 100]")
                _check(any(m == "none" or m == {"method": "none"} for m in methods), src, f"{mat}.threshold",
                       "a threshold from data needs the unclipped method 'none' in the same experiment")
                checked["threshold"] = 1.0
            try:
                clipping.get(entry["method"], **checked)
            except (ValueError, TypeError) as exc:
                raise ProfileError(f"{src}: field {mat}: {exc}") from None
            parsed_methods.append((entry["method"], params))

        optimizers = exp["optimizers"]
        _check(isinstance(optimizers, dict) and optimizers, src, f"{at}.optimizers",
               "must map optimizer names to lists of learning rates")
        for name, rates in optimizers.items():
            _check(name in training.OPTIMIZERS, src, f"{at}.optimizers.{name}",
                   f"unknown optimizer; valid: {', '.join(training.OPTIMIZERS)}")
            _check(isinstance(rates, list) and rates, src, f"{at}.optimizers.{name}", "must be a non-empty list of learning rates")
            for rate in rates:
                _check(isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0, src,
                       f"{at}.optimizers.{name}", f"learning rate {rate!r} must be a number > 0")

        seeds = exp["seeds"]
        _check(isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds),
               src, f"{at}.seeds", "must be a non-empty list of integers")

        for method, clip_params in parsed_methods:
            for optimizer, rates in optimizers.items():
                for rate in rates:
                    for seed in seeds:
                        params = {"task": exp["task"], "method": method, "clip_params": clip_params,
                                  "optimizer": optimizer, "learning_rate": float(rate), "seed": seed, **settings}
                        spec = RunSpec(runs.run_id(params), notebook, params)
                        specs.setdefault(spec.run_id, spec)  # experiments may share runs: run once
    return path.stem, list(specs.values())


def execute_run(spec: RunSpec, root: str, tf_threads: int | None = None) -> dict[str, Any]:
    """Run one notebook into ``root/<run_id>``; a Dask task. Returns a status record, never raises."""
    import papermill as pm

    root_path = Path(root)
    final = root_path / spec.run_id
    if runs.is_finished(final):
        return {"run_id": spec.run_id, "status": "skipped"}
    partial = root_path / f".{spec.run_id}.partial-{uuid.uuid4().hex[:8]}"
    partial.mkdir(parents=True)
    if tf_threads:
        # Read by TensorFlow when the kernel (a child of this process) starts.
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(tf_threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = str(tf_threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    status = {"run_id": spec.run_id, "status": "done"}
    # The kernel inherits this process's standard error: send its chatter to the run's log file.
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    log = os.open(partial / "kernel.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 2)
    try:
        pm.execute_notebook(
            str(NOTEBOOKS / spec.notebook), str(partial / "notebook.ipynb"),
            parameters={**spec.params, "output_dir": str(partial)},
            kernel_name="python3", progress_bar=False, cwd=str(NOTEBOOKS), log_output=False,
        )
        if not runs.is_finished(partial):
            raise RuntimeError(f"{spec.notebook} finished without writing {runs.SUMMARY}")
    except Exception as exc:  # a failed run is a record, not the end of the sweep
        message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        runs.write_json_atomic({"run_id": spec.run_id, "error": message, "params": spec.params,
                                "traceback": traceback.format_exc()}, partial / runs.ERROR)
        (partial / runs.SUMMARY).unlink(missing_ok=True)
        status = {"run_id": spec.run_id, "status": "failed", "error": message}
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        os.close(log)
    if final.exists():
        shutil.rmtree(final)  # an earlier failed or killed attempt
    os.rename(partial, final)
    return status


def prepare_datasets(specs) -> None:
    """Build the TFDS detection datasets the runs need, once, before the runs race to build them."""
    configs = sorted({s.params["dataset"] for s in specs if s.params["task"] == "detector"})
    if configs:
        from clipstudy import detection_data

        for config in configs:
            detection_data.prepare(config)


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


def deferred(spec: RunSpec) -> bool:
    """Whether ``spec``'s threshold comes from its baseline run (so it runs after that one)."""
    return isinstance(spec.params["clip_params"].get("threshold"), dict)


def baseline_of(spec: RunSpec) -> str:
    params = {**spec.params, "method": "none", "clip_params": {}}
    return runs.run_id(params)


def resolve_threshold(spec: RunSpec, root: Path) -> RunSpec:
    """The spec with its threshold read from its finished baseline run (the run id stays the same)."""
    import numpy as np
    import pandas as pd

    base = root / baseline_of(spec)
    if not runs.is_finished(base):
        raise RuntimeError(f"its baseline run {base.name} did not finish")
    norms = pd.read_parquet(base / runs.STEPS)["norm_before"].to_numpy()
    norms = norms[np.isfinite(norms)]
    p = spec.params["clip_params"]["threshold"][FROM_DATA]
    threshold = float(np.percentile(norms, p))
    params = {**spec.params, "clip_params": {**spec.params["clip_params"], "threshold": threshold},
              "threshold_rule": f"{FROM_DATA} {p:g} of {base.name}"}
    return RunSpec(spec.run_id, spec.notebook, params)


def run_sweep(profile: str | Path, reports: str | Path | None = None, *, scheduler: str | None = None,
              workers: int | None = None, tf_threads: int | None = None, progress: bool = True) -> SweepResult:
    """Run every run of ``profile`` not yet finished; return what was done, skipped and failed."""
    name, specs = load_profile(profile)
    root = Path(reports or DEFAULT_REPORTS) / name / "runs"
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(root)
    todo = [s for s in specs if not runs.is_finished(root / s.run_id)]
    result = SweepResult(name, root, [], [s.run_id for s in specs if s not in todo], {})
    if not todo:
        return result
    prepare_datasets(todo)

    from dask.distributed import Client, LocalCluster, as_completed
    from tqdm.auto import tqdm

    scheduler = scheduler or os.environ.get("CLIPSTUDY_SCHEDULER")
    workers = workers or DEFAULT_WORKERS
    tf_threads = tf_threads if tf_threads is not None else (None if scheduler else DEFAULT_TF_THREADS)
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=min(workers, len(todo)), threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=40)
        client = Client(cluster)
    bar = tqdm(total=len(specs), initial=len(result.skipped), desc=f"sweep {name}", unit="run", disable=not progress)
    try:
        later = [s for s in todo if deferred(s)]
        ready = [s for s in later if runs.is_finished(root / baseline_of(s))]
        for s in ready:
            later.remove(s)
        futures = as_completed([client.submit(execute_run, s, str(root), tf_threads, key=f"run-{s.run_id}", pure=False)
                                for s in todo if not deferred(s)]
                               + [client.submit(execute_run, resolve_threshold(s, root), str(root), tf_threads,
                                                key=f"run-{s.run_id}", pure=False) for s in ready])
        # Thresholds read from data wait for their baseline run; each is submitted as soon as it can be.
        for future in futures:
            status = future.result()
            for s in [s for s in later if baseline_of(s) == status["run_id"]]:
                later.remove(s)
                try:
                    futures.add(client.submit(execute_run, resolve_threshold(s, root), str(root), tf_threads,
                                              key=f"run-{s.run_id}", pure=False))
                except RuntimeError as exc:
                    result.failed[s.run_id] = f"threshold from data: {exc}"
                    bar.update(1)
            if status["status"] == "failed":
                result.failed[status["run_id"]] = status["error"]
            elif status["status"] == "skipped":
                result.skipped.append(status["run_id"])
            else:
                result.done.append(status["run_id"])
            bar.update(1)
            bar.set_postfix(done=len(result.done), failed=len(result.failed),
                            remaining=len(todo) - len(result.done) - len(result.failed))
        for s in later:  # baselines that never reported
            result.failed[s.run_id] = f"threshold from data: baseline {baseline_of(s)} did not run"
    finally:
        bar.close()
        client.close()
        if cluster is not None:
            cluster.close()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run a profile's grid of runs (skips finished runs).")
    parser.add_argument("--profile", default="quick", help="smoke, quick, full, or a .yaml path")
    parser.add_argument("--reports", default=str(DEFAULT_REPORTS), help="output root (default: reports/)")
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
    if result.failed:
        for run, error in sorted(result.failed.items()):
            print(f"FAILED {run}: {error} (see {result.root / run / 'notebook.ipynb'})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
