"""One training loop for every run of the study, with per-step gradient telemetry.

``train`` runs a compiled step (forward, loss, gradients, the clipper, the optimizer update),
records what clipping did at every step and the test metrics at every evaluation, and stops a
diverging run early, marking it as such: divergence is a result.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from clipstudy.data.split import Split, subset_indices
from clipstudy.lazy_tf import keras, tf
from clipstudy.training.config import RunConfig, thaw
from clipstudy.training.monitor import DivergenceMonitor
from clipstudy.training.optimizers import make_optimizer
from clipstudy.training.spikes import spike_plan
from clipstudy.training.step import compile_run, compiled_step_kept
from clipstudy.training.steplog import StepLog
from clipstudy.training.summary import summarize

#: Which training images are held out for validation does not depend on the run's seed.
VALIDATION_SEED = 20_250_101


@dataclass
class RunResult:
    """What a run produced: per-step and per-epoch tables, a summary, the trained model and the
    test split it was scored on."""

    steps: pd.DataFrame
    epochs: pd.DataFrame
    summary: dict[str, Any]
    model: Any = field(default=None, repr=False)
    test: Split | None = field(default=None, repr=False)


def set_threads(threads: int) -> None:
    """Fix TensorFlow's intra- and inter-op thread counts for this process (they change the numbers).

    Raises:
      RuntimeError: TensorFlow already started with other counts; the run needs a fresh process.
    """
    current = (
        tf.config.threading.get_intra_op_parallelism_threads(),
        tf.config.threading.get_inter_op_parallelism_threads(),
    )
    if current == (threads, threads):
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as exc:
        raise RuntimeError(
            f"TensorFlow already runs with {current[0]} intra-op and {current[1]} inter-op threads "
            f"(0: all cores) in this process; this run needs threads={threads}: run it in a fresh "
            "process or kernel"
        ) from exc


def set_determinism(seed: int, tensorflow: bool = True) -> None:
    """Seed Python, NumPy, Keras and (unless ``tensorflow`` is False) TensorFlow's global seed, as
    ``keras.utils.set_random_seed`` does, and make TensorFlow's ops deterministic.

    TensorFlow's seed is what its stateful random ops (``tf.random.uniform`` without a seed) draw from;
    setting it also clears the kernels TensorFlow keeps, compiled functions' included (re-optimizing a
    ``quick`` classifier's step costs 0.25 s). A run that reuses a compiled step leaves it alone: a step is
    reused only if it has no such ops (``training.step``), and Keras draws from its own generator.
    """
    if tensorflow:
        keras.utils.set_random_seed(seed)
    else:
        seed_all_but_tensorflow(seed)
    tf.config.experimental.enable_op_determinism()


#: The Keras version whose private seeding state ``seed_all_but_tensorflow`` writes (the lock's; a test holds it
#: to ``keras.utils.set_random_seed`` on whichever version is installed).
KERAS_SEEDING_CHECKED = "3.15.1"


def seed_all_but_tensorflow(seed: int) -> None:
    """What ``keras.utils.set_random_seed`` does except TensorFlow's global seed: Python's, NumPy's, and Keras' own
    seed and seed generator. Keras has no public call for it, so this is the one place that writes Keras' private
    global state (``rng_utils.GLOBAL_RANDOM_SEED``, ``seed_generator.GLOBAL_SEED_GENERATOR``)."""
    global_state = keras.src.backend.common.global_state
    global_state.set_global_attribute(keras.src.utils.rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(keras.src.random.seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)


class _Evaluations:
    """The rows of the epochs table: train loss and score so far in the epoch, and test metrics."""

    def __init__(self, task, predict, test_x, test_targets, start: float, validation=None):
        self.task, self.predict, self.x, self.targets, self.start = task, predict, test_x, test_targets, start
        self.validation = validation  # (x, targets) of the validation split, or None
        self.rows: list[dict] = []
        self.score_column = f"train_{task.score_name}"

    def add(self, epoch, step, totals, epoch_end):
        t0 = time.perf_counter()
        metrics = {}
        if self.validation is not None:  # first, so the test evaluation is the task's last one
            scored = self.task.evaluate(self.predict, *self.validation, self.task.eval_batch_size)
            metrics.update({"val_" + k.removeprefix("test_"): v for k, v in scored.items()})
        metrics.update(self.task.evaluate(self.predict, self.x, self.targets, self.task.eval_batch_size))
        loss, score, seen = totals
        self.rows.append(
            {
                "epoch": epoch,
                "step": step,
                "epoch_end": epoch_end,
                "train_loss": loss / seen,
                self.score_column: score / seen,
                **metrics,
                "wall_time_s": time.perf_counter() - self.start,
                "eval_time_s": time.perf_counter() - t0,
            }
        )

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def train(
    config: RunConfig,
    task,
    data: tuple[Split, Split],
    *,
    model=None,
    progress=True,
    stop_after=None,
    reuse_compiled=False,
) -> RunResult:
    """Train ``task``'s model as ``config`` says and record what clipping did.

    Args:
      config: the run's parameters (its method, optimizer, schedule, seed and subsets).
      task: what is learned and measured (``clipstudy.tasks``: the ``Task`` protocol).
      data: ``(train, test)`` splits; ``config``'s subsets are drawn from them by its seed.
      model: a zero-argument builder or a built model instead of ``task.build_model`` (built after seeding).
      progress: show a progress bar.
      stop_after: stop after this many steps, scored there (the whole run's first steps: a prefix), or None.
      reuse_compiled: start from the compiled step an earlier run of the same shape left in this process, and
        leave this one's (``training.step``: same numbers as a step traced anew). Only for a ``task`` made
        from ``config`` (``tasks.for_config``, as ``run_one`` does): ``config`` names what the step depends on.

    Returns:
      ``RunResult`` with ``steps`` (one row per optimizer step: ``loss``, ``norm_before``,
      ``norm_after``, ``clipped``, ``threshold``, ``nonfinite``, ``step_time_s``), ``epochs``
      (one row per evaluation; ``epoch_end`` marks the ends of epochs), ``summary`` and ``model``.
    """
    _check_stop_after(stop_after)  # before any model is built
    started = time.perf_counter()
    clip = config.clipper()
    net, compiled, (train_split, test_split), evaluations = _start(config, task, data, clip, model, reuse_compiled)
    setup_s = time.perf_counter() - started
    steps_per_epoch = math.ceil(len(train_split) / config.batch_size)
    log = StepLog(steps_per_epoch * config.epochs)
    bar = _progress(log.capacity, progress, f"{clip.name}/{config.optimizer}/lr={config.learning_rate:g}")
    divergence, seen = _run_epochs(config, compiled, len(train_split), log, evaluations, bar, stop_after)
    wall = time.perf_counter() - evaluations.start
    bar.close()
    compiled.finish(net)

    steps, epochs = log.frame(steps_per_epoch, config.epochs), evaluations.frame()
    sizes = {"train_images": len(train_split), "test_images": len(test_split), "images_seen": seen}
    summary = summarize(config, task, clip, steps, epochs, **sizes, steps_planned=log.capacity,
                        divergence=divergence, wall_time_s=wall, median_step_time_s=log.median_step_time(),
                        parameters=net.count_params())  # fmt: skip
    summary["timings"] = phase_timings(setup_s, steps, epochs, wall)
    summary.update({} if stop_after is None else {"stopped_after": stop_after})  # a prefix: its metrics are its own
    return RunResult(steps=steps, epochs=epochs, summary=summary, model=net, test=test_split)


def _start(config: RunConfig, task, data, clip, model, reuse_compiled: bool):
    """The run's model (built once it is seeded), its compiled step and prediction function, its training
    and test splits, and its evaluations."""
    key = _compiled_key(config, task, clip) if reuse_compiled and model is None else None
    reusing = key is not None and compiled_step_kept(key)
    # A model to compile if no finished run left one, built before the run is seeded: the run's numbers
    # do not see it.
    spare = task.build_model() if key is not None and not reusing else None
    set_determinism(config.seed, tensorflow=not reusing)
    net = _build(model or task.build_model)
    optimizer = make_optimizer(config.optimizer, config.learning_rate)
    train_split, validation_split, test_split = run_splits(config, data)
    x_train, y_train = task.prepare(train_split)
    x_test, test_targets = task.prepare_test(test_split)
    validation = task.prepare_test(validation_split) if validation_split is not None else None
    seed_if_traced = config.seed if reusing else None  # TensorFlow's seed, set if the step is traced after all
    compiled = compile_run(net, task, clip, optimizer, x_train, y_train, x_test.shape[1:], key, spare, seed_if_traced)
    evaluations = _Evaluations(task, compiled.predict, x_test, test_targets, time.perf_counter(), validation)
    return net, compiled, (train_split, test_split), evaluations


def _compiled_key(config: RunConfig, task, clip) -> tuple:
    """What a run's compiled step depends on beyond the shapes ``Compiled.fits`` checks, as data: the task (made
    from ``config``: its class, name, parameters and data set), the clipper's rule and parameters (its
    ``config()``), the optimizer's kind."""
    task_params = json.dumps(thaw(config.task_params), sort_keys=True)
    clipper = (clip.name, json.dumps(clip.config(), sort_keys=True, default=str))
    return (type(task).__qualname__, config.task, task_params, config.dataset, *clipper, config.optimizer)


def _check_stop_after(stop_after) -> None:
    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, int) or stop_after < 1):
        raise ValueError(f"stop_after={stop_after!r} is invalid: a number of steps >= 1, or None for the whole run")


def phase_timings(setup_s: float, steps: pd.DataFrame, epochs: pd.DataFrame, wall: float) -> dict[str, float]:
    """Where a run's time went, in seconds: building the model, its data and step function (``setup``); the
    first step (``first_step``: it traces the compiled step); the other steps; the evaluations (the first
    traces the prediction function); and the rest of the loop (``other``: logging, the progress bar)."""
    step_times = steps["step_time_s"].to_numpy() if len(steps) else np.zeros(0)
    evals = epochs["eval_time_s"].to_numpy() if len(epochs) else np.zeros(0)
    first = float(step_times[0]) if len(step_times) else 0.0
    rest = float(step_times[1:].sum())
    return {
        "setup_s": setup_s,
        "first_step_s": first,
        "steps_s": rest,
        "evaluations_s": float(evals.sum()),
        "first_evaluation_s": float(evals[0]) if len(evals) else 0.0,
        "evaluations": int(len(evals)),
        "other_s": max(0.0, wall - first - rest - float(evals.sum())),
    }


class _Warmup:
    """Linear learning-rate warm-up (``RunConfig.warmup_steps`` = N): before step k ≤ N the optimizer's rate is set
    to rate × k/N (rate × 1 at step N, exactly the rate); no run without warm-up is touched. The rate is an
    optimizer variable, so the compiled step is the same and a kept one serves warm-up runs too."""

    def __init__(self, config: RunConfig, optimizer):
        self.steps, self.rate, self.optimizer = config.warmup_steps, config.learning_rate, optimizer

    def before(self, step: int) -> None:
        if step <= self.steps:
            self.optimizer.learning_rate = self.rate * min(1.0, step / self.steps)


def batch_orders(seed: int, n_train: int, batch_size: int):
    """The training batches of a run, epoch after epoch, endlessly: each epoch one permutation of the ``n_train``
    examples drawn from the run's seed alone, cut into batches of ``batch_size`` (the last may be short). The
    training loop and the threshold probe (``study.probes``) both train in this order."""
    shuffler = np.random.default_rng([seed, 2])
    while True:
        order = shuffler.permutation(n_train).astype(np.int32)
        yield [order[start : start + batch_size] for start in range(0, n_train, batch_size)]


def _run_epochs(config: RunConfig, compiled, n_train: int, log: StepLog, evaluations: _Evaluations, bar, stop_after):
    """The optimizer steps of every epoch, with the evaluations; stops at divergence (or after ``stop_after``
    steps).
    Returns ``(divergence reason or None, images seen)``."""
    spikes, warmup, train_step = spike_plan(config.spikes), _Warmup(config, compiled.optimizer), compiled.train_step
    monitor = DivergenceMonitor()
    orders = batch_orders(config.seed, n_train, config.batch_size)
    divergence, images_seen, stopped = None, 0, False
    for epoch in range(1, config.epochs + 1):
        batches = next(orders)
        totals = [0.0, 0.0, 0.0]  # loss × images, summed score, images
        for b, batch in enumerate(batches):
            scale, shuffle = spikes.at(log.steps + 1)
            warmup.before(log.steps + 1)
            t0 = time.perf_counter()
            record = train_step(batch, scale, shuffle).numpy()
            row = log.append(record, time.perf_counter() - t0)
            totals = [totals[0] + row["loss"] * len(batch), totals[1] + row["batch_score"], totals[2] + len(batch)]
            images_seen += len(batch)
            bar.update(1)
            divergence = monitor.check(row)
            stopped = stop_after is not None and log.steps >= stop_after
            if divergence or stopped:
                break
            if config.eval_every and log.steps % config.eval_every == 0 and b + 1 < len(batches):
                evaluations.add(epoch, log.steps, totals, epoch_end=False)
        # A stopped run's last update was not applied: its weights are finite and it is scored as it stands.
        evaluations.add(epoch, log.steps, totals, epoch_end=True)
        if divergence or stopped:
            break
    return divergence, images_seen


def _build(model):
    return model() if callable(model) and not isinstance(model, keras.Model) else model


def run_splits(config: RunConfig, data) -> tuple[Split, Split | None, Split]:
    """The training, validation and test examples of the run.

    ``data`` is ``(train, test)`` or ``(train, validation, test)``. With ``config.validation`` set and
    no validation split given, the validation examples are carved out of the training split (the same
    ones for every run, whatever its seed) and never trained on.
    """
    train_split, test_split = data[0], data[-1]
    validation = data[1] if len(data) == 3 else None
    if config.validation:
        if validation is None:
            order = np.random.default_rng(VALIDATION_SEED).permutation(len(train_split))
            validation = train_split.take(np.sort(order[: config.validation]))
            train_split = train_split.take(np.sort(order[config.validation :]))
        else:
            validation = validation.take(np.arange(config.validation))
    else:
        validation = None
    train_idx = subset_indices(len(train_split), config.train_subset, config.seed, "train_subset")
    test_idx = subset_indices(len(test_split), config.test_subset, config.seed, "test_subset")
    return train_split.take(train_idx), validation, test_split.take(test_idx)


def _progress(total: int, enabled: bool, description: str):
    if not enabled:
        return _NoBar()
    return tqdm(total=total, desc=description, unit="step", leave=False, mininterval=1.0)


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass
