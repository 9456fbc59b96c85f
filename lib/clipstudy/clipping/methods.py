"""The seven clipping methods of the study. Defining a ``Clipper`` subclass registers it.

Every method is a ``Clipper``::

    clipper = clipping.get("global_norm", threshold=5.0)
    state = clipper.init(model.trainable_variables)
    grads, state, stats = clipper(grads, model.trainable_variables, state)

``state`` is a dict of tensors (empty for stateless methods): the caller keeps it, so a
clipper holds no hidden state and runs the same eagerly and inside ``tf.function``.
``None`` gradients pass through untouched. ``stats`` holds scalar tensors:

* ``norm_before`` / ``norm_after``: global L2 norm of the gradients before and after clipping;
* ``clipped``: share of the method's units that were clipped, in [0, 1]: 0 or 1 for the
  global methods, the fraction of elements for ``value``, of tensors for ``norm``, of
  output units for ``agc``;
* ``threshold``: the global norm above which the method clips (``value``: its upper bound;
  ``agc``: its clip factor; ``none`` and warm-up steps: NaN);
* ``nonfinite``: the gradient holds inf or NaN. Such a step is reported, never repaired:
  the gradients come back as they were and the adaptive methods leave their state alone,
  so the training loop can stop the run (``clipstudy.training`` does).

Where a method clips, global rescaling uses the expression of Keras' ``global_clipnorm``
(``g * t * min(1/n, 1/t)``) and per-tensor rescaling that of Keras' ``clipnorm``
(``g * t / max(n, t)``), so matching settings give the same weights as Keras' optimizers;
where it does not clip, the gradients come back bit for bit (Keras multiplies by t/t).
"""

from __future__ import annotations

from clipstudy._quiet import tf
from clipstudy.clipping.base import (
    _NAN,
    Clipper,
    check_positive,
    percentile_linear,
    scale_to_global_norm,
    unitwise_norm,
)


class NoClip(Clipper):
    """Identity: the unclipped baseline, with the same telemetry as the others."""

    name = "none"


class ValueClip(Clipper):
    """Clip each element to [lower, upper]: ``g = max(min(g, upper), lower)``.

    Matches Keras ``clipvalue`` and torch ``clip_grad_value_`` for symmetric bounds.
    """

    name = "value"
    flops_per_parameter = 3
    reference_params = {"threshold": 5.0}  # the article's bound

    def __init__(self, threshold: float | None = None, lower: float | None = None, upper: float | None = None):
        if threshold is None and (lower is None or upper is None):
            raise ValueError("value: give threshold (bounds ±threshold) or both lower and upper")
        if threshold is not None:
            threshold = check_positive("value", "threshold", threshold)
        self.upper = float(upper) if upper is not None else threshold
        self.lower = float(lower) if lower is not None else -threshold
        if not self.lower < self.upper:
            raise ValueError(f"value: lower={self.lower!r} must be below upper={self.upper!r}")

    def _clip(self, grads, variables, state, norm):
        out, n_out, n_all = [], [], 0
        for g in grads:
            if g is None:
                out.append(None)
                continue
            out.append(tf.clip_by_value(g, self.lower, self.upper))
            n_out.append(tf.reduce_sum(tf.cast((g > self.upper) | (g < self.lower), tf.float32)))
            n_all += g.shape.num_elements()
        fraction = tf.add_n(n_out) / max(n_all, 1) if n_out else 0.0
        return out, state, fraction, self.upper

    def config(self):
        return {"lower": self.lower, "upper": self.upper}


class NormClip(Clipper):
    """Rescale each tensor to L2 norm ≤ threshold, as Keras ``clipnorm`` does (per variable)."""

    name = "norm"
    flops_per_parameter = 4

    def __init__(self, threshold: float = 1.0):
        self.threshold = check_positive("norm", "threshold", threshold)

    def _clip(self, grads, variables, state, norm):
        t = self.threshold
        out, hits = [], []
        for g in grads:
            if g is None:
                out.append(None)
                continue
            l2sum = tf.reduce_sum(tf.square(g))
            # Keras' two-tap where: an all-zero gradient stays zero instead of 0/0.
            l2norm = tf.where(l2sum > 0, tf.sqrt(tf.where(l2sum > 0, l2sum, tf.ones_like(l2sum))), l2sum)
            # Keras' expression where it clips; the gradient untouched where it does not.
            out.append(tf.where(l2norm > t, g * t / tf.maximum(l2norm, t), g))
            hits.append(tf.cast(l2norm > t, tf.float32))
        fraction = tf.reduce_mean(tf.stack(hits)) if hits else 0.0
        return out, state, fraction, t

    def config(self):
        return {"threshold": self.threshold}


class GlobalNormClip(Clipper):
    """Rescale all gradients together to global L2 norm ≤ threshold.

    Matches Keras ``global_clipnorm``, torch ``clip_grad_norm_`` and optax ``clip_by_global_norm``
    (Pascanu et al., 2013, https://arxiv.org/abs/1211.5063).
    """

    name = "global_norm"
    flops_per_parameter = 3

    def __init__(self, threshold: float = 1.0):
        self.threshold = check_positive("global_norm", "threshold", threshold)

    def _clip(self, grads, variables, state, norm):
        return scale_to_global_norm(grads, norm, self.threshold), state, norm > self.threshold, self.threshold

    def config(self):
        return {"threshold": self.threshold}


class AdaptiveGradClip(Clipper):
    """Unit-wise AGC: ``‖g_u‖ ≤ λ · max(‖w_u‖, eps)`` for every output unit u.

    Brock et al., 2021, "High-Performance Large-Scale Image Recognition Without
    Normalization" (https://arxiv.org/abs/2102.06171); same rule as optax
    ``adaptive_grad_clip``, with units laid out as Keras stores kernels (HWIO, IO).
    """

    name = "agc"
    flops_per_parameter = 7

    def __init__(self, clip_factor: float = 0.01, eps: float = 1e-3):
        self.clip_factor = check_positive("agc", "clip_factor", clip_factor)
        self.eps = check_positive("agc", "eps", eps)

    def _clip(self, grads, variables, state, norm):
        if len(variables) != len(grads):
            raise ValueError(
                f"agc: got {len(grads)} gradients but {len(variables)} variables; "
                "pass the variables the gradients belong to"
            )
        out, hits, units = [], [], 0
        for g, w in zip(grads, variables):
            if g is None:
                out.append(None)
                continue
            max_norm = tf.maximum(unitwise_norm(tf.convert_to_tensor(w)), self.eps) * self.clip_factor
            g_norm = unitwise_norm(g)
            trigger = g_norm < max_norm
            # The 1e-6 only guards 0/0; it cannot engage when clipping is triggered.
            out.append(tf.where(trigger, g, g * (max_norm / tf.maximum(g_norm, 1e-6))))
            hits.append(tf.reduce_sum(tf.cast(tf.logical_not(trigger), tf.float32)))
            units += max(g_norm.shape.num_elements(), 1)
        fraction = tf.add_n(hits) / units if hits else 0.0
        return out, state, fraction, self.clip_factor

    def config(self):
        return {"clip_factor": self.clip_factor, "eps": self.eps}


class AutoClip(Clipper):
    """Clip the global norm at the ``percentile``-th percentile of the norms seen so far.

    Seetharaman et al., 2020, "AutoClip: Adaptive Gradient Clipping for Source Separation
    Networks" (https://arxiv.org/abs/2007.14469), repo pseeth/autoclip: the current norm is
    added to the history first, then the percentile (linear interpolation, as
    ``numpy.percentile``) is taken. The history keeps the last ``history`` norms; with the
    default 10,000 it is the whole history for every run of this study.
    """

    name = "autoclip"
    flops_per_parameter = 3

    def __init__(self, percentile: float = 10.0, history: int = 10_000):
        if not isinstance(percentile, (int, float)) or isinstance(percentile, bool) or not 0 < percentile <= 100:
            raise ValueError(f"autoclip: percentile={percentile!r} is invalid; it must be in (0, 100]")
        if not isinstance(history, int) or isinstance(history, bool) or history < 1:
            raise ValueError(f"autoclip: history={history!r} is invalid; it must be an integer ≥ 1")
        self.percentile = float(percentile)
        self.history = history

    def init(self, variables):
        return {"norms": tf.zeros([self.history], tf.float32), "count": tf.constant(0, tf.int64)}

    def _clip(self, grads, variables, state, norm):
        finite = tf.math.is_finite(norm)
        slot = tf.cast(state["count"] % self.history, tf.int32)
        norms = tf.where(finite, tf.tensor_scatter_nd_update(state["norms"], [[slot]], [norm]), state["norms"])
        count = state["count"] + tf.cast(finite, tf.int64)
        filled = tf.cast(tf.minimum(count, self.history), tf.int32)
        threshold = percentile_linear(norms[: tf.maximum(filled, 1)], self.percentile)
        threshold = tf.where(filled > 0, threshold, _NAN)
        clipped = scale_to_global_norm(grads, norm, threshold)
        return clipped, {"norms": norms, "count": count}, norm > threshold, threshold

    def config(self):
        return {"percentile": self.percentile, "history": self.history}


class ZClip(Clipper):
    """Z-score clipping of the global norm against its exponential moving mean and variance.

    Kumar et al., 2025, "ZClip: Adaptive Spike Mitigation for LLM Pre-Training"
    (https://arxiv.org/abs/2504.02507), repo bluorion-com/ZClip, ``zscore`` mode with
    ``adaptive_scaling`` and no fixed cap. The first ``warmup_steps`` norms are only collected;
    their mean and (population) variance start the EMA. Afterwards, with
    ``z = (n - mean) / (std + eps)``, a step with ``z > z_thresh`` is clipped to
    ``mean + z_thresh · std / (z / z_thresh)`` and the EMA is fed that clipped norm:
    ``mean ← α·mean + (1-α)·x``, ``var ← α·var + (1-α)·(x - mean)²`` (with the new mean).
    """

    name = "zclip"
    flops_per_parameter = 3

    def __init__(self, alpha: float = 0.97, z_thresh: float = 2.5, warmup_steps: int = 25, eps: float = 1e-6):
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 < alpha < 1:
            raise ValueError(f"zclip: alpha={alpha!r} is invalid; it must be in (0, 1)")
        if not isinstance(warmup_steps, int) or isinstance(warmup_steps, bool) or warmup_steps < 1:
            raise ValueError(f"zclip: warmup_steps={warmup_steps!r} is invalid; it must be an integer ≥ 1")
        self.alpha = float(alpha)
        self.z_thresh = check_positive("zclip", "z_thresh", z_thresh)
        self.warmup_steps = warmup_steps
        self.eps = check_positive("zclip", "eps", eps)

    def init(self, variables):
        return {
            "warmup": tf.zeros([self.warmup_steps], tf.float32),
            "count": tf.constant(0, tf.int64),
            "mean": tf.constant(0.0),
            "var": tf.constant(0.0),
        }

    def _clip(self, grads, variables, state, norm):
        a, zt = self.alpha, self.z_thresh
        finite = tf.math.is_finite(norm)
        warming = state["count"] < self.warmup_steps
        ready = tf.logical_and(tf.logical_not(warming), finite)

        # Warm-up: collect the norm; on the last warm-up step, start the EMA from the buffer.
        slot = tf.cast(tf.minimum(state["count"], self.warmup_steps - 1), tf.int32)
        buffer = tf.where(
            warming & finite, tf.tensor_scatter_nd_update(state["warmup"], [[slot]], [norm]), state["warmup"]
        )
        count = state["count"] + tf.cast(finite, tf.int64)
        starts = warming & finite & tf.equal(count, self.warmup_steps)
        start_mean = tf.reduce_mean(buffer)
        start_var = tf.reduce_mean(tf.square(buffer - start_mean))

        # After warm-up: z-score test against the EMA, clip, feed the (clipped) norm back.
        std = tf.sqrt(state["var"])
        z = (norm - state["mean"]) / (std + self.eps)
        spike = ready & (z > zt)
        target = state["mean"] + zt * std / (z / zt)
        trigger_level = state["mean"] + zt * (std + self.eps)
        fed = tf.where(spike, target, norm)
        ema_mean = a * state["mean"] + (1 - a) * fed
        ema_var = a * state["var"] + (1 - a) * tf.square(fed - ema_mean)

        mean = tf.where(starts, start_mean, tf.where(ready, ema_mean, state["mean"]))
        var = tf.where(starts, start_var, tf.where(ready, ema_var, state["var"]))
        clipped = scale_to_global_norm(grads, norm, target, trigger=spike)
        threshold = tf.where(warming, _NAN, trigger_level)
        new_state = {"warmup": buffer, "count": count, "mean": mean, "var": var}
        return clipped, new_state, spike, threshold

    def config(self):
        return {"alpha": self.alpha, "z_thresh": self.z_thresh, "warmup_steps": self.warmup_steps, "eps": self.eps}
