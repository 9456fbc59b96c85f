"""``run_one``: one run of the study from its ``RunConfig``, its files written to a folder."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from clipstudy import tasks
from clipstudy.lazy_tf import import_tensorflow_quietly
from clipstudy.study import runfiles
from clipstudy.training import RunConfig, RunResult, set_threads, train


def run_one(
    config: RunConfig, out_dir: str | Path | None = None, *, progress: bool = True, stop_after: int | None = None
) -> RunResult:
    """Train the run ``config`` describes; with ``out_dir``, write its files there (summary last).
    ``stop_after``: only its first that many steps (``train``'s prefix), or None for the whole run.

    The task (classifier or detector) loads its own local data; nothing is downloaded. TensorFlow's
    thread counts are set from ``config.threads`` first, whatever process executes the run. A later run of
    the same shape in the process reuses this one's compiled step (``training.step``; same numbers).
    """
    t0 = time.perf_counter()
    import_tensorflow_quietly()  # timed on its own: the biggest fixed cost of a run
    imported_s = time.perf_counter() - t0
    set_threads(config.threads)
    task = tasks.for_config(config)
    t0 = time.perf_counter()
    data = task.load_data()
    load_s = time.perf_counter() - t0
    result = train(config, task, data, progress=progress, stop_after=stop_after, reuse_compiled=True)
    result.summary["timings"] = {"import_tensorflow_s": imported_s, "load_data_s": load_s, **result.summary["timings"]}
    if out_dir is not None:
        t0 = time.perf_counter()
        runfiles.save_run(result, out_dir, config, task)
        result.summary["timings"]["write_s"] = time.perf_counter() - t0  # not in the file it just wrote
    return result


def summary_text(result: RunResult) -> str:
    """The rounded, deterministic lines of a run's summary that its notebook prints."""
    return runfiles.format_summary(result.summary, tasks.spec(result.summary["task"]).summary_keys)


def facts_text(result: RunResult) -> str:
    """What a run did that does not depend on the CPU it ran on (so nbval can compare it on any machine):
    its design, how many steps and evaluations it made, what it recorded, and that its numbers are finite.
    The metrics themselves differ in their last digits from one CPU to another (``clipstudy.platforms``)."""
    s = result.summary
    steps, epochs = result.steps, result.epochs
    finite = bool(np.isfinite(steps["loss"]).all() and np.isfinite(steps["norm_before"]).all())
    return "\n".join(
        [
            f"{s['task']} · {s['method']} ({runfiles.format_params(s.get('clip_params', {}))}) · {s['optimizer']} "
            f"lr={s['learning_rate']:g} · batch {s['batch_size']} · seed {s['seed']}",
            f"train images {s['train_images']} · test images {s['test_images']} · parameters {s['parameters']}",
            f"steps {s['steps_run']} of {s['steps_planned']} · "
            f"evaluations at steps {epochs['step'].astype(int).tolist()}",
            f"per step: {', '.join(c for c in steps.columns if not c.endswith('time_s'))}",
            f"per evaluation: {', '.join(c for c in epochs.columns if not c.endswith('time_s'))}",
            f"every loss and norm finite: {finite}",
        ]
    )
