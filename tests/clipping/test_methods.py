"""Each clipping method against an independent reference: Keras' built-in clipping, NumPy
formulas, and threshold sequences computed by hand from the papers' rules."""

import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from clipstudy import clipping


def random_model_variables(rng):
    """Variables shaped like a small conv net's: HWIO kernel, bias, IO kernel, bias."""
    shapes = [(3, 3, 2, 4), (4,), (36, 5), (5,)]
    return [tf.Variable(rng.normal(size=s).astype(np.float32)) for s in shapes]


def numpy_global_norm(arrays):
    return math.sqrt(sum(float(np.sum(np.asarray(a, np.float64) ** 2)) for a in arrays if a is not None))


def scripted_grads(norm):
    """A one-tensor gradient whose global norm is ``norm`` (a 3-4-5 triangle scaled)."""
    return [tf.constant([0.6 * norm, 0.8 * norm], tf.float32)]


def run_series(clipper, norms):
    variables = [tf.Variable([1.0, 1.0])]
    state = clipper.init(variables)
    out = []
    for n in norms:
        _, state, stats = clipper(scripted_grads(n), variables, state)
        out.append({k: float(v) for k, v in stats.items()})
    return out, state


# --- value, norm, global_norm give the weights Keras' own clipping gives --------------------

KERAS_EQUIVALENTS = [
    ("value", {"threshold": 0.5}, {"clipvalue": 0.5}),
    ("norm", {"threshold": 1.0}, {"clipnorm": 1.0}),
    ("global_norm", {"threshold": 1.0}, {"global_clipnorm": 1.0}),
]


@pytest.mark.parametrize("method, params, keras_kwargs", KERAS_EQUIVALENTS)
@pytest.mark.parametrize("optimizer", [keras.optimizers.SGD, keras.optimizers.Adam])
def test_weights_after_a_step_match_keras_builtin_clipping(rng, method, params, keras_kwargs, optimizer):
    theirs = random_model_variables(rng)
    ours = [tf.Variable(v.numpy()) for v in theirs]
    grads = [tf.constant(rng.normal(scale=3.0, size=v.shape).astype(np.float32)) for v in theirs]

    optimizer(learning_rate=0.1, **keras_kwargs).apply(grads, theirs)
    clipper = clipping.get(method, **params)
    clipped, _, stats = clipper(grads, ours, clipper.init(ours))
    optimizer(learning_rate=0.1).apply(clipped, ours)

    assert float(stats["clipped"]) > 0, "the test gradients must be large enough to be clipped"
    for a, b in zip(theirs, ours):
        np.testing.assert_array_equal(b.numpy(), a.numpy())


def test_value_clipping_uses_asymmetric_bounds_and_counts_clipped_elements():
    g = [tf.constant([-3.0, -1.0, 0.5, 2.0, 9.0])]
    clipper = clipping.get("value", lower=-2.0, upper=1.0)
    out, _, stats = clipper(g, [tf.zeros(5)], {})
    np.testing.assert_array_equal(out[0].numpy(), [-2.0, -1.0, 0.5, 1.0, 1.0])
    assert float(stats["clipped"]) == pytest.approx(3 / 5)
    assert float(stats["threshold"]) == 1.0


# --- agc against a NumPy transcription of the unit-wise rule ------------------------------------


def numpy_unitwise_norm(x):
    x = np.asarray(x, np.float64)
    if x.ndim <= 1:
        return np.sqrt(np.sum(x**2))
    if x.ndim == 2:  # Dense kernel (in, out): one unit per output column
        return np.sqrt(np.sum(x**2, axis=0, keepdims=True))
    return np.sqrt(np.sum(x**2, axis=(0, 1, 2), keepdims=True))  # Conv2D kernel HWIO


def numpy_agc(grad, weight, clip_factor, eps):
    max_norm = np.maximum(numpy_unitwise_norm(weight), eps) * clip_factor
    g_norm = numpy_unitwise_norm(grad)
    scaled = np.asarray(grad, np.float64) * (max_norm / np.maximum(g_norm, 1e-6))
    return np.where(g_norm < max_norm, grad, scaled), np.sum(g_norm >= max_norm), np.size(g_norm)


def test_agc_matches_numpy_unitwise_rule_for_conv_and_dense_kernels(rng):
    variables = random_model_variables(rng)
    # Mix of units above and below the limit: scale some gradients up, some down.
    grads = [
        tf.constant((rng.normal(size=v.shape) * rng.choice([0.001, 0.5], size=v.shape[-1:])).astype(np.float32))
        for v in variables
    ]
    clipper = clipping.get("agc", clip_factor=0.05, eps=1e-3)
    out, _, stats = clipper(grads, variables, {})
    clipped_units = total_units = 0
    for g, w, o in zip(grads, variables, out):
        expected, n_clipped, n_units = numpy_agc(g.numpy(), w.numpy(), 0.05, 1e-3)
        np.testing.assert_allclose(o.numpy(), expected, rtol=1e-5, atol=1e-8)
        clipped_units += n_clipped
        total_units += n_units
    assert 0 < clipped_units < total_units
    assert float(stats["clipped"]) == pytest.approx(clipped_units / total_units)


def test_agc_uses_eps_for_zero_initialised_weights():
    # A zero bias would otherwise allow no update at all: eps sets its floor.
    g = [tf.constant([3.0, 4.0])]
    out, _, _ = clipping.get("agc", clip_factor=0.1, eps=1e-3)(g, [tf.zeros(2)], {})
    np.testing.assert_allclose(out[0].numpy(), np.array([3.0, 4.0]) / 5.0 * 1e-4, rtol=1e-6)


# --- autoclip: percentile of the norm history, current norm included -------------------------


def test_autoclip_thresholds_follow_the_hand_computed_median_of_the_history():
    # history after each step and its median (linear interpolation):
    # [4] -> 4; [4,2] -> 3; [4,2,8] -> 4; [4,2,8,1] -> 3; [4,2,8,1,10] -> 4
    stats, _ = run_series(clipping.get("autoclip", percentile=50), [4, 2, 8, 1, 10])
    assert [s["threshold"] for s in stats] == pytest.approx([4, 3, 4, 3, 4])
    assert [s["clipped"] for s in stats] == [0, 0, 1, 0, 1]
    assert [s["norm_after"] for s in stats] == pytest.approx([4, 2, 4, 1, 4], rel=1e-6)


def test_autoclip_matches_numpy_percentile_over_a_sliding_history(rng):
    norms = rng.lognormal(mean=0.0, sigma=1.0, size=40)
    stats, _ = run_series(clipping.get("autoclip", percentile=10, history=16), norms)
    for i, s in enumerate(stats):
        window = norms[max(0, i - 15) : i + 1]
        assert s["threshold"] == pytest.approx(np.percentile(window, 10), rel=1e-5)
        assert s["norm_after"] == pytest.approx(min(norms[i], np.percentile(window, 10)), rel=1e-5)


# --- zclip: warm-up, then z-score against an EMA -----------------------------------------------


def test_zclip_warmup_then_clips_a_spike_by_the_papers_rule():
    alpha, zt, eps = 0.5, 2.5, 1e-6
    stats, state = run_series(clipping.get("zclip", alpha=alpha, z_thresh=zt, warmup_steps=3), [1, 2, 3, 10, 2])
    # Warm-up: no threshold in force, nothing clipped.
    assert all(math.isnan(s["threshold"]) for s in stats[:3])
    assert [s["clipped"] for s in stats] == [0, 0, 0, 1, 0]
    # The EMA starts from the warm-up buffer's mean 2 and population variance 2/3.
    mean, var = 2.0, 2.0 / 3.0
    std = math.sqrt(var)
    z = (10 - mean) / (std + eps)
    target = mean + zt * std / (z / zt)
    assert stats[3]["threshold"] == pytest.approx(mean + zt * (std + eps), rel=1e-6)
    assert stats[3]["norm_after"] == pytest.approx(target, rel=1e-5)
    # The clipped norm, not the spike, feeds the EMA; the variance uses the updated mean.
    mean = alpha * mean + (1 - alpha) * target
    var = alpha * var + (1 - alpha) * (target - mean) ** 2
    std = math.sqrt(var)
    assert stats[4]["threshold"] == pytest.approx(mean + zt * (std + eps), rel=1e-5)
    assert stats[4]["norm_after"] == pytest.approx(2.0, rel=1e-6)  # below the threshold: untouched
    mean = alpha * mean + (1 - alpha) * 2.0
    var = alpha * var + (1 - alpha) * (2.0 - mean) ** 2
    assert float(state["mean"]) == pytest.approx(mean, rel=1e-6)
    assert float(state["var"]) == pytest.approx(var, rel=1e-5)


# --- properties every method shares ------------------------------------------------------------

BIG = {
    "value": {"threshold": 1e6},
    "norm": {"threshold": 1e6},
    "global_norm": {"threshold": 1e6},
    "agc": {"clip_factor": 1e6},
    "autoclip": {"percentile": 100},
    "zclip": {},
    "adagc": {"lambda_abs": 1e6},
    "quantile": {"initial_threshold": 1e6},
    "none": {},
}


@pytest.mark.parametrize("method", clipping.METHODS)
def test_below_the_threshold_a_clip_is_the_identity(rng, method):
    variables = random_model_variables(rng)
    grads = [tf.constant(rng.normal(size=v.shape).astype(np.float32)) for v in variables]
    clipper = clipping.get(method, **BIG[method])
    state = clipper.init(variables)
    for _ in range(3):
        out, state, stats = clipper(grads, variables, state)
        for g, o in zip(grads, out):
            np.testing.assert_array_equal(o.numpy(), g.numpy())
        assert float(stats["clipped"]) == 0
        assert float(stats["norm_after"]) == pytest.approx(numpy_global_norm(grads), rel=1e-6)


@pytest.mark.parametrize("method", ["norm", "global_norm"])
def test_norm_clipping_bounds_the_norm_and_keeps_the_direction(rng, method):
    variables = random_model_variables(rng)
    grads = [tf.constant(rng.normal(scale=10, size=v.shape).astype(np.float32)) for v in variables]
    out, _, stats = clipping.get(method, threshold=2.0)(grads, variables, {})
    for g, o in zip(grads, out):
        if method == "norm":
            assert np.linalg.norm(o.numpy()) <= 2.0 * (1 + 1e-6)
        cosine = np.dot(g.numpy().ravel(), o.numpy().ravel()) / (np.linalg.norm(g.numpy()) * np.linalg.norm(o.numpy()))
        assert cosine == pytest.approx(1.0, abs=1e-6)
    if method == "global_norm":
        assert numpy_global_norm(out) == pytest.approx(2.0, rel=1e-6)
        assert float(stats["norm_after"]) == pytest.approx(2.0, rel=1e-6)
    assert float(stats["norm_before"]) == pytest.approx(numpy_global_norm(grads), rel=1e-6)


@pytest.mark.parametrize("method", clipping.METHODS)
def test_none_gradients_are_skipped_and_eager_equals_tf_function(rng, method):
    variables = random_model_variables(rng)
    params = {
        "value": {"threshold": 0.5},
        "norm": {"threshold": 1.0},
        "global_norm": {"threshold": 1.0},
        "agc": {"clip_factor": 0.01},
        "autoclip": {"percentile": 50},
        "zclip": {"warmup_steps": 2},
        "adagc": {"warmup_steps": 2, "lambda_abs": 5.0},
        "quantile": {"initial_threshold": 3.0},
    }
    clipper = clipping.get(method, **params.get(method, {}))
    series = [
        [tf.constant(rng.normal(scale=s, size=v.shape).astype(np.float32)) for v in variables]
        for s in (1.0, 1.0, 1.0, 50.0)
    ]
    for gs in series:
        gs[1] = None

    compiled = tf.function(lambda g0, g2, g3, state: clipper([g0, None, g2, g3], variables, state))
    eager_state = graph_state = clipper.init(variables)
    for gs in series:
        eager_out, eager_state, eager_stats = clipper(gs, variables, eager_state)
        graph_out, graph_state, graph_stats = compiled(gs[0], gs[2], gs[3], graph_state)
        assert eager_out[1] is None and graph_out[1] is None
        for a, b in zip(eager_out, graph_out):
            if a is not None:
                np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6)
        for k in eager_stats:
            np.testing.assert_allclose(float(graph_stats[k]), float(eager_stats[k]), rtol=1e-6)


@pytest.mark.parametrize("method", clipping.METHODS)
def test_nonfinite_gradients_are_reported_and_leave_state_alone(rng, method):
    variables = [tf.Variable([1.0, 1.0])]
    clipper = clipping.get(
        method,
        **{"value": {"threshold": 1.0}, "norm": {"threshold": 1.0}, "global_norm": {"threshold": 1.0}}.get(method, {}),
    )
    state = clipper.init(variables)
    for n in (1.0, 2.0, 3.0):
        _, state, _ = clipper(scripted_grads(n), variables, state)
    before = {k: v.numpy().copy() for k, v in state.items()}
    _, after, stats = clipper([tf.constant([np.inf, 1.0])], variables, state)
    assert bool(stats["nonfinite"])
    for k in before:
        np.testing.assert_array_equal(after[k].numpy(), before[k])
    _, _, stats = clipper([tf.constant([np.nan, 1.0])], variables, state)
    assert bool(stats["nonfinite"])


# --- bad parameters name the value and the valid choices ---------------------------------------

BAD = [
    ("bogus", {}, "valid choices: none, value, norm, global_norm, agc, autoclip, zclip, adagc, quantile"),
    ("norm", {"threshold": 0}, "threshold=0"),
    ("global_norm", {"threshold": -1.0}, "threshold=-1.0"),
    ("value", {"threshold": float("inf")}, "threshold=inf"),
    ("value", {"lower": 1.0, "upper": 1.0}, "lower=1.0"),
    ("value", {}, "give threshold"),
    ("agc", {"clip_factor": 0.0}, "clip_factor=0.0"),
    ("autoclip", {"percentile": 0}, "percentile=0"),
    ("autoclip", {"percentile": 101}, "(0, 100]"),
    ("autoclip", {"history": 0}, "history=0"),
    ("zclip", {"alpha": 1.0}, "alpha=1.0"),
    ("zclip", {"alpha": 0}, "(0, 1)"),
    ("zclip", {"warmup_steps": 0}, "warmup_steps=0"),
    ("norm", {"clip_factor": 0.1}, "it takes: threshold"),
    ("adagc", {"beta": 1.0}, "beta=1.0"),
    ("adagc", {"lambda_rel": 0}, "lambda_rel=0"),
    ("adagc", {"warmup_steps": -1}, "warmup_steps=-1"),
    ("quantile", {"target_quantile": 1.0}, "target_quantile=1.0"),
    ("quantile", {"learning_rate": 0.0}, "learning_rate=0.0"),
    ("quantile", {"initial_threshold": -0.1}, "initial_threshold=-0.1"),
]


@pytest.mark.parametrize("method, params, message", BAD)
def test_bad_parameters_raise_value_error_naming_the_value(method, params, message):
    with pytest.raises(ValueError, match=None) as info:
        clipping.get(method, **params)
    assert message in str(info.value)


def test_autoclip_percentile_100_is_accepted_and_never_clips():
    stats, _ = run_series(clipping.get("autoclip", percentile=100), [1, 5, 2])
    assert [s["clipped"] for s in stats] == [0, 0, 0]


@pytest.mark.parametrize("value", [1e-45, 1e-39, 1e39])
def test_a_threshold_not_representable_in_float32_is_refused_by_name(value):
    """1e-45 is 0 in float32 (training would freeze), 1e-39 denormal, 1e39 inf (never clips)."""
    with np.errstate(over="ignore"):  # 1e39 overflows to inf in float32: what the assertion checks
        in_float32 = float(np.float32(value))
    assert in_float32 in (0.0, math.inf) or in_float32 < np.finfo(np.float32).tiny
    with pytest.raises(
        ValueError, match=re.escape(f"threshold={value!r} is invalid; it is not representable in float32")
    ):
        clipping.get("global_norm", threshold=value)
    clipping.get("global_norm", threshold=float(np.finfo(np.float32).tiny))  # the smallest normal float32 is fine


def test_the_global_norm_of_finite_elements_that_overflow_float32_squared_is_finite_and_exact():
    """Elements of 1e20 square to 1e40, past float32: the norm is taken again scaled by the largest element, and
    matches NumPy's float64 norm; the step is clipped, not skipped as non-finite."""
    grads = [tf.constant([1e20, -2e20], tf.float32), tf.constant([[3e19]], tf.float32)]
    reference = numpy_global_norm([g.numpy() for g in grads])
    norm = clipping.global_norm(grads)
    assert float(norm) == pytest.approx(reference, rel=1e-6)
    clipped, _, stats = clipping.get("global_norm", threshold=1.0)(grads, [tf.Variable([0.0, 0.0])] * 2, {})
    assert not bool(stats["nonfinite"]) and float(stats["clipped"]) == 1.0
    assert numpy_global_norm([g.numpy() for g in clipped]) == pytest.approx(1.0, rel=1e-5)
    assert math.isinf(float(clipping.global_norm([tf.constant([math.inf, 1.0])])))  # a real inf stays inf


def test_the_global_norm_keeps_keras_bits_where_it_does_not_overflow(rng):
    """Below overflow the norm is Keras' own expression, bit for bit, eagerly and traced."""
    grads = [tf.constant(rng.normal(size=s).astype(np.float32)) for s in [(3, 3, 1, 8), (8,), (40, 10)]]
    expected = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads])).numpy()
    assert clipping.global_norm(grads).numpy() == expected
    assert tf.function(clipping.global_norm)(grads).numpy() == expected


def test_autoclip_keeps_zero_norms_out_of_its_history_so_its_threshold_never_collapses():
    """Three zero-norm steps, then a gradient of norm 5: the percentile of the norms seen so far ignores the
    zeros (they say nothing of the scale), so the threshold is 5 and the step comes back whole, not zeroed."""
    stats, state = run_series(clipping.get("autoclip", percentile=10), [0.0, 0.0, 0.0, 5.0, 3.0])
    assert math.isnan(stats[0]["threshold"]) and stats[3]["threshold"] == pytest.approx(5.0)
    assert stats[3]["norm_after"] == pytest.approx(5.0) and stats[4]["threshold"] == pytest.approx(3.2)
    assert int(state["count"]) == 2


def test_the_study_loop_asks_for_keras_norm_which_reads_inf_past_float32():
    """The study's published runs stopped an exploding run where Keras' norm overflowed (a published unclipped
    adding run at step 33, norm 6.8e18 then inf); the step keeps that norm so every published run retrains bit for
    bit, while the library's default is the overflow-safe one."""
    grads = [tf.constant([1e20, -2e20], tf.float32)]
    variables = [tf.Variable([0.0, 0.0])]
    _, _, legacy = clipping.get("value", threshold=5.0)(grads, variables, {}, overflow_safe=False)
    _, _, safe = clipping.get("value", threshold=5.0)(grads, variables, {})
    assert math.isinf(float(legacy["norm_before"])) and bool(legacy["nonfinite"])
    assert float(safe["norm_before"]) == pytest.approx(numpy_global_norm([g.numpy() for g in grads]), rel=1e-6)
    assert not bool(safe["nonfinite"]) and float(safe["clipped"]) == 1.0  # both elements clipped to ±5
