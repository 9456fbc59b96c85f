"""``run_one``: one run of the study from its ``RunConfig``, its files written to a folder."""
from __future__ import annotations

from pathlib import Path

from clipstudy import tasks
from clipstudy.study import runfiles
from clipstudy.training import RunConfig, RunResult, set_threads, train


def run_one(config: RunConfig, out_dir: str | Path | None = None, *, progress: bool = True) -> RunResult:
    """Train the run ``config`` describes; with ``out_dir``, write its files there (summary last).

    The task (classifier or detector) loads its own local data; nothing is downloaded. TensorFlow's
    thread counts are set from ``config.threads`` first, whatever process executes the run.
    """
    set_threads(config.threads)
    task = tasks.for_config(config)
    result = train(config, task, task.load_data(), progress=progress)
    if out_dir is not None:
        runfiles.save_run(result, out_dir, config, task)
    return result


def summary_text(result: RunResult) -> str:
    """The rounded, deterministic lines of a run's summary that its notebook prints."""
    return runfiles.format_summary(result.summary, tasks.BY_NAME[result.summary["task"]].summary_keys)
