"""The clipping methods: the study's seven, then AdaGC and quantile tracking (2025, 2021) for the library.
Defining a ``Clipper`` subclass registers it.

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

from clipstudy.clipping.base import (
    _NAN,
    Clipper,
    check_positive,
    num_elements,
    scale_to_global_norm,
    unitwise_norm,
    wide,
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

    def _clip(self, xp, grads, variables, state, norm):
        out, n_out, n_all = [], [], 0
        for g in grads:
            if g is None:
                out.append(None)
                continue
            out.append(xp.clip(g, self.lower, self.upper))
            n_out.append(xp.sum(xp.cast((g > self.upper) | (g < self.lower), xp.float32)))
            n_all += num_elements(g)
        fraction = xp.add_n(n_out) / max(n_all, 1) if n_out else 0.0
        return out, state, fraction, self.upper

    def config(self):
        return {"lower": self.lower, "upper": self.upper}


class NormClip(Clipper):
    """Rescale each tensor to L2 norm ≤ threshold, as Keras ``clipnorm`` does (per variable)."""

    name = "norm"
    flops_per_parameter = 4

    def __init__(self, threshold: float = 1.0):
        self.threshold = check_positive("norm", "threshold", threshold)

    def _clip(self, xp, grads, variables, state, norm):
        t = self.threshold
        out, hits = [], []
        for g in grads:
            if g is None:
                out.append(None)
                continue
            gw = wide(g, xp)  # the same tensor for float32 gradients (so Keras' bits); float32 for float16
            l2sum = xp.sum(xp.square(gw))
            # Keras' two-tap where: an all-zero gradient stays zero instead of 0/0.
            l2norm = xp.where(l2sum > 0, xp.sqrt(xp.where(l2sum > 0, l2sum, xp.ones_like(l2sum))), l2sum)
            # Keras' expression where it clips; the gradient untouched where it does not.
            out.append(xp.where(l2norm > t, xp.cast(gw * t / xp.maximum(l2norm, t), g.dtype), g))
            hits.append(xp.cast(l2norm > t, xp.float32))
        fraction = xp.mean(xp.stack(hits)) if hits else 0.0
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

    def _clip(self, xp, grads, variables, state, norm):
        return scale_to_global_norm(grads, norm, self.threshold, xp=xp), state, norm > self.threshold, self.threshold

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

    def _clip(self, xp, grads, variables, state, norm):
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
            max_norm = xp.maximum(unitwise_norm(xp.convert(w), xp), self.eps) * self.clip_factor
            g_norm = unitwise_norm(g, xp)
            trigger = g_norm < max_norm
            # The 1e-6 only guards 0/0; it cannot engage when clipping is triggered.
            scaled = wide(g, xp) * (max_norm / xp.maximum(g_norm, 1e-6))
            out.append(xp.where(trigger, g, xp.cast(scaled, g.dtype)))
            hits.append(xp.sum(xp.cast(xp.logical_not(trigger), xp.float32)))
            units += max(num_elements(g_norm), 1)
        fraction = xp.add_n(hits) / units if hits else 0.0
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

    def _init(self, variables, xp):
        return {"norms": xp.zeros(self.history, xp.float32), "count": xp.constant(0, xp.count_dtype)}

    def _clip(self, xp, grads, variables, state, norm):
        # a zero norm (a dead or converged step) says nothing of the gradient's scale: kept out of the history,
        # so the percentile never collapses to 0 and clips every later step to nothing
        finite = xp.is_finite(norm) & (norm > 0)
        slot = state["count"] % self.history
        norms = xp.where(finite, xp.set_item(state["norms"], slot, norm), state["norms"])
        count = state["count"] + xp.cast(finite, state["count"].dtype)
        filled = xp.minimum(count, self.history)
        threshold = xp.percentile_of_first(norms, filled, self.percentile)
        threshold = xp.where(filled > 0, threshold, _NAN)
        clipped = scale_to_global_norm(grads, norm, threshold, xp=xp)
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

    def _init(self, variables, xp):
        return {
            "warmup": xp.zeros(self.warmup_steps, xp.float32),
            "count": xp.constant(0, xp.count_dtype),
            "mean": xp.constant(0.0),
            "var": xp.constant(0.0),
        }

    def _clip(self, xp, grads, variables, state, norm):
        a, zt = self.alpha, self.z_thresh
        finite = xp.is_finite(norm)
        warming = state["count"] < self.warmup_steps
        ready = xp.logical_not(warming) & finite

        # Warm-up: collect the norm; on the last warm-up step, start the EMA from the buffer.
        slot = xp.minimum(state["count"], self.warmup_steps - 1)
        buffer = xp.where(warming & finite, xp.set_item(state["warmup"], slot, norm), state["warmup"])
        count = state["count"] + xp.cast(finite, state["count"].dtype)
        starts = warming & finite & xp.equal(count, self.warmup_steps)
        start_mean = xp.mean(buffer)
        start_var = xp.mean(xp.square(buffer - start_mean))

        # After warm-up: z-score test against the EMA, clip, feed the (clipped) norm back.
        std = xp.sqrt(state["var"])
        z = (norm - state["mean"]) / (std + self.eps)
        spike = ready & (z > zt)
        target = state["mean"] + zt * std / (z / zt)
        trigger_level = state["mean"] + zt * (std + self.eps)
        fed = xp.where(spike, target, norm)
        ema_mean = a * state["mean"] + (1 - a) * fed
        ema_var = a * state["var"] + (1 - a) * xp.square(fed - ema_mean)

        mean = xp.where(starts, start_mean, xp.where(ready, ema_mean, state["mean"]))
        var = xp.where(starts, start_var, xp.where(ready, ema_var, state["var"]))
        clipped = scale_to_global_norm(grads, norm, target, trigger=spike, xp=xp)
        threshold = xp.where(warming, _NAN, trigger_level)
        new_state = {"warmup": buffer, "count": count, "mean": mean, "var": var}
        return clipped, new_state, spike, threshold

    def config(self):
        return {"alpha": self.alpha, "z_thresh": self.z_thresh, "warmup_steps": self.warmup_steps, "eps": self.eps}


class AdaGC(Clipper):
    """Per-tensor clipping against an EMA of each tensor's own (clipped) gradient norm.

    Wang et al., 2025, "AdaGC: Improving Training Stability for Large Language Model Pretraining"
    (https://arxiv.org/abs/2502.11034), as the authors' release (lishuai-97/AdaGC, its Megatron patch)
    computes it. For the first ``warmup_steps`` steps: global-norm clipping at ``lambda_abs`` with the
    release's coefficient ``lambda_abs / (norm + eps)`` (applied where it is below 1), and each tensor's
    reference ``γ_i`` starts as the smallest norm its clipped gradient had. Afterwards, for each tensor,
    with ``n_i`` its gradient's norm: where ``n_i > lambda_rel · γ_i`` the gradient is multiplied by
    ``lambda_rel · γ_i / (n_i + eps)`` and ``n_i`` is replaced by ``lambda_rel · γ_i``; then
    ``γ_i ← beta · γ_i + (1 − beta) · n_i``.

    Telemetry: ``clipped`` is 0/1 during warm-up and the share of tensors clipped after it; ``threshold``
    is ``lambda_abs`` during warm-up, then ``‖(lambda_rel · γ_i)_i‖``, the largest global norm a clipped
    step can leave. Departures from the release: a step whose gradient is not finite leaves every ``γ_i``
    and the step count alone (the release counts it and lets the NaN into its state); a tensor that had no
    gradient during warm-up starts from its first norm, as the release does for a tensor it has no state for.
    """

    name = "adagc"
    flops_per_parameter = 4

    def __init__(
        self,
        lambda_rel: float = 1.04,
        beta: float = 0.99,
        lambda_abs: float = 1.0,
        warmup_steps: int = 100,
        eps: float = 1e-6,
    ):
        self.lambda_rel = check_positive("adagc", "lambda_rel", lambda_rel)
        if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not 0 <= beta < 1:
            raise ValueError(f"adagc: beta={beta!r} is invalid; it must be in [0, 1)")
        self.beta = float(beta)
        self.lambda_abs = check_positive("adagc", "lambda_abs", lambda_abs)
        if not isinstance(warmup_steps, int) or isinstance(warmup_steps, bool) or warmup_steps < 0:
            raise ValueError(f"adagc: warmup_steps={warmup_steps!r} is invalid; it must be an integer ≥ 0")
        self.warmup_steps = warmup_steps
        self.eps = check_positive("adagc", "eps", eps)

    def _init(self, variables, xp):
        # +inf: "no reference yet" (the warm-up minimum starts from it; a tensor still without one takes
        # its first norm).
        return {"gamma": xp.fill(len(variables), float("inf")), "count": xp.constant(0, xp.count_dtype)}

    def _clip(self, xp, grads, variables, state, norm):
        if len(variables) != len(grads):
            raise ValueError(
                f"adagc: got {len(grads)} gradients but {len(variables)} variables; keep one reference per tensor"
            )
        finite = xp.is_finite(norm)
        warming = state["count"] < self.warmup_steps
        gamma = state["gamma"]

        # Warm-up: global clipping with the release's coefficient, then the running minimum per tensor.
        coeff = self.lambda_abs / (norm + self.eps)
        global_hit = coeff < 1.0
        warm_grads = [None if g is None else xp.where(global_hit, g * xp.cast(coeff, g.dtype), g) for g in grads]

        out, new_gamma, hits, present = [], [], [], 0
        for i, g in enumerate(grads):
            if g is None:
                out.append(None)
                new_gamma.append(gamma[i])
                continue
            present += 1
            n_warm = xp.norm(wide(warm_grads[i], xp))
            n = xp.norm(wide(g, xp))
            reference = xp.where(xp.is_inf(gamma[i]), n, gamma[i])
            limit = self.lambda_rel * reference
            hit = n > limit
            factor = limit / (n + self.eps)
            clipped_g = xp.where(hit, xp.cast(wide(g, xp) * factor, g.dtype), g)
            fed = xp.where(hit, limit, n)
            gamma_after = xp.where(
                warming,
                xp.minimum(gamma[i], n_warm),
                reference * self.beta + fed * (1.0 - self.beta),
            )
            new_gamma.append(xp.where(finite, gamma_after, gamma[i]))
            out.append(xp.where(warming, warm_grads[i], clipped_g))
            hits.append(xp.cast(hit, xp.float32))
        new_gamma = xp.stack(new_gamma) if new_gamma else gamma
        share = xp.add_n(hits) / present if hits else 0.0
        clipped = xp.where(warming, xp.cast(global_hit, xp.float32), share)
        limits = xp.where(xp.is_inf(gamma), 0.0, self.lambda_rel * gamma)
        threshold = xp.where(warming, self.lambda_abs, xp.norm(limits))
        count = state["count"] + xp.cast(finite, state["count"].dtype)
        return out, {"gamma": new_gamma, "count": count}, clipped, threshold

    def config(self):
        return {
            "lambda_rel": self.lambda_rel,
            "beta": self.beta,
            "lambda_abs": self.lambda_abs,
            "warmup_steps": self.warmup_steps,
            "eps": self.eps,
        }


class QuantileClip(Clipper):
    """Global-norm clipping at a threshold that tracks a target quantile of the norm, with O(1) state.

    Andrew et al., 2021, "Differentially Private Learning with Adaptive Clipping"
    (https://arxiv.org/abs/1905.03871), the geometric update of TF-Privacy's quantile estimator, here
    without noise and with one norm per step: the step is clipped at the current threshold ``C`` (Keras'
    ``global_clipnorm`` expression), then ``C ← C · exp(−learning_rate · (b − target_quantile))`` with
    ``b = 1`` where the norm was ``≤ C`` and 0 otherwise. ``C`` settles where a share ``target_quantile``
    of the norms lies below it. A non-finite step leaves ``C`` alone (upstream would count it as above).
    """

    name = "quantile"
    flops_per_parameter = 3

    def __init__(self, initial_threshold: float = 0.1, target_quantile: float = 0.5, learning_rate: float = 0.2):
        self.initial_threshold = check_positive("quantile", "initial_threshold", initial_threshold)
        if (
            not isinstance(target_quantile, (int, float))
            or isinstance(target_quantile, bool)
            or not 0 < target_quantile < 1
        ):
            raise ValueError(f"quantile: target_quantile={target_quantile!r} is invalid; it must be in (0, 1)")
        self.target_quantile = float(target_quantile)
        self.learning_rate = check_positive("quantile", "learning_rate", learning_rate)

    def _init(self, variables, xp):
        return {"threshold": xp.constant(self.initial_threshold, xp.float32)}

    def _clip(self, xp, grads, variables, state, norm):
        c = state["threshold"]
        below = xp.cast(norm <= c, xp.float32)
        moved = c * xp.exp(-(self.learning_rate * (below - self.target_quantile)))
        new_c = xp.where(xp.is_finite(norm), moved, c)
        return scale_to_global_norm(grads, norm, c, xp=xp), {"threshold": new_c}, norm > c, c

    def config(self):
        return {
            "initial_threshold": self.initial_threshold,
            "target_quantile": self.target_quantile,
            "learning_rate": self.learning_rate,
        }
