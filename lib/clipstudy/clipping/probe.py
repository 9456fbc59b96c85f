"""A global-norm threshold from data, for your own model: a short unclipped probe.

    from clipstudy.clipping import probe_threshold
    probe = probe_threshold(model, x_train, y_train, batch_size=128)   # model compiled, weights untouched
    print(probe)                                   # the norms' percentiles and the recommendation
    clipper = ("global_norm", {"threshold": probe.threshold})

The probe trains a copy of the model's optimizer (fresh state, same settings) without clipping for
``steps`` steps (default: one pass over array data, at most 100), records the global gradient norm of each,
and puts every weight back. The
recommended threshold is a percentile of those norms (``percentile``, default the 90th: the study's answer to
which percentile to pick), the rule the study uses for its thresholds from data (``clipstudy.study.probes``
records its norms with ``record_norms`` and reads them with ``threshold_from_norms`` below). The probe stops
early at the first non-finite norm: the rate already diverges unclipped, and the norms before it are what it has.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from clipstudy.clipping.base import global_norm

#: Optimizer steps a probe records by default.
DEFAULT_STEPS = 100
#: The percentile of the probe's norms recommended as a threshold by default: the 90th, the study's answer to
#: which percentile to pick (stage 3's Q7, docs/protocol.md: the percentile that clipped at most 90% of steps
#: and learned in the most of its cells; with SGD on the classifier the median normalised, and with the 99th,
#: which clipped 0.2% of steps, SGD collapsed). It was the median until that answer.
DEFAULT_PERCENTILE = 90.0


def record_norms(norm_of_step: Callable[[object], float], batches: Iterable, steps: int) -> np.ndarray:
    """The global gradient norms of up to ``steps`` calls of ``norm_of_step(batch)``, one per batch,
    stopping before ``steps`` at the first norm that is not finite (which is not kept)."""
    norms: list[float] = []
    for batch in batches:
        if len(norms) == steps:
            break
        norm = float(norm_of_step(batch))
        if not math.isfinite(norm):
            break
        norms.append(norm)
    return np.asarray(norms, np.float64)


def threshold_from_norms(norms, percentile: float = DEFAULT_PERCENTILE) -> float:
    """The ``percentile``-th percentile (linear interpolation, as ``numpy.percentile``) of the finite norms.

    Raises:
      ValueError: ``percentile`` outside [0, 100], or no finite norm.
    """
    if not isinstance(percentile, (int, float)) or isinstance(percentile, bool) or not 0 <= percentile <= 100:
        raise ValueError(f"percentile={percentile!r} is invalid; it must be a number in [0, 100]")
    norms = np.asarray(norms, np.float64)
    norms = norms[np.isfinite(norms)]
    if not len(norms):
        raise ValueError("the probe recorded no finite gradient norm: no threshold can be read from it")
    return float(np.percentile(norms, percentile))


@dataclass(frozen=True)
class ThresholdProbe:
    """What a probe measured: every step's global gradient norm and the recommended threshold."""

    norms: np.ndarray
    percentile: float
    threshold: float

    def percentiles(self, qs=(5, 25, 50, 75, 95, 100)) -> dict[float, float]:
        """The norms' percentiles ``qs`` (100: the largest)."""
        return {q: float(np.percentile(self.norms, q)) for q in qs}

    def clip_share(self, threshold: float | None = None) -> float:
        """The share of the probe's steps whose norm is above ``threshold`` (default: the recommended one): what a
        global-norm clipper at that threshold would have clipped over the probe. A run's later steps can clip far
        more or fewer (their norms move with training); ``docs/library.md`` has the shares the study measured."""
        norms = self.norms[np.isfinite(self.norms)]
        return float(np.mean(norms > (self.threshold if threshold is None else float(threshold))))

    def __str__(self):
        shown = ", ".join(f"p{q:g} {v:.4g}" for q, v in self.percentiles().items())
        return (
            f"gradient-norm probe over {len(self.norms)} unclipped steps: {shown}; recommended "
            f"global_norm threshold (p{self.percentile:g}) {self.threshold:.4g}, below the norm of "
            f"{self.clip_share():.0%} of these steps (a run's later steps, whose norms move, can be clipped far more "
            "or less often)"
        )


def _unclipped_step(model, loss_fn, optimizer, tf):
    """One compiled unclipped training step of ``model`` with ``optimizer`` (built here); returns the gradients'
    global norm."""
    variables = model.trainable_variables
    optimizer.build(variables)

    @tf.function
    def step(batch):
        xb, yb = batch[0], batch[1]
        with tf.GradientTape() as tape:
            value = loss_fn(yb, model(xb, training=True))
            if model.losses:
                value = value + tf.add_n(model.losses)
        grads = tape.gradient(value, variables)
        optimizer.apply(grads, variables)
        return global_norm(grads)

    return step


def probe_threshold(
    model,
    x,
    y=None,
    *,
    batch_size: int = 32,
    steps: int | None = None,
    percentile: float = DEFAULT_PERCENTILE,
    loss=None,
    optimizer=None,
    seed: int = 0,
) -> ThresholdProbe:
    """Probe ``model`` on ``(x, y)`` unclipped for ``steps`` steps and recommend a global-norm threshold.

    Args:
      model: a built Keras model. Its weights are the same afterwards.
      steps: unclipped steps to record; default one pass over array data, at most ``DEFAULT_STEPS`` (100), so a
        small data set is not trained on for many epochs; ``DEFAULT_STEPS`` for a ``tf.data.Dataset``.
      percentile: the percentile of the recorded norms to recommend (default 90). In the study (stage 3, Q7,
        each at the clipped arm's tuned rate) the 90th came within 0.002 of a tuned fixed threshold's final
        accuracy on the classifier with SGD and with momentum while clipping 4-5% and about 1% of steps; the
        median clipped every step with SGD (gradient normalisation) and cost accuracy; the 99th clipped 0.2% of
        steps and SGD collapsed to chance. A probe run at a rate that already diverges unclipped records exploding
        norms, and then no percentile bounds anything (the study's recurrent task): probe at a stable rate or
        read ``probe.percentiles()`` first. ``ThresholdProbe.clip_share`` says what share of the probe's steps a
        threshold is below; ``docs/library.md`` gives the shares the study's runs clipped.
      x, y: arrays of inputs and targets (shuffled by ``seed`` in batches of ``batch_size``), or ``x`` a
        ``tf.data.Dataset`` of ``(inputs, targets)`` batches and ``y`` None.
      loss: the loss (a name, function or ``keras.losses.Loss``); default: the model's compiled loss.
      optimizer: the optimizer to probe with; default: the model's (the optimizer inside a
        ``ClippingOptimizer``). A copy with fresh state is used; the original is not touched.

    Raises:
      ValueError: no loss or optimizer to use, bad ``steps``/``batch_size``/``percentile``, or not
        one finite norm.
    """
    from clipstudy.clipping.optimizer import keras, tf

    steps = _checked_steps(x, steps, batch_size, keras, tf)
    loss_fn = _loss(model, loss, keras)
    probe_optimizer = _fresh_optimizer(model, optimizer, keras)
    step = _unclipped_step(model, loss_fn, probe_optimizer, tf)
    saved = [v.numpy() for v in model.variables]
    try:
        norms = record_norms(step, _batches(x, y, batch_size, seed, tf), steps)
    finally:
        for variable, value in zip(model.variables, saved):
            variable.assign(value)
    return ThresholdProbe(norms=norms, percentile=float(percentile), threshold=threshold_from_norms(norms, percentile))


def _checked_steps(x, steps, batch_size, keras, tf) -> int:
    """The probe's step count (default: one pass over array data, at most ``DEFAULT_STEPS``), after checking the
    backend, ``steps`` and ``batch_size``."""
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"probe_threshold runs on the TensorFlow backend (it takes gradients with tf.GradientTape); this Keras "
            f"runs on {keras.backend.backend()!r}. Probe under TensorFlow, or fit with ClippingOptimizer(inner, "
            "'none') and ClipTelemetry, which record clip_norm_before on every backend"
        )
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"probe_threshold: batch_size={batch_size!r} is invalid; it must be an integer ≥ 1")
    if steps is None:
        one_pass = DEFAULT_STEPS if isinstance(x, tf.data.Dataset) else -(-len(x) // batch_size)
        steps = max(1, min(DEFAULT_STEPS, one_pass))
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"probe_threshold: steps={steps!r} is invalid; it must be an integer ≥ 1")
    return steps


def _loss(model, loss, keras):
    chosen = loss if loss is not None else getattr(model, "loss", None)
    if chosen is None:
        raise ValueError("probe_threshold: the model is not compiled with a loss; compile it or pass loss=")
    if isinstance(chosen, (list, tuple, dict)):
        raise ValueError("probe_threshold: the model has one loss per output; pass loss= for a single-output probe")
    return keras.losses.get(chosen)


def _fresh_optimizer(model, optimizer, keras):
    chosen = optimizer if optimizer is not None else getattr(model, "optimizer", None)
    if chosen is None:
        raise ValueError("probe_threshold: the model is not compiled with an optimizer; compile it or pass optimizer=")
    chosen = keras.optimizers.get(chosen)
    while getattr(chosen, "inner_optimizer", None) is not None:  # unwrap ClippingOptimizer (the probe is
        chosen = chosen.inner_optimizer  # unclipped) and LossScaleOptimizer (the probe runs unscaled)
    return keras.optimizers.deserialize(keras.optimizers.serialize(chosen))


def _batches(x, y, batch_size, seed, tf):
    if isinstance(x, tf.data.Dataset):
        if y is not None:
            raise ValueError("probe_threshold: with a tf.data.Dataset as x, y must be None (the dataset yields both)")
        while True:  # as many passes as the steps need
            yield from x
    if y is None:
        raise ValueError("probe_threshold: give the targets y with array inputs x")
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"probe_threshold: x has {len(x)} examples and y {len(y)}")
    shuffler = np.random.default_rng(seed)
    while True:
        order = shuffler.permutation(len(x))
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            yield (tf.constant(x[index]), tf.constant(y[index]))
