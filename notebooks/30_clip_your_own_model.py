# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python (clipstudy)
#     language: python
#     name: clipstudy
# ---

# %% [markdown]
# # 30 · Clip your own model
#
# The study's clipping methods in an ordinary Keras workflow: `model.compile` and `model.fit`, no
# custom training loop. Three pieces of `clipstudy.clipping`, which installs with `pip install
# clipstudy` next to any TensorFlow ≥ 2.16 / Keras 3:
#
# * `probe_threshold`: a short unclipped probe of your model and data (weights put back afterwards)
#   that reports the gradient-norm percentiles and recommends a global-norm threshold;
# * `ClippingOptimizer`: wraps any Keras optimizer and clips before its update; here with ZClip;
# * `ClipTelemetry`: the clipper's statistics in the training logs, so `History`, `CSVLogger` and
#   `keras.callbacks.TensorBoard` record them.
#
# The model and data are stand-ins for yours: a small CNN on a slice of MNIST.
#
# What is tested (`tests/clipping/`): the TensorFlow backend, on one device and under
# `tf.distribute.MirroredStrategy` (two logical CPU devices: the wrapper clips the all-reduced gradient of the
# global batch, so a step equals the one-device step); the JAX backend in `fit` (the same weights as on
# TensorFlow within 1e-5, last section); any of the nine methods (the study's seven, AdaGC and quantile
# tracking), with norms in float32 whatever the gradients' dtype. Refused with a message that says why: the
# PyTorch backend (not tested here), other multi-replica strategies, and an inner optimizer that clips by itself.

# %% tags=["parameters"]
train_images = 6000  # a slice of MNIST's training set
epochs = 2
batch_size = 64
learning_rate = 3e-3
zclip = {"alpha": 0.97, "z_thresh": 2.5, "warmup_steps": 25}
logdir = None  # TensorBoard folder; None: a temporary one

# %%
import tempfile

import numpy as np

import clipstudy

clipstudy.quiet_tensorflow()  # TensorFlow's start-up lines kept off the page (opt-in: the library leaves logging alone)

import keras

from clipstudy.clipping import ClippingOptimizer, ClipTelemetry, probe_threshold

from clipstudy.analysis import runplots
from clipstudy.analysis.tensorboard import telemetry_steps
from clipstudy.data import mnist

(x, y), (x_test, y_test) = mnist.load_mnist()
x, y = x[:train_images, ..., None] / 255.0, y[:train_images]
x_test = x_test[..., None] / 255.0
logdir = logdir or tempfile.mkdtemp(prefix="clip-tb-")

keras.utils.set_random_seed(0)
model = keras.Sequential([
    keras.Input((28, 28, 1)),
    keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(),
    keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(),
    keras.layers.Flatten(), keras.layers.Dense(10),
])

# %% [markdown]
# ## What threshold? Ask the data
# The probe trains a copy of the optimizer without clipping for 100 steps, records each step's global
# gradient norm, and puts the weights back. Its recommendation is the norms' 90th percentile, the
# study's answer to which percentile to pick (use it with `"global_norm"`; ZClip below sets its own
# threshold).

# %%
model.compile(optimizer=keras.optimizers.Adam(learning_rate),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
probe = probe_threshold(model, x, y, batch_size=batch_size, steps=100)
print({f"p{q:g}": round(v, 2) for q, v in probe.percentiles().items()})
print("recommended global_norm threshold:", round(probe.threshold, 2))

# %%
# NBVAL_CHECK_OUTPUT
# What nbval compares: the probe's shape, the same on every CPU (its norms differ in their last digits).
print(f"{len(probe.norms)} norms recorded, all finite: {bool(np.isfinite(probe.norms).all())}, "
      f"percentiles reported: {sorted(probe.percentiles())}")

# %% [markdown]
# ## Train with ZClip inside `model.fit`
# The five lines a user copies: wrap the optimizer, compile, and put `ClipTelemetry` before
# TensorBoard so that TensorBoard sees the clipping statistics.

# %%
optimizer = ClippingOptimizer(keras.optimizers.Adam(learning_rate), "zclip", zclip)
model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
history = model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, validation_split=0.1,
                    callbacks=[ClipTelemetry(), keras.callbacks.TensorBoard(logdir, update_freq=1)])

# %%
print("recorded per epoch:", sorted(history.history))
for epoch in range(epochs):
    row = {k: round(v[epoch], 3) for k, v in history.history.items()
           if k in ("loss", "val_accuracy", "clip_norm_before", "clip_norm_after", "clip_fraction")}
    print(f"epoch {epoch + 1}:", row)
print("test accuracy:", round(model.evaluate(x_test, y_test, verbose=0)[1], 3))

# %% [markdown]
# ## What TensorBoard recorded
# `tensorboard --logdir <logdir>` shows these scalars live; here they are read back from the event
# file and drawn: the global gradient norm at every step before and after clipping, ZClip's threshold
# (mean + z_thresh × std of its running estimate, from the end of the warm-up) and the clipped steps.

# %%
# NBVAL_CHECK_OUTPUT
steps = telemetry_steps(logdir + "/train")
print(f"{len(steps)} steps logged, with columns {sorted(steps.columns)}")

# %%
print(f"{int(steps['clipped'].sum())} of them clipped")

# %%
fig = runplots.norm_trace(steps, title="ZClip inside model.fit, read back from TensorBoard")

# %% [markdown]
# ## The same wrapper on JAX
# A process has one Keras backend, so this runs one small fit (`clipstudy.clipping.demo.fit_demo`: a 2-layer
# regression whose targets spike once an epoch, Adam with ZClip, `ClipTelemetry`) in two new processes, one
# with `KERAS_BACKEND=tensorflow` and one with `KERAS_BACKEND=jax`. On JAX, `fit` steps through the optimizer's
# `stateless_apply`, and the wrapper's step is written in `keras.ops`; same weights, data order and seed give
# the same losses and norms to about six digits (the kernels differ, so the last bits may).

# %%
from clipstudy.clipping.demo import run_on

on_backend = {backend: run_on(backend) for backend in ("tensorflow", "jax")}
for key in ("loss", "clip_norm_before", "clip_norm_after", "clip_fraction"):
    print(f"{key:18}", "  ".join(f"{b}: {[round(v, 4) for v in on_backend[b][key]]}" for b in on_backend))

