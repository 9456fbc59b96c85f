"""One small ``fit`` per clipping method through ``ClippingOptimizer``, on the Keras backend this process runs on
(``KERAS_BACKEND``): weights and ``ClipTelemetry``'s epoch logs are saved to the ``.npz`` named on the command
line, with a save / load / continue round trip, ``train_on_batch`` and a training loop of one's own (each beside a
``fit`` of the same batches, its reference). ``test_backends`` runs it under TensorFlow and under JAX and compares
the two files.

The data: a regression whose targets jump 50-fold for one batch of every epoch after the adaptive methods' warm-ups
(a spike every method should meet) and one batch with a NaN input (a step every backend must skip).
"""

import sys

import keras
import numpy as np

from clipstudy.clipping import METHODS, ClippingOptimizer, ClipTelemetry

PARAMS = {
    "value": {"threshold": 0.5},
    "norm": {"threshold": 1.0},
    "global_norm": {"threshold": 1.0},
    "agc": {"clip_factor": 0.05},
    "autoclip": {"percentile": 50},
    "zclip": {"warmup_steps": 3, "z_thresh": 1.5},
    "adagc": {"warmup_steps": 3},
    "quantile": {"initial_threshold": 1.0},
}
BATCH, EPOCHS = 8, 3
SPIKE_BATCH, NAN_BATCH = 5, 3


def data():
    rng = np.random.RandomState(0)
    x = rng.rand(64, 4).astype("float32")
    y = x.sum(1, keepdims=True)
    y[SPIKE_BATCH * BATCH : (SPIKE_BATCH + 1) * BATCH] *= 50.0
    x[NAN_BATCH * BATCH, 0] = np.nan
    weights = [
        (rng.randn(4, 8) * 0.5).astype("float32"),
        np.zeros(8, "float32"),
        (rng.randn(8, 1) * 0.5).astype("float32"),
        np.zeros(1, "float32"),
    ]
    return x, y, weights


def fit_all() -> dict[str, np.ndarray]:
    x, y, weights = data()
    out = {}
    for method in METHODS:
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)])
        model.set_weights(weights)
        model.compile(optimizer=ClippingOptimizer(keras.optimizers.Adam(0.01), method, PARAMS.get(method)), loss="mse")
        history = model.fit(
            x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=[ClipTelemetry()]
        )
        for i, w in enumerate(model.get_weights()):
            out[f"{method}/weight{i}"] = w
        for key, values in history.history.items():
            out[f"{method}/{key}"] = np.asarray(values, np.float64)
        out[f"{method}/iterations"] = np.asarray(int(model.optimizer.iterations.numpy()))
    return out


def save_load_and_continue(folder) -> dict[str, np.ndarray]:
    """ZClip through ``fit`` for an epoch, saved with ``model.save`` and loaded; another epoch on the original and
    on the loaded copy: their weights and the clipper's state (``clip_*`` variables) afterwards."""
    x, y, weights = data()
    x = np.nan_to_num(x)  # a clean epoch: the skip is tested above
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)])
    model.set_weights(weights)
    model.compile(optimizer=ClippingOptimizer(keras.optimizers.Adam(0.01), "zclip", PARAMS["zclip"]), loss="mse")
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    model.save(f"{folder}/zclip.keras")
    loaded = keras.models.load_model(f"{folder}/zclip.keras")
    out = {}
    for name, m in (("original", model), ("loaded", loaded)):
        m.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        for i, w in enumerate(m.get_weights()):
            out[f"resume/{name}/weight{i}"] = w
        for v in m.optimizer.variables:
            if "clip_" in v.path:
                out[f"resume/{name}/{v.path.split('/')[-1]}"] = np.asarray(v.numpy())
    return out


def _model(weights):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)])
    model.set_weights(weights)
    return model


def _record(prefix: str, model, optimizer) -> dict[str, np.ndarray]:
    out = {f"{prefix}/weight{i}": w for i, w in enumerate(model.get_weights())}
    out[f"{prefix}/iterations"] = np.asarray(int(keras.ops.convert_to_numpy(optimizer.iterations)))
    for v in optimizer.variables:
        if "clip_" in v.path:
            out[f"{prefix}/{v.path.split('/')[-1]}"] = np.asarray(keras.ops.convert_to_numpy(v))
    return out


def train_on_batch_twice() -> dict[str, np.ndarray]:
    """ZClip through ``model.train_on_batch``, batch by batch over two epochs (the NaN batch among them)."""
    x, y, weights = data()
    model = _model(weights)
    model.compile(optimizer=ClippingOptimizer(keras.optimizers.Adam(0.01), "zclip", PARAMS["zclip"]), loss="mse")
    for _ in range(2):
        for b in range(len(x) // BATCH):
            model.train_on_batch(x[b * BATCH : (b + 1) * BATCH], y[b * BATCH : (b + 1) * BATCH])
    return _record("train_on_batch", model, model.optimizer)


def fit_reference(prefix: str, method: str, epochs: int) -> dict[str, np.ndarray]:
    """``fit`` over the same batches in the same order: what ``train_on_batch`` and one's own loop must give."""
    x, y, weights = data()
    model = _model(weights)
    model.compile(optimizer=ClippingOptimizer(keras.optimizers.Adam(0.01), method, PARAMS[method]), loss="mse")
    model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0)
    return _record(prefix, model, model.optimizer)


def own_loop() -> dict[str, np.ndarray]:
    """Global norm 1 in a training loop of one's own, one epoch (the spike and the NaN batch among it): on
    TensorFlow a ``GradientTape`` and ``optimizer.apply``; on JAX ``jax.value_and_grad`` of the model's
    ``stateless_call`` and ``optimizer.stateless_apply`` under ``jax.jit``."""
    x, y, weights = data()
    model = _model(weights)
    optimizer = ClippingOptimizer(keras.optimizers.Adam(0.01), "global_norm", PARAMS["global_norm"])
    optimizer.build(model.trainable_variables)
    batches = [(x[b * BATCH : (b + 1) * BATCH], y[b * BATCH : (b + 1) * BATCH]) for b in range(len(x) // BATCH)]
    if keras.backend.backend() == "jax":
        import jax

        def loss_of(trainable, non_trainable, xb, yb):
            pred, non_trainable = model.stateless_call(trainable, non_trainable, xb)
            return keras.ops.mean((pred - yb) ** 2), non_trainable

        @jax.jit
        def step(trainable, non_trainable, opt_vars, xb, yb):
            (_, non_trainable), grads = jax.value_and_grad(loss_of, has_aux=True)(trainable, non_trainable, xb, yb)
            trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
            return trainable, non_trainable, opt_vars

        state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in optimizer.variables],
        )
        for xb, yb in batches:
            state = step(*state, xb, yb)
        for variables, values in zip(
            (model.trainable_variables, model.non_trainable_variables, optimizer.variables), state
        ):
            for v, value in zip(variables, values):
                v.assign(value)
    else:
        import tensorflow as tf

        for xb, yb in batches:
            with tf.GradientTape() as tape:
                loss = keras.ops.mean((model(xb) - yb) ** 2)
            optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    return _record("own_loop", model, optimizer)


def mixed_precision_fit() -> dict[str, np.ndarray]:
    """Global norm 1 under the ``mixed_float16`` policy with Keras' ``LossScaleOptimizer`` outside the wrapper, three
    epochs of ``fit``: the weights and the telemetry, which must read true-scale norms on both backends (the spike
    batch overflows float16 once scaled, and the loss scaler skips it before the clipper sees it)."""
    x, y, weights = data()
    x = np.nan_to_num(x)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1, dtype="float32")]
        )
        model.set_weights(weights)
        inner = ClippingOptimizer(keras.optimizers.Adam(0.01), "global_norm", PARAMS["global_norm"])
        model.compile(optimizer=keras.optimizers.LossScaleOptimizer(inner), loss="mse")
        history = model.fit(
            x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=[ClipTelemetry()]
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    out = {f"mixed/weight{i}": w.astype("float32") for i, w in enumerate(model.get_weights())}
    out.update({f"mixed/{key}": np.asarray(values, np.float64) for key, values in history.history.items()})
    return out


def data_parallel_fit() -> dict[str, np.ndarray]:
    """JAX only: global norm 1 through ``fit`` on one device and under ``keras.distribution.DataParallel`` over two
    CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=2``), the same batches: both runs' weights and
    telemetry, which must agree (the wrapper sees the gradient of the whole batch)."""
    x, y, weights = data()
    x = np.nan_to_num(x)
    devices = keras.distribution.list_devices("cpu")
    out = {"data_parallel/devices": np.asarray(len(devices))}
    for name in ("one_device", "two_devices"):
        if name == "two_devices":
            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        try:
            model = _model(weights)
            model.compile(ClippingOptimizer(keras.optimizers.Adam(0.01), "global_norm", PARAMS["global_norm"]), "mse")
            history = model.fit(
                x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=[ClipTelemetry()]
            )
        finally:
            keras.distribution.set_distribution(None)
        out.update({f"data_parallel/{name}/weight{i}": w for i, w in enumerate(model.get_weights())})
        out.update({f"data_parallel/{name}/{k}": np.asarray(v, np.float64) for k, v in history.history.items()})
    return out


if __name__ == "__main__":
    import tempfile

    result = fit_all()
    result.update(train_on_batch_twice())
    result.update(own_loop())
    result.update(fit_reference("train_on_batch_reference", "zclip", 2))
    result.update(fit_reference("own_loop_reference", "global_norm", 1))
    result.update(mixed_precision_fit())
    if keras.backend.backend() == "jax":
        result.update(data_parallel_fit())
    with tempfile.TemporaryDirectory() as folder:
        result.update(save_load_and_continue(folder))
    result["backend"] = np.asarray(keras.backend.backend())
    np.savez(sys.argv[1], **result)
