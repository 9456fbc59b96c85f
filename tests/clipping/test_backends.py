"""Each rule written once runs on TensorFlow and on JAX: ``keras.ops`` against TensorFlow's ops on a spiky stream
(in this process), and ``fit`` through ``ClippingOptimizer`` on both backends (in two processes, since a process
has one Keras backend): the same model, data order and seed give the same weights within float tolerance."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from clipstudy import clipping
from clipstudy.clipping import base, ops

HERE = Path(__file__).parent
#: Two backends reach the same weights by different kernels (XLA on JAX, TensorFlow's own here): after 24 steps of
#: Adam they agree to about 5e-7 of each value (measured); this allows twenty times that.
FIT_RTOL = 1e-5

STREAM_PARAMS = {
    "value": {"threshold": 0.5},
    "norm": {"threshold": 1.0},
    "global_norm": {"threshold": 2.0},
    "agc": {"clip_factor": 0.05},
    "autoclip": {"percentile": 30, "history": 64},  # a history shorter than the stream: the ring buffer wraps
    "zclip": {"warmup_steps": 10},
    "adagc": {"warmup_steps": 10},
    "quantile": {"initial_threshold": 0.5},
}
SHAPES = [(3, 3, 2, 4), (4,), (36, 5), (5,)]
NAN_STEP = 80


def spiky_stream(steps=120, seed=3):
    rng = np.random.default_rng(seed)
    for t in range(steps):
        scale = 1.0 + 80.0 * (t % 37 == 20) + 1e3 * (t == 100)
        grads = [(rng.normal(size=s) * scale).astype(np.float32) for s in SHAPES]
        if t == NAN_STEP:
            grads[1][0] = np.nan  # a non-finite step: reported, state untouched
        yield grads


def run_stream(method, namespace, monkeypatch):
    monkeypatch.setattr(base, "namespace_of", lambda *groups: namespace)
    clipper = clipping.get(method, **STREAM_PARAMS.get(method, {}))
    variables = [tf.constant(np.full(s, 0.3, np.float32)) for s in SHAPES]
    state = clipper._init(variables, namespace)
    step = tf.function(lambda grads, state: clipper(grads, variables, state))  # traced once: the stream is fast
    rows = []
    for grads in spiky_stream():
        out, state, stats = step([tf.constant(g) for g in grads], state)
        rows.append(
            (
                [np.asarray(o) for o in out],
                {k: np.asarray(v) for k, v in state.items()},
                {k: float(v) for k, v in stats.items()},
            )
        )
    return rows


@pytest.mark.parametrize("method", clipping.METHODS)
def test_each_rule_in_keras_ops_matches_the_tensorflow_ops_on_a_spiky_stream(method, monkeypatch):
    ours = run_stream(method, ops.TENSORFLOW, monkeypatch)
    keras_ops = run_stream(method, ops.KERAS, monkeypatch)
    for step, ((g_tf, s_tf, st_tf), (g_k, s_k, st_k)) in enumerate(zip(ours, keras_ops)):
        for a, b in zip(g_tf, g_k):
            np.testing.assert_allclose(b, a, rtol=2e-6, atol=1e-7, err_msg=f"{method} step {step}")
        for key in s_tf:
            np.testing.assert_allclose(s_k[key], s_tf[key], rtol=2e-6, err_msg=f"{method} state {key} step {step}")
        for key in st_tf:
            np.testing.assert_allclose(st_k[key], st_tf[key], rtol=2e-6, err_msg=f"{method} {key} step {step}")
    # the stream meets the rule: every method but none clips somewhere, and the NaN step is reported
    assert ours[NAN_STEP][2]["nonfinite"] == 1.0
    assert method == "none" or max(row[2]["clipped"] for row in ours) > 0


@pytest.mark.parametrize("count", [1, 2, 7, 64])
@pytest.mark.parametrize("q", [0.0, 10.0, 50.0, 97.5, 100.0])
def test_the_static_shape_percentile_is_numpys(count, q):
    values = np.random.default_rng(count).normal(size=64).astype(np.float32) ** 2
    got = float(ops.KERAS.percentile_of_first(tf.constant(values), tf.constant(count), q))
    assert got == pytest.approx(float(np.percentile(values[:count], q)), rel=3e-7)


def test_the_namespace_follows_the_values():
    assert ops.namespace_of([tf.constant(1.0)]) is ops.TENSORFLOW
    assert ops.namespace_of([None], [np.ones(2)]) is ops.TENSORFLOW  # NumPy: TensorFlow takes it as it is
    jnp = pytest.importorskip("jax.numpy")
    assert ops.namespace_of([None, jnp.ones(2)]) is ops.KERAS


def fit_on(backends, folder: Path) -> dict[str, dict]:
    """``backend_fit.py`` under each backend, the processes side by side; their results by backend."""
    running = {}
    for backend in backends:
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
        command = [sys.executable, str(HERE / "backend_fit.py"), str(folder / f"{backend}.npz")]
        running[backend] = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    for backend, process in running.items():
        _, err = process.communicate(timeout=900)
        assert process.returncode == 0, f"{backend}: {err[-3000:]}"
        with np.load(folder / f"{backend}.npz") as result:
            assert str(result["backend"]) == backend
            results[backend] = {k: result[k] for k in result.files if k != "backend"}
    return results


def test_fit_on_jax_gives_the_weights_telemetry_and_saved_state_of_tensorflow(tmp_path):
    pytest.importorskip("jax")
    results = fit_on(["tensorflow", "jax"], tmp_path)
    on_tf, on_jax = results["tensorflow"], results["jax"]
    parallel = {k: on_jax.pop(k) for k in [k for k in on_jax if k.startswith("data_parallel/")]}
    assert sorted(on_tf) == sorted(on_jax)
    for key in (k for k in on_tf if not k.startswith("mixed/")):
        np.testing.assert_allclose(on_jax[key], on_tf[key], rtol=FIT_RTOL, atol=1e-6, err_msg=key)
    for method in clipping.METHODS:
        # the NaN batch was skipped once an epoch on both, and every other step applied
        np.testing.assert_array_equal(on_jax[f"{method}/clip_skipped_steps"], [1.0, 1.0, 1.0])
        assert int(on_jax[f"{method}/iterations"]) == 3 * 7
        assert all(np.isfinite(on_jax[f"{method}/weight{i}"]).all() for i in range(4))
    # model.save / load_model keep the clipper's state on both backends: an epoch more on the loaded copy gives the
    # original's weights and state bit for bit (ZClip, past its warm-up: 16 steps counted)
    for backend, result in results.items():
        for key in (k for k in result if k.startswith("resume/original/")):
            np.testing.assert_array_equal(result[key.replace("original", "loaded")], result[key], err_msg=backend)
        assert int(result["resume/loaded/clip_count"]) == 2 * 8
    # train_on_batch and a loop of one's own (GradientTape + apply; jax.grad + stateless_apply under jit) give what
    # fit gives over the same batches, on both backends, the NaN batch skipped (7 steps an epoch)
    for backend, result in results.items():
        for way, steps in (("train_on_batch", 14), ("own_loop", 7)):
            assert int(result[f"{way}/iterations"]) == steps, (backend, way)
            for key in (k for k in result if k.startswith(f"{way}_reference/")):
                mine = key.replace("_reference/", "/")
                np.testing.assert_allclose(result[mine], result[key], rtol=1e-6, atol=1e-7, err_msg=(backend, mine))
    # mixed_float16 with LossScaleOptimizer outside: the two backends agree at float16's precision, the clipper
    # read true-scale norms (not ×32768) and clipped, and the scaler's skip of the overflowing spike was its own
    for key in (k for k in on_tf if k.startswith("mixed/")):
        np.testing.assert_allclose(on_jax[key], on_tf[key], rtol=1e-3, atol=1e-4, err_msg=key)
    for result in (on_tf, on_jax):
        assert 1.0 < result["mixed/clip_norm_before_max"].max() < 1e3 and result["mixed/clip_fraction"][0] > 0
        np.testing.assert_array_equal(result["mixed/clip_skipped_steps"], [0.0, 0.0, 0.0])
    # JAX, keras.distribution.DataParallel over two CPU devices: the one-device weights and telemetry
    assert int(parallel.pop("data_parallel/devices")) == 2
    for key in (k for k in parallel if k.startswith("data_parallel/one_device/")):
        two = parallel[key.replace("one_device", "two_devices")]
        np.testing.assert_allclose(two, parallel[key], rtol=1e-6, atol=1e-7, err_msg=key)
    # the spike met the methods: each clipped method ends elsewhere than the unclipped run
    for method in clipping.METHODS[1:]:
        assert not np.allclose(on_jax[f"{method}/weight0"], on_jax["none/weight0"], rtol=1e-4), method


def test_the_probe_and_the_demo_refuse_what_they_cannot_run(monkeypatch):
    import keras

    from clipstudy.clipping import probe_threshold
    from clipstudy.clipping.demo import run_on

    with pytest.raises(ValueError, match="backend='torch' is invalid; valid choices: tensorflow, jax"):
        run_on("torch")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ValueError, match="runs on the TensorFlow backend .* this Keras runs on 'jax'"):
        probe_threshold(model, np.ones((8, 3), "float32"), np.ones((8, 1), "float32"), loss="mse", optimizer="sgd")
