"""One training loop for every run of the study, with per-step gradient telemetry.

``train`` runs a compiled (``tf.function``) step: forward, loss, gradients, the clipper,
then the optimizer update. It records what clipping did at every step and the test metrics
after every epoch, and stops a diverging run early, marking it as such: divergence is a result.
"""
from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from clipstudy import clipping

OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam")
STEP_FIELDS = ("loss", "norm_before", "norm_after", "clipped", "threshold", "nonfinite")
ACCURACY_TARGETS = (0.98, 0.99)


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """A Keras optimizer by study name; ``momentum`` is SGD with Nesterov off and momentum 0.9."""
    if not isinstance(learning_rate, (int, float)) or isinstance(learning_rate, bool) \
            or not math.isfinite(learning_rate) or learning_rate <= 0:
        raise ValueError(f"learning_rate={learning_rate!r} is invalid; it must be a finite number > 0")
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate)
    if name == "momentum":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=learning_rate)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    raise ValueError(f"unknown optimizer {name!r}; valid choices: {', '.join(OPTIMIZERS)}")


def set_determinism(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and make TensorFlow's ops deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def prepare_images(x: np.ndarray) -> np.ndarray:
    """uint8 (n, 28, 28) digits to float32 (n, 28, 28, 1) in [0, 1], as the article does."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    if x.ndim == 3:
        x = x[..., None]
    return x.astype(np.float32, copy=False)


def library_versions() -> dict[str, str]:
    import clipstudy

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "clipstudy": clipstudy.__version__,
        "machine": platform.machine(),
        "system": platform.system(),
    }


@dataclass
class RunResult:
    """What a run produced: per-step and per-epoch tables, a summary, and the trained model."""

    steps: pd.DataFrame
    epochs: pd.DataFrame
    summary: dict[str, Any]
    model: keras.Model | None = field(default=None, repr=False)


def subset_indices(n: int, subset: int | None, seed: int, name: str) -> np.ndarray:
    if subset is None:
        return np.arange(n)
    if not isinstance(subset, int) or isinstance(subset, bool) or not 0 < subset <= n:
        raise ValueError(f"{name}={subset!r} is invalid; it must be an integer in [1, {n}] or None")
    # Depends on the seed alone, so every method of a seed sees the same images.
    return np.sort(np.random.default_rng([seed, 1]).choice(n, size=subset, replace=False))


def steps_to_target(epochs: pd.DataFrame, target: float, column: str = "test_accuracy") -> float:
    """Optimizer steps done when ``column`` first reached ``target`` (NaN if it never did)."""
    reached = epochs.loc[epochs[column] >= target, "step"]
    return float(reached.iloc[0]) if len(reached) else math.nan


class ClassificationTask:
    """Sparse-label classification: cross-entropy loss, accuracy, steps to 98% and 99% test accuracy."""

    name = "classifier"
    score_name = "accuracy"   # the per-batch score reported as train_<score_name>
    metric_names = ("test_loss", "test_accuracy")
    loss = "sparse_categorical_crossentropy"

    def __init__(self):
        loss_obj = keras.losses.get(self.loss)
        self._per_example = loss_obj.call if isinstance(loss_obj, keras.losses.Loss) else loss_obj

    def prepare(self, x, y):
        return prepare_images(x), np.asarray(y).astype(np.int32)

    def prepare_test(self, x, y):
        return self.prepare(x, y)

    def per_example_loss(self, y, pred):
        return self._per_example(y, pred)

    def batch_score(self, y, pred):
        """Summed over the batch: the number of correct predictions."""
        return tf.reduce_sum(tf.cast(tf.equal(tf.argmax(pred, -1, output_type=tf.int32), y), tf.float32))

    def evaluate(self, predict, x, y, batch_size) -> dict[str, float]:
        total_loss = total_correct = 0.0
        for start in range(0, len(x), batch_size):
            pred = predict(x[start:start + batch_size])
            yb = y[start:start + batch_size]
            total_loss += float(tf.reduce_sum(self.per_example_loss(yb, pred)))
            total_correct += float(self.batch_score(yb, pred))
        return {"test_loss": total_loss / len(x), "test_accuracy": total_correct / len(x)}

    def targets(self) -> dict[str, tuple[str, float]]:
        """Summary key -> (epochs-table column, value to reach)."""
        return {f"steps_to_{round(t * 100)}": ("test_accuracy", t) for t in ACCURACY_TARGETS}

    def final_metrics(self, row) -> dict[str, float]:
        return {"final_test_loss": float(row["test_loss"]), "final_test_accuracy": float(row["test_accuracy"])}


def train(
    model: keras.Model | Callable[[], keras.Model],
    data,
    *,
    optimizer: str = "adam",
    learning_rate: float = 1e-3,
    clipper: str | clipping.Clipper = "none",
    clip_params: dict | None = None,
    epochs: int = 1,
    batch_size: int = 128,
    seed: int = 0,
    train_subset: int | None = None,
    test_subset: int | None = None,
    eval_every: int | None = None,
    spikes: dict | None = None,
    task=None,
    divergence_factor: float = 3.0,
    divergence_window: int = 20,
    eval_batch_size: int = 1000,
    progress: bool = True,
) -> RunResult:
    """Train a model with one clipping method and record what clipping did.

    Args:
      model: a zero-argument function that builds the model (built after seeding, so the
        initial weights follow ``seed``) or an already built model.
      data: ``((x_train, y_train), (x_test, y_test))``, e.g. ``clipstudy.data.load_mnist()``.
      optimizer: one of ``OPTIMIZERS``; ``learning_rate`` its step size.
      clipper: a method name from ``clipping.METHODS`` (with ``clip_params``) or a ``Clipper``.
      epochs, batch_size: as in ``model.fit``; the last, partial batch of an epoch is kept.
      seed: seeds weights, shuffling and the subsets; op determinism is switched on.
      train_subset, test_subset: use this many examples (chosen by ``seed``) instead of all.
      eval_every: also evaluate on the test set every this many steps (default: at epoch ends only).
      spikes: inject bad batches, e.g. ``{"steps": [150, 151], "kind": "scale_loss", "factor": 100}``
        (the loss, hence the gradient, of those steps multiplied by ``factor``) or
        ``{"steps": [...], "kind": "shuffle_labels"}`` (each example gets its neighbour's labels).
        The recorded loss is the batch's own loss, before any scaling.
      task: what is learned and measured; default ``ClassificationTask()`` (the detector brings its own).
      divergence_factor, divergence_window: the run is stopped as diverged when the mean loss
        of the last ``divergence_window`` steps exceeds ``divergence_factor`` × the first
        step's loss, or at once on a non-finite loss or gradient (no update is applied then).

    Returns:
      ``RunResult`` with ``steps`` (one row per optimizer step: ``loss``, ``norm_before``,
      ``norm_after``, ``clipped``, ``threshold``, ``nonfinite``, ``step_time_s``), ``epochs``
      (one row per evaluation: train loss and score so far in the epoch, test metrics;
      ``epoch_end`` marks the rows at the end of an epoch), ``summary`` and ``model``.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r} is invalid; it must be an integer ≥ 1")
    if eval_every is not None and (not isinstance(eval_every, int) or isinstance(eval_every, bool) or eval_every < 1):
        raise ValueError(f"eval_every={eval_every!r} is invalid; it must be an integer ≥ 1 or None")
    task = task or ClassificationTask()
    spike_steps, spike_scale, spike_shuffle = spike_plan(spikes)
    if clip_params is not None and not isinstance(clip_params, dict):
        raise ValueError(f"clip_params={clip_params!r} is invalid; it must be a dict of the method's parameters")
    clip = clipping.get(clipper, **(clip_params or {}))
    set_determinism(seed)
    net = model() if callable(model) and not isinstance(model, keras.Model) else model
    opt = make_optimizer(optimizer, learning_rate)

    (x_train, y_train), (x_test, y_test) = data
    train_idx = subset_indices(len(x_train), train_subset, seed, "train_subset")
    test_idx = subset_indices(len(x_test), test_subset, seed, "test_subset")
    x_tr, y_tr = task.prepare(np.asarray(x_train)[train_idx], np.asarray(y_train)[train_idx])
    x_te, y_te = task.prepare_test(np.asarray(x_test)[test_idx], np.asarray(y_test)[test_idx])
    x_tr, y_tr = tf.constant(x_tr), tf.constant(y_tr)

    variables = net.trainable_variables
    opt.build(variables)
    clip_state = {k: tf.Variable(v, trainable=False, name=f"clip_{k}") for k, v in clip.init(variables).items()}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.float32),
                                  tf.TensorSpec([], tf.bool)])
    def train_step(batch, loss_scale, shuffle_labels):
        x = tf.gather(x_tr, batch)
        y = tf.gather(y_tr, batch)
        y = tf.cond(shuffle_labels, lambda: tf.roll(y, 1, axis=0), lambda: y)
        with tf.GradientTape() as tape:
            pred = net(x, training=True)
            batch_loss = tf.reduce_mean(task.per_example_loss(y, pred))
            scaled_loss = batch_loss * loss_scale
        grads = tape.gradient(scaled_loss, variables)
        state = {k: v.read_value() for k, v in clip_state.items()}
        clipped, new_state, stats = clip(grads, variables, state)
        healthy = tf.math.is_finite(batch_loss) & tf.logical_not(stats["nonfinite"])
        if healthy:
            opt.apply(clipped, variables)
            for k, v in clip_state.items():
                v.assign(new_state[k])
        record = [batch_loss, stats["norm_before"], stats["norm_after"], stats["clipped"],
                  stats["threshold"], tf.cast(stats["nonfinite"], tf.float32), task.batch_score(y, pred)]
        return tf.stack([tf.cast(r, tf.float32) for r in record])

    @tf.function(input_signature=[tf.TensorSpec([None, *x_te.shape[1:]], tf.float32)])
    def predict(x):
        return net(x, training=False)

    n_train = len(train_idx)
    steps_per_epoch = math.ceil(n_train / batch_size)
    total_steps = steps_per_epoch * epochs
    records = np.full((total_steps, len(STEP_FIELDS) + 1), np.nan, dtype=np.float64)
    step_times = np.full(total_steps, np.nan)
    shuffler = np.random.default_rng([seed, 2])
    eval_rows = []
    diverged, reason, first_loss = False, None, None
    step = images_seen = 0
    bar = _progress(total_steps, progress, f"{clip.name}/{optimizer}/lr={learning_rate:g}")
    start_wall = time.perf_counter()
    score_column = f"train_{task.score_name}"

    def record_evaluation(epoch, epoch_loss, epoch_score, seen, epoch_end):
        t0 = time.perf_counter()
        metrics = task.evaluate(predict, x_te, y_te, eval_batch_size)
        eval_rows.append({"epoch": epoch, "step": step, "epoch_end": epoch_end,
                          "train_loss": epoch_loss / seen, score_column: epoch_score / seen, **metrics,
                          "wall_time_s": time.perf_counter() - start_wall,
                          "eval_time_s": time.perf_counter() - t0})

    for epoch in range(1, epochs + 1):
        order = shuffler.permutation(n_train).astype(np.int32)
        epoch_loss = epoch_score = seen = 0.0
        for b in range(steps_per_epoch):
            batch = order[b * batch_size:(b + 1) * batch_size]
            t0 = time.perf_counter()
            spiked = (step + 1) in spike_steps
            row = train_step(batch, spike_scale if spiked else 1.0, spike_shuffle and spiked).numpy()
            step_times[step] = time.perf_counter() - t0
            records[step] = row
            step += 1
            epoch_loss += row[0] * len(batch)
            epoch_score += row[-1]
            seen += len(batch)
            images_seen += len(batch)
            bar.update(1)
            if first_loss is None:
                first_loss = row[0]
            if not math.isfinite(row[0]) or row[5] > 0:
                diverged, reason = True, "non-finite loss or gradient"
            elif step >= divergence_window and \
                    records[step - divergence_window:step, 0].mean() > divergence_factor * first_loss:
                diverged, reason = True, f"loss above {divergence_factor:g}x its start for {divergence_window} steps"
            if diverged:
                break
            if eval_every and step % eval_every == 0 and b + 1 < steps_per_epoch:
                record_evaluation(epoch, epoch_loss, epoch_score, seen, epoch_end=False)
        if diverged:
            eval_rows.append({"epoch": epoch, "step": step, "epoch_end": True, "train_loss": epoch_loss / seen,
                              score_column: epoch_score / seen, **{k: math.nan for k in task.metric_names},
                              "wall_time_s": time.perf_counter() - start_wall, "eval_time_s": 0.0})
            break
        record_evaluation(epoch, epoch_loss, epoch_score, seen, epoch_end=True)
    wall = time.perf_counter() - start_wall
    bar.close()

    steps_df = pd.DataFrame(records[:step, : len(STEP_FIELDS)], columns=list(STEP_FIELDS))
    steps_df.insert(0, "step", np.arange(1, step + 1))
    steps_df.insert(1, "epoch", np.minimum((np.arange(step) // steps_per_epoch) + 1, epochs))
    steps_df["nonfinite"] = steps_df["nonfinite"].astype(bool)
    steps_df["step_time_s"] = step_times[:step]
    epochs_df = pd.DataFrame(eval_rows)

    last = epochs_df.iloc[-1]
    finite_norms = steps_df["norm_before"][np.isfinite(steps_df["norm_before"])]
    targets = {key: (steps_to_target(epochs_df, value, column) if column in epochs_df else math.nan)
               for key, (column, value) in task.targets().items()}
    best_column = next(iter(task.targets().values()))[0]
    summary = {
        "task": task.name,
        "method": clip.name,
        "clip_params": clip.config(),
        "optimizer": optimizer,
        "learning_rate": float(learning_rate),
        "batch_size": batch_size,
        "epochs": epochs,
        "seed": seed,
        "train_images": int(n_train),
        "test_images": int(len(test_idx)),
        "steps_run": int(step),
        "steps_planned": int(total_steps),
        "final_train_loss": float(last["train_loss"]),
        **{k: (float(v) if v is not None else math.nan) for k, v in task.final_metrics(last).items()},
        f"best_{best_column}": float(epochs_df[best_column].max()) if best_column in epochs_df and epochs_df[best_column].notna().any() else math.nan,
        **targets,
        "diverged": bool(diverged),
        "divergence_reason": reason,
        "clip_fraction": float(steps_df["clipped"].mean()) if step else math.nan,
        "steps_clipped": int((steps_df["clipped"] > 0).sum()),
        "max_norm_before": float(finite_norms.max()) if len(finite_norms) else math.nan,
        "median_norm_before": float(finite_norms.median()) if len(finite_norms) else math.nan,
        "wall_time_s": wall,
        "median_step_time_s": float(np.median(step_times[:step])) if step else math.nan,
        "images_per_second": images_seen / wall if wall > 0 else math.nan,
        "parameters": int(net.count_params()),
        "versions": library_versions(),
    }
    if spike_steps:
        from clipstudy import analysis

        summary["spikes"] = dict(spikes)
        summary.update({f"spike_{k}": v for k, v in analysis.spike_recovery(steps_df, sorted(spike_steps)).items()})
    return RunResult(steps=steps_df, epochs=epochs_df, summary=summary, model=net)


def spike_plan(spikes: dict | None):
    """``(steps, loss scale, shuffle?)`` of a ``spikes`` request, checked."""
    if not spikes:
        return frozenset(), 1.0, False
    kinds = ("scale_loss", "shuffle_labels")
    kind = spikes.get("kind")
    if kind not in kinds:
        raise ValueError(f"spikes kind={kind!r} is invalid; valid choices: {', '.join(kinds)}")
    steps = spikes.get("steps")
    if not isinstance(steps, (list, tuple)) or not steps or not all(isinstance(s, int) and s >= 1 for s in steps):
        raise ValueError(f"spikes steps={steps!r} is invalid; it must be a non-empty list of step numbers ≥ 1")
    unknown = sorted(set(spikes) - {"kind", "steps", "factor"})
    if unknown:
        raise ValueError(f"spikes: unknown field(s) {', '.join(unknown)}; valid: kind, steps, factor")
    factor = float(spikes.get("factor", 100.0)) if kind == "scale_loss" else 1.0
    if not math.isfinite(factor) or factor <= 0:
        raise ValueError(f"spikes factor={factor!r} is invalid; it must be a finite number > 0")
    return frozenset(steps), factor, kind == "shuffle_labels"


def _progress(total: int, enabled: bool, description: str):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="step", leave=False, mininterval=1.0)


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass
