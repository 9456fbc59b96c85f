"""A run's summary: its final and best metrics, targets reached, divergence and clipping telemetry."""

from __future__ import annotations

import hashlib
import math
import platform
from typing import Any

import numpy as np
import pandas as pd

from clipstudy import __version__, platforms
from clipstudy.lazy_tf import keras, tf
from clipstudy.training.monitor import loss_start


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:  # closed even when the first lines answer
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def thread_counts() -> dict[str, int]:
    """TensorFlow's intra- and inter-op thread counts in this process (0: its default, all cores)."""
    return {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "clipstudy": __version__,
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "system": platform.system(),
    }


def steps_to_target(epochs: pd.DataFrame, target: float, column: str = "test_accuracy") -> float:
    """Optimizer steps done when ``column`` first reached ``target`` (NaN if it never did)."""
    reached = epochs.loc[epochs[column] >= target, "step"]
    return float(reached.iloc[0]) if len(reached) else math.nan


#: What a run's outcome is: a method's own settings (its ``threshold`` column) are not part of it.
OUTCOME_COLUMNS = ("step", "loss", "norm_before", "norm_after", "clipped", "nonfinite")


def outcome_digest(steps: pd.DataFrame, epochs: pd.DataFrame) -> str:
    """sha256 of what happened in a run (losses, norms, clip shares, every evaluation): two runs with the
    same digest were identical at every step, whatever thresholds their methods report."""
    return trajectory_digest(steps[list(OUTCOME_COLUMNS)], epochs)


def trajectory_digest(steps: pd.DataFrame, epochs: pd.DataFrame) -> str:
    """sha256 of everything a run recorded but its timings: two runs with the same digest were
    identical at every step and every evaluation."""
    digest = hashlib.sha256()
    for frame in (steps, epochs):
        numbers = frame.drop(columns=[c for c in frame.columns if c.endswith("time_s")])
        digest.update(",".join(numbers.columns).encode())
        digest.update(np.ascontiguousarray(numbers.to_numpy(np.float64)).tobytes())
    return digest.hexdigest()


def _best(epochs: pd.DataFrame, column: str) -> float:
    if column in epochs and epochs[column].notna().any():
        return float(epochs[column].max())
    return math.nan


def _norm_statistics(steps: pd.DataFrame) -> dict[str, Any]:
    finite = steps["norm_before"][np.isfinite(steps["norm_before"])]
    n = len(steps)
    return {
        "clip_fraction": float(steps["clipped"].mean()) if n else math.nan,
        "steps_clipped": int((steps["clipped"] > 0).sum()),
        "max_norm_before": float(finite.max()) if len(finite) else math.nan,
        "median_norm_before": float(finite.median()) if len(finite) else math.nan,
    }


def _identity(config, task, clip) -> dict[str, Any]:
    return {
        "task": task.name,
        "method": clip.name,
        "clip_params": clip.config(),
        "optimizer": config.optimizer,
        "learning_rate": float(config.learning_rate),
        "batch_size": config.batch_size,
        "epochs": config.epochs,
        "seed": config.seed,
    }


def _lower_is_better(column: str) -> bool:
    """Losses and squared errors: their "best" is a minimum, which the summary does not report."""
    return "loss" in column or "mse" in column


def _final_metrics(task, epochs: pd.DataFrame) -> dict[str, float]:
    """The last evaluation's training loss, the task's final metrics and its validation columns."""
    last = epochs.iloc[-1]
    final = {
        "final_train_loss": float(last["train_loss"]),
        **{k: (float(v) if v is not None else math.nan) for k, v in task.final_metrics(last).items()},
    }
    final.update({f"final_{c}": float(last[c]) for c in epochs.columns if c.startswith("val_")})
    return final


def summarize(
    config,
    task,
    clip,
    steps: pd.DataFrame,
    epochs: pd.DataFrame,
    *,
    train_images: int,
    test_images: int,
    images_seen: int,
    steps_planned: int,
    divergence: str | None,
    wall_time_s: float,
    median_step_time_s: float,
    parameters: int,
) -> dict[str, Any]:
    """The summary of a finished run, from its step and epoch tables."""
    targets = {
        key: (steps_to_target(epochs, value, column) if column in epochs else math.nan)
        for key, (column, value) in task.targets().items()
    }
    best_column = next(iter(task.targets().values()))[0]
    final = _final_metrics(task, epochs)
    start = loss_start(steps["loss"])
    return {
        **_identity(config, task, clip),
        "train_images": int(train_images),
        "test_images": int(test_images),
        "steps_run": int(len(steps)),
        "steps_planned": int(steps_planned),
        **final,
        f"best_{best_column}": _best(epochs, best_column),
        **targets,
        **{f"best_{c}": _best(epochs, c) for c in epochs.columns if c.startswith("val_") and not _lower_is_better(c)},
        "diverged": divergence is not None,
        "divergence_reason": divergence,
        "loss_start": start,
        "failure": task.failure(diverged=divergence is not None, final=final, loss_start=start),
        **_norm_statistics(steps),
        "trajectory_sha256": trajectory_digest(steps, epochs),
        "outcome_sha256": outcome_digest(steps, epochs),
        "wall_time_s": wall_time_s,
        "median_step_time_s": median_step_time_s,
        "images_per_second": images_seen / wall_time_s if wall_time_s > 0 else math.nan,
        "parameters": int(parameters),
        "versions": library_versions(),
        "threads": thread_counts(),
        "platform": platforms.current(library_versions(), thread_counts()),
    }
