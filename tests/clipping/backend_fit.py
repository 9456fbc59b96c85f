"""One small ``fit`` per clipping method through ``ClippingOptimizer``, on the Keras backend this process runs on
(``KERAS_BACKEND``): weights and ``ClipTelemetry``'s epoch logs are saved to the ``.npz`` named on the command
line, with a save / load / continue round trip. ``test_backends`` runs it under TensorFlow and under JAX and
compares the two files.

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


if __name__ == "__main__":
    import tempfile

    result = fit_all()
    with tempfile.TemporaryDirectory() as folder:
        result.update(save_load_and_continue(folder))
    result["backend"] = np.asarray(keras.backend.backend())
    np.savez(sys.argv[1], **result)
