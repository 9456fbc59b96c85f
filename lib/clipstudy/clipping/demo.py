"""One small ``fit`` through ``ClippingOptimizer`` and ``ClipTelemetry``, on the Keras backend of the process.

    KERAS_BACKEND=jax python -m clipstudy.clipping.demo        # prints the epoch logs as JSON

``run_on(backend)`` runs it in a fresh process with that backend (a process has one Keras backend), so a
notebook on TensorFlow can show the same fit on JAX. The model, data and seed are fixed: the two backends
start from the same weights and see the same batches in the same order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np

from clipstudy.clipping.callbacks import ClipTelemetry
from clipstudy.clipping.optimizer import ClippingOptimizer


def fit_demo(method: str = "zclip", clip_params: dict | None = None, epochs: int = 3, seed: int = 0) -> dict:
    """A 2-layer regression (64 examples, one batch of spiked targets) fitted with Adam under ``method``;
    the ``History`` of ``fit`` with ``ClipTelemetry``'s epoch values, plus ``backend``."""
    rng = np.random.RandomState(seed)
    x = rng.rand(256, 4).astype("float32")
    y = x.sum(1, keepdims=True)
    y[160:168] *= 50.0  # one batch whose gradient spikes, every epoch
    weights = [
        (rng.randn(4, 16) * 0.5).astype("float32"),
        np.zeros(16, "float32"),
        (rng.randn(16, 1) * 0.5).astype("float32"),
        np.zeros(1, "float32"),
    ]
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(1)])
    model.set_weights(weights)
    optimizer = ClippingOptimizer(keras.optimizers.Adam(0.01), method, clip_params or {"warmup_steps": 5})
    model.compile(optimizer=optimizer, loss="mse")
    history = model.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0, callbacks=[ClipTelemetry()])
    return {"backend": keras.backend.backend(), **{k: [float(v) for v in vs] for k, vs in history.history.items()}}


def run_on(backend: str, timeout: float = 600) -> dict:
    """``fit_demo`` in a new Python process whose Keras runs on ``backend`` ("tensorflow" or "jax")."""
    if backend not in ("tensorflow", "jax"):
        raise ValueError(f"run_on: backend={backend!r} is invalid; valid choices: tensorflow, jax")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-m", "clipstudy.clipping.demo"], env=env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"the demo fit on {backend} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(fit_demo()))
