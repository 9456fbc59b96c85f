"""ClippingOptimizer and ClipTelemetry in model.fit, against Keras' own clipping and the study's loop."""

import csv
import math

import numpy as np
import pytest

from clipstudy import clipping
from clipstudy.clipping import ClippingOptimizer, ClipTelemetry
from clipstudy.clipping.optimizer import keras, tf


def small_model(seed=1):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])


def xent():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    return rng.normal(size=(256, 8)).astype("float32") * 5, rng.integers(0, 3, 256)


def fitted(optimizer, toy, *, epochs=2, jit=False, callbacks=(), seed=1):
    model = small_model(seed)
    model.compile(optimizer, xent(), jit_compile=jit)
    history = model.fit(*toy, batch_size=32, epochs=epochs, shuffle=False, verbose=0, callbacks=list(callbacks))
    return model, history


def same_weights(a, b):
    return all(np.array_equal(p, q) for p, q in zip(a.get_weights(), b.get_weights()))


# Thresholds are powers of two: where Keras' clipping does not engage it still multiplies by t/t, which is
# exactly 1 only then; the wrapper passes such gradients through untouched.
def test_global_norm_through_fit_gives_the_weights_of_keras_global_clipnorm_bit_for_bit(toy):
    keras_model, _ = fitted(keras.optimizers.Adam(1e-2, global_clipnorm=0.5), toy)
    ours, _ = fitted(ClippingOptimizer(keras.optimizers.Adam(1e-2), "global_norm", {"threshold": 0.5}), toy)
    assert same_weights(keras_model, ours)


def test_norm_through_fit_gives_the_weights_of_keras_clipnorm_bit_for_bit(toy):
    keras_model, _ = fitted(keras.optimizers.SGD(0.1, clipnorm=0.25), toy)
    ours, _ = fitted(ClippingOptimizer(keras.optimizers.SGD(0.1), "norm", {"threshold": 0.25}), toy)
    assert same_weights(keras_model, ours)


@pytest.fixture
def without_op_determinism():
    """Keras compiles with XLA only while TensorFlow's op determinism is off; a test that ran earlier in this process
    (the study's loop) may have turned it on for the whole process. Off for the test, then as it was."""
    from tensorflow.python.framework import config

    was = config.is_op_determinism_enabled()
    config.disable_op_determinism()
    yield
    if was:
        config.enable_op_determinism()


@pytest.mark.filterwarnings("error:Model doesn't support `jit_compile=True`")  # it must really compile with XLA
def test_with_jit_compile_the_wrapper_is_within_rounding_of_keras(toy, without_op_determinism):
    """XLA fuses the two programs differently, so the last bit may differ (measured: 6e-8 after 8 steps)."""
    keras_model, _ = fitted(keras.optimizers.Adam(1e-2, global_clipnorm=0.5), toy, jit=True, epochs=1)
    ours, _ = fitted(
        ClippingOptimizer(keras.optimizers.Adam(1e-2), "global_norm", {"threshold": 0.5}), toy, jit=True, epochs=1
    )
    for p, q in zip(keras_model.get_weights(), ours.get_weights()):
        np.testing.assert_allclose(q, p, rtol=1e-5, atol=1e-6)
    assert not same_weights(small_model(), ours)  # it trained


@pytest.mark.parametrize(
    "method, params", [("zclip", {"warmup_steps": 3, "z_thresh": 1.0}), ("autoclip", {"percentile": 10})]
)
def test_adaptive_methods_through_fit_give_the_weights_of_the_study_loop(mnist_splits, method, params):
    from clipstudy.tasks.classification import ClassificationTask, seed_cnn
    from clipstudy.training import RunConfig, train
    from clipstudy.training.loop import run_splits, set_determinism
    from clipstudy.training.optimizers import make_optimizer

    config = RunConfig.for_task(
        "classifier",
        method=method,
        clip_params=params,
        optimizer="adam",
        learning_rate=1e-3,
        epochs=2,
        batch_size=32,
        train_subset=320,
        test_subset=100,
        eval_every=None,
        seed=3,
    )
    task = ClassificationTask()
    study = train(config, task, mnist_splits, progress=False)
    assert study.summary["clip_fraction"] > 0.2  # the method engages, so the comparison means something
    x, y = task.prepare(run_splits(config, mnist_splits)[0])
    set_determinism(config.seed)
    model = seed_cnn()
    model.compile(ClippingOptimizer(make_optimizer("adam", 1e-3), method, params), "sparse_categorical_crossentropy")
    shuffler = np.random.default_rng([config.seed, 2])  # the study loop's data order
    for _ in range(config.epochs):
        order = shuffler.permutation(len(x))
        model.fit(x[order], y[order], batch_size=32, epochs=1, shuffle=False, verbose=0)
    assert same_weights(study.model, model)


def test_train_on_batch_and_a_custom_loop_give_the_weights_of_fit(toy):
    x, y = toy
    by_fit, _ = fitted(ClippingOptimizer(keras.optimizers.Adam(1e-2), "zclip", {"warmup_steps": 2}), toy, epochs=1)
    by_batch = small_model()
    by_batch.compile(ClippingOptimizer(keras.optimizers.Adam(1e-2), "zclip", {"warmup_steps": 2}), xent())
    for start in range(0, 256, 32):
        by_batch.train_on_batch(x[start : start + 32], y[start : start + 32])
    custom = small_model()
    optimizer = ClippingOptimizer(keras.optimizers.Adam(1e-2), "zclip", {"warmup_steps": 2})
    loss = xent()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            value = loss(yb, custom(xb, training=True))
        optimizer.apply(tape.gradient(value, custom.trainable_variables), custom.trainable_variables)

    for start in range(0, 256, 32):
        step(x[start : start + 32], y[start : start + 32])
    assert same_weights(by_fit, by_batch) and same_weights(by_fit, custom)


def clip_state(optimizer):
    return {k: v.numpy() for k, v in optimizer._clip_state.items()}


def test_model_save_and_load_round_trips_the_wrapper_and_training_continues_identically(toy, tmp_path):
    model, _ = fitted(ClippingOptimizer(keras.optimizers.Adam(1e-2), "zclip", {"warmup_steps": 3}), toy, epochs=1)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.optimizer, ClippingOptimizer)
    assert loaded.optimizer.clipper.config() == model.optimizer.clipper.config()
    assert int(loaded.optimizer.iterations.numpy()) == 8
    before = clip_state(model.optimizer)
    assert before["count"] == 8 and all(np.array_equal(v, clip_state(loaded.optimizer)[k]) for k, v in before.items())
    for m in (model, loaded):
        m.fit(*toy, batch_size=32, epochs=1, shuffle=False, verbose=0)
    assert same_weights(model, loaded)
    assert all(np.array_equal(v, clip_state(loaded.optimizer)[k]) for k, v in clip_state(model.optimizer).items())


def test_a_checkpoint_restores_the_clippers_state(toy, tmp_path):
    model, _ = fitted(ClippingOptimizer(keras.optimizers.SGD(0.1), "autoclip", {"percentile": 10}), toy, epochs=1)
    path = tf.train.Checkpoint(model=model, optimizer=model.optimizer).write(str(tmp_path / "ckpt"))
    saved = clip_state(model.optimizer)
    model.fit(*toy, batch_size=32, epochs=1, shuffle=False, verbose=0)
    assert clip_state(model.optimizer)["count"] == 16
    tf.train.Checkpoint(model=model, optimizer=model.optimizer).read(path).assert_consumed()
    restored = clip_state(model.optimizer)
    assert restored["count"] == 8 and np.array_equal(restored["norms"], saved["norms"])


@pytest.mark.parametrize("method", clipping.METHODS)
def test_every_method_serializes_to_a_config_that_rebuilds_it(method):
    params = clipping.REGISTRY[method].reference_params
    optimizer = ClippingOptimizer(keras.optimizers.SGD(0.1), method, params)
    rebuilt = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(rebuilt, ClippingOptimizer) and rebuilt.clipper.name == method
    assert rebuilt.clipper.config() == optimizer.clipper.config()
    assert float(rebuilt.learning_rate.numpy()) == pytest.approx(0.1)


def test_loss_scaling_goes_outside_and_the_clipper_sees_unscaled_gradients():
    inner = ClippingOptimizer(keras.optimizers.SGD(1.0), "global_norm", {"threshold": 1.0})
    scaled = keras.optimizers.LossScaleOptimizer(inner)
    variables = [tf.Variable([1.0, 2.0]), tf.Variable([[0.5]])]
    grads = [tf.constant([3.0, 4.0]), tf.constant([[12.0]])]  # global norm 13
    scaled.build(variables)
    scale = float(scaled.dynamic_scale.numpy())
    scaled.apply([g * scale for g in grads], variables)
    assert inner.last_stats()["norm_before"] == 13.0 and inner.last_stats()["clipped"] == 1.0
    np.testing.assert_allclose(variables[0].numpy(), [1 - 3 / 13, 2 - 4 / 13], rtol=1e-6)
    with pytest.raises(ValueError, match="other way round"):
        ClippingOptimizer(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD()))


def test_mixed_precision_fit_with_loss_scaling_outside_trains(toy):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = small_model()
        inner = ClippingOptimizer(keras.optimizers.Adam(1e-2), "global_norm", {"threshold": 1.0})
        model.compile(keras.optimizers.LossScaleOptimizer(inner), xent())
        history = model.fit(*toy, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[ClipTelemetry()])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert history.history["loss"][1] < history.history["loss"][0]
    assert 1.0 < history.history["clip_norm_before"][0] < 1e3  # true-scale norms, not ×32768


def test_a_nonfinite_step_is_recorded_and_skipped_unless_asked_otherwise():
    for skip in (True, False):
        optimizer = ClippingOptimizer(keras.optimizers.SGD(0.1), "zclip", {"warmup_steps": 1}, skip_nonfinite=skip)
        variables = [tf.Variable([1.0, 2.0])]
        optimizer.apply([tf.constant([1.0, 1.0])], variables)
        state, weights = clip_state(optimizer), variables[0].numpy()
        optimizer.apply([tf.constant([np.nan, 1.0])], variables)
        assert optimizer.last_stats()["nonfinite"] == 1.0 and optimizer.totals()["nonfinite"] == 1.0
        assert all(np.array_equal(v, clip_state(optimizer)[k]) for k, v in state.items())  # state never learns NaN
        assert np.array_equal(variables[0].numpy(), weights) == skip


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "bogus"}, "unknown clipping method 'bogus'; valid choices: none, value"),
        ({"method": "zclip", "clip_params": {"z": 1}}, "zclip: unknown parameter"),
        ({"clipnorm": 1.0}, "does not take clipnorm"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ClippingOptimizer(keras.optimizers.SGD(), **kwargs)


def test_telemetry_puts_each_steps_norms_in_the_logs_and_exact_epoch_means_in_history(toy, tmp_path):
    steps = []

    class Recorder(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(dict(logs))

    optimizer = ClippingOptimizer(keras.optimizers.SGD(0.05), "global_norm", {"threshold": 4.0})
    model, history = fitted(
        optimizer,
        toy,
        epochs=2,
        callbacks=[ClipTelemetry(), Recorder(), keras.callbacks.CSVLogger(tmp_path / "log.csv")],
    )
    assert len(steps) == 16
    first = [s["clip_norm_before"] for s in steps[:8]]
    assert history.history["clip_norm_before"][0] == pytest.approx(np.mean(first), rel=1e-6)
    assert history.history["clip_fraction"][0] == pytest.approx(np.mean([s["clip_fraction"] for s in steps[:8]]))
    assert history.history["clip_norm_before_max"][0] == pytest.approx(max(first))
    assert all(s["clip_threshold"] == 4.0 for s in steps)
    for s in steps:  # after clipping: the threshold where the step was clipped, the norm itself where not
        expected = 4.0 if s["clip_fraction"] == 1.0 else s["clip_norm_before"]
        assert s["clip_norm_after"] == pytest.approx(expected, rel=1e-6)
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert float(rows[1]["clip_norm_before"]) == pytest.approx(history.history["clip_norm_before"][1], rel=1e-6)


def test_the_logged_norm_is_the_global_norm_of_kerass_own_gradients(toy):
    """Reference: the gradients of the same weights and batch from a separate tape, normed in NumPy."""
    x, y = toy
    model = small_model()
    optimizer = ClippingOptimizer(keras.optimizers.SGD(0.05), "none")
    model.compile(optimizer, xent())
    for start in (0, 32, 64):
        xb, yb = x[start : start + 32], y[start : start + 32]
        with tf.GradientTape() as tape:
            value = xent()(yb, model(xb, training=True))
        grads = tape.gradient(value, model.trainable_variables)
        reference = math.sqrt(sum(float(np.sum(g.numpy().astype(np.float64) ** 2)) for g in grads))
        model.train_on_batch(xb, yb)
        assert optimizer.last_stats()["norm_before"] == pytest.approx(reference, rel=1e-6)
        assert math.isnan(optimizer.last_stats()["threshold"])


def test_telemetry_every_n_steps_and_without_a_clipping_optimizer(toy):
    steps = []

    class Recorder(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append("clip_norm_before" in logs)

    fitted(
        ClippingOptimizer(keras.optimizers.SGD(0.05), "none"),
        toy,
        epochs=1,
        callbacks=[ClipTelemetry(every=3), Recorder()],
    )
    assert steps == [False, False, True, False, False, True, False, False]
    with pytest.raises(ValueError, match="no ClippingOptimizer"):
        fitted(keras.optimizers.SGD(0.05), toy, epochs=1, callbacks=[ClipTelemetry()])
    with pytest.raises(ValueError, match="every=0"):
        ClipTelemetry(every=0)


def test_tensorboard_writes_the_telemetry_as_scalars(toy, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, history = fitted(
        ClippingOptimizer(keras.optimizers.SGD(0.05), "global_norm", {"threshold": 4.0}),
        toy,
        epochs=2,
        callbacks=[ClipTelemetry(), keras.callbacks.TensorBoard(str(tmp_path / "tb"), update_freq=1)],
    )
    events = EventAccumulator(str(tmp_path / "tb" / "train"), size_guidance={"tensors": 0}).Reload()
    tags = events.Tags()["tensors"]
    assert {
        "batch_clip_norm_before",
        "batch_clip_norm_after",
        "batch_clip_threshold",
        "batch_clip_fraction",
        "epoch_clip_norm_before",
        "epoch_clip_fraction",
    } <= set(tags)
    epoch = [float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors("epoch_clip_norm_before")]
    np.testing.assert_allclose(epoch, history.history["clip_norm_before"], rtol=1e-6)
    assert len(events.Tensors("batch_clip_norm_before")) == 16


@pytest.mark.parametrize("setting", [{"clipnorm": 1.0}, {"clipvalue": 0.5}, {"global_clipnorm": 2.0}])
def test_an_inner_optimizer_that_already_clips_is_refused_naming_its_setting(setting):
    ((name, value),) = setting.items()
    with pytest.raises(ValueError, match=f"already clips \\({name}={value}\\).*clipped twice"):
        ClippingOptimizer(keras.optimizers.Adam(1e-3, **setting), "global_norm", {"threshold": 1.0})


def test_another_backend_is_refused_naming_the_supported_ones(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(ValueError, match="backends tensorflow, jax; this Keras runs on 'torch'"):
        ClippingOptimizer(keras.optimizers.SGD())


MIRRORED = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
from clipstudy.clipping import ClippingOptimizer, ClipTelemetry

rng = np.random.default_rng(0)
x = (rng.normal(size=(64, 5)) * 3).astype("float32")
y = rng.normal(size=(64, 1)).astype("float32")

def run(strategy, method, params, skip):
    with strategy.scope():
        keras.utils.set_random_seed(3)
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)])
        model.compile(ClippingOptimizer(keras.optimizers.SGD(0.1), method, params, skip_nonfinite=skip), "mse")
    h = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[ClipTelemetry()])
    return model.get_weights(), h.history

one = tf.distribute.OneDeviceStrategy("/cpu:0")
two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
for method, params, skip in (("global_norm", {"threshold": 0.5}, True), ("global_norm", {"threshold": 0.5}, False),
                             ("zclip", {"warmup_steps": 3}, True)):
    (w1, h1), (w2, h2) = run(one, method, params, skip), run(two, method, params, skip)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(w1, w2))
    print("CASE", method, skip, diff, *h1["clip_norm_before"], *h2["clip_norm_before"], *h2["clip_norm_after"])
central = tf.distribute.experimental.CentralStorageStrategy(["/cpu:0", "/cpu:1"])
with central.scope():
    try:
        ClippingOptimizer(keras.optimizers.SGD(0.1), "global_norm", {"threshold": 0.5})
    except NotImplementedError as exc:
        print("REFUSED", exc)
"""


def test_under_a_mirrored_strategy_the_wrapper_clips_the_all_reduced_gradient_as_one_device_would():
    """Two logical CPU devices: fit with a global batch of 8 (4 per replica) gives the weights of one device
    with the same batches (within float32 rounding), whether non-finite steps are skipped or not, and the
    telemetry reports the norm of the global batch's gradient (before: 2.87 per replica against a true 4.37)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", MIRRORED],
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    cases = [line.split()[1:] for line in out.stdout.splitlines() if line.startswith("CASE")]
    assert len(cases) == 3, out.stderr[-3000:]
    for method, skip, diff, *norms in cases:
        assert float(diff) < 1e-6, (method, skip, diff)
        before_one, before_two, after_two = (list(map(float, norms[i : i + 2])) for i in (0, 2, 4))
        np.testing.assert_allclose(before_two, before_one, rtol=1e-6)  # the true norms, epoch means
        if method == "global_norm":
            np.testing.assert_allclose(after_two, [0.5, 0.5], rtol=1e-6)  # clipped to the threshold, not 0.87
    assert "REFUSED ClippingOptimizer under CentralStorageStrategy with 2 replicas" in out.stdout
    assert "MirroredStrategy" in out.stdout


def test_variables_keras_overwrites_with_their_gradient_are_neither_clipped_nor_counted():
    """Keras assigns the "gradient" of an ``overwrite_with_gradient`` variable (float8 scales) to it directly;
    the wrapper leaves it out of the norm and hands it on as it came."""
    w = keras.Variable(np.zeros(2, np.float32), name="w")
    scale = keras.Variable(np.zeros(1, np.float32), name="scale")
    scale.overwrite_with_gradient = True
    opt = ClippingOptimizer(keras.optimizers.SGD(1.0), "global_norm", {"threshold": 1.0})
    opt.apply([tf.constant([3.0, 4.0]), tf.constant([700.0])], [w, scale])
    np.testing.assert_allclose(w.numpy(), [-0.6, -0.8], rtol=1e-6)  # clipped from norm 5 to 1
    np.testing.assert_array_equal(scale.numpy(), [700.0])  # overwritten, unclipped
    assert opt.last_stats()["norm_before"] == pytest.approx(5.0)


def test_a_clipping_parameter_passed_to_the_wrapper_points_to_clip_params():
    with pytest.raises(
        ValueError, match=r"threshold belongs to the clipping method: .*clip_params=\{'threshold': 1.0\}"
    ):
        ClippingOptimizer(keras.optimizers.Adam(), "global_norm", threshold=1.0)
    with pytest.raises(ValueError, match="set such options on the inner optimizer"):
        ClippingOptimizer(keras.optimizers.Adam(), "global_norm", beta_1=0.8)


def test_telemetry_steps_reads_the_latest_of_several_runs_logged_to_one_folder(toy, tmp_path):
    """Two fits into one folder leave two event files whose steps both start at 1: the table is the second
    run's (its threshold), never a pivot of both."""
    from clipstudy.analysis.tensorboard import event_files, telemetry_steps

    for threshold in (4.0, 2.0):
        fitted(
            ClippingOptimizer(keras.optimizers.SGD(0.05), "global_norm", {"threshold": threshold}),
            toy,
            callbacks=[ClipTelemetry(), keras.callbacks.TensorBoard(str(tmp_path / "tb"), update_freq=1)],
        )
    assert len(event_files(tmp_path / "tb")) == 2
    steps = telemetry_steps(tmp_path / "tb")
    assert list(steps["step"]) == list(range(1, 17))
    assert (steps["threshold"] == 2.0).all()


def test_a_probe_says_what_share_of_its_steps_a_threshold_clips():
    """Counted by hand: of the norms 1, 2, 3, 4 (and a NaN step, left out) a threshold of 2.5 is below two; the
    recommended median (2.5 by numpy's interpolation) the same two; 4 is below none (clipping needs norm > it)."""
    from clipstudy.clipping.probe import ThresholdProbe, threshold_from_norms

    norms = np.array([1.0, 2.0, np.nan, 3.0, 4.0])
    probe = ThresholdProbe(norms=norms, percentile=50.0, threshold=threshold_from_norms(norms, 50))
    assert probe.threshold == 2.5
    assert probe.clip_share() == 0.5 and probe.clip_share(2.5) == 0.5
    assert probe.clip_share(0.5) == 1.0 and probe.clip_share(4.0) == 0.0
    assert "below the norm of 50% of these steps" in str(probe)


def test_the_probe_records_one_pass_over_a_small_data_set_by_default(toy):
    """256 examples in batches of 32: 8 unclipped steps (not 100, 12 passes); the threshold is numpy's percentile
    of those norms, and the weights are put back."""
    from clipstudy.clipping import probe_threshold

    model = small_model()
    model.compile(keras.optimizers.SGD(0.05), xent())
    before = [w.copy() for w in model.get_weights()]
    probe = probe_threshold(model, *toy, batch_size=32, percentile=90)
    assert len(probe.norms) == 8
    assert probe.threshold == pytest.approx(float(np.percentile(probe.norms, 90)))
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert len(probe_threshold(model, *toy, batch_size=32, steps=20).norms) == 20
    default = probe_threshold(model, *toy, batch_size=32)  # the default percentile: the 90th (the study's Q7)
    assert default.percentile == 90 and default.threshold == pytest.approx(float(np.percentile(default.norms, 90)))


def test_telemetry_warns_when_tensorboard_cannot_see_its_per_step_values(toy, tmp_path):
    """TensorBoard before ClipTelemetry, or without update_freq=1, gets no per-step clip scalars, silently before;
    now fit warns, naming the fix. The right order warns nothing (and TensorBoard's files then hold the scalars)."""
    import warnings

    def fit_with(callbacks):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fitted(ClippingOptimizer(keras.optimizers.SGD(0.05), "global_norm", {"threshold": 4.0}), toy, epochs=1,
                   callbacks=callbacks)  # fmt: skip
        return [str(w.message) for w in caught if "ClipTelemetry" in str(w.message)]

    board = keras.callbacks.TensorBoard(str(tmp_path / "a"), update_freq=1)
    assert any("comes after keras.callbacks.TensorBoard" in m for m in fit_with([board, ClipTelemetry()]))
    epochly = keras.callbacks.TensorBoard(str(tmp_path / "b"))
    assert any("update_freq='epoch'" in m for m in fit_with([ClipTelemetry(), epochly]))
    right = keras.callbacks.TensorBoard(str(tmp_path / "c"), update_freq=1)
    assert fit_with([ClipTelemetry(), right]) == []
