"""The few tensor operations the clipping rules are written in, for TensorFlow and for any Keras 3 backend.

Every rule in ``clipping.methods`` is written once, against the namespace ``xp`` it is handed, and runs on:

* ``TENSORFLOW``: TensorFlow's own ops, exactly the ones the study's published runs were computed with (so
  their bits do not move); used for TensorFlow tensors and variables, and on the TensorFlow backend.
* ``KERAS``: ``keras.ops``, for the other Keras backends (JAX is tested), where every shape is static:
  AutoClip's history is read through a sort with the unfilled slots at +inf instead of a dynamic slice.

``namespace_of(values)`` picks one from the values themselves, so a clipper needs no setting.
Both namespaces are tested against the same NumPy references.
"""

from __future__ import annotations

import math
import sys

from clipstudy.lazy_tf import plain_keras as keras
from clipstudy.lazy_tf import plain_tf as tf


class TensorFlowOps:
    """TensorFlow's ops (``tf.*``), as the study's runs were computed with them."""

    name = "tensorflow"

    @property
    def float32(self):
        return tf.float32

    @property
    def count_dtype(self):
        return tf.int64

    def is_wide(self, x) -> bool:
        return x.dtype in (tf.float32, tf.float64)

    def cast(self, x, dtype):
        return tf.cast(x, dtype)

    def constant(self, value, dtype=None):
        return tf.constant(value, dtype)

    def zeros(self, n: int, dtype):
        return tf.zeros([n], dtype)

    def fill(self, n: int, value: float):
        return tf.fill([n], value)

    def convert(self, x):
        return tf.convert_to_tensor(x)

    def ones_like(self, x):
        return tf.ones_like(x)

    def where(self, condition, x, y):
        return tf.where(condition, x, y)

    def minimum(self, x, y):
        return tf.minimum(x, y)

    def maximum(self, x, y):
        return tf.maximum(x, y)

    def clip(self, x, lower, upper):
        return tf.clip_by_value(x, lower, upper)

    def square(self, x):
        return tf.square(x)

    def sqrt(self, x):
        return tf.sqrt(x)

    def exp(self, x):
        return tf.exp(x)

    def sum(self, x, axis=None, keepdims=False):
        return tf.reduce_sum(x, axis=axis, keepdims=keepdims)

    def mean(self, x):
        return tf.reduce_mean(x)

    def norm(self, x):
        return tf.norm(x)

    def stack(self, xs):
        return tf.stack(xs)

    def add_n(self, xs):
        return tf.add_n(xs)

    def is_finite(self, x):
        return tf.math.is_finite(x)

    def is_inf(self, x):
        return tf.math.is_inf(x)

    def max_abs(self, x):
        return tf.reduce_max(tf.abs(x))

    def cond(self, pred, true_fn, false_fn):
        """Only the branch ``pred`` selects runs (in a graph too)."""
        return tf.cond(pred, true_fn, false_fn)

    def logical_not(self, x):
        return tf.logical_not(x)

    def equal(self, x, y):
        return tf.equal(x, y)

    def set_item(self, vector, index, value):
        """``vector`` with ``vector[index] = value`` (a new tensor)."""
        return tf.tensor_scatter_nd_update(vector, [[tf.cast(index, tf.int32)]], [value])

    def percentile_of_first(self, values, count, q: float):
        """``numpy.percentile(values[:count], q)`` (linear interpolation); ``count`` ≥ 1."""
        return percentile_linear(values[: tf.maximum(tf.cast(count, tf.int32), 1)], q)


def percentile_linear(values, q: float):
    """``numpy.percentile(values, q)`` with its default linear interpolation, for a 1-D TensorFlow tensor."""
    ordered = tf.sort(values)
    n = tf.shape(ordered)[0]
    position = (q / 100.0) * tf.cast(n - 1, tf.float64)
    below = tf.cast(tf.floor(position), tf.int32)
    above = tf.minimum(below + 1, n - 1)
    weight = tf.cast(position - tf.floor(position), ordered.dtype)
    lo, hi = ordered[below], ordered[above]
    return lo + (hi - lo) * weight


class KerasOps:
    """``keras.ops``, for every Keras backend; shapes stay static (what JAX's ``jit`` needs)."""

    name = "keras"
    float32 = "float32"
    count_dtype = "int32"  # JAX keeps 32-bit integers unless x64 is switched on

    @property
    def _ops(self):
        return keras.ops

    def is_wide(self, x) -> bool:
        return keras.backend.standardize_dtype(x.dtype) in ("float32", "float64")

    def cast(self, x, dtype):
        return self._ops.cast(x, dtype)

    def constant(self, value, dtype=None):
        return self._ops.convert_to_tensor(value, dtype=dtype or ("int32" if isinstance(value, int) else "float32"))

    def zeros(self, n: int, dtype):
        return self._ops.zeros((n,), dtype=dtype)

    def fill(self, n: int, value: float):
        return self._ops.full((n,), value, dtype="float32")

    def convert(self, x):
        return self._ops.convert_to_tensor(x)

    def ones_like(self, x):
        return self._ops.ones_like(x)

    def where(self, condition, x, y):
        return self._ops.where(condition, x, y)

    def minimum(self, x, y):
        return self._ops.minimum(x, y)

    def maximum(self, x, y):
        return self._ops.maximum(x, y)

    def clip(self, x, lower, upper):
        return self._ops.clip(x, lower, upper)

    def square(self, x):
        return self._ops.square(x)

    def sqrt(self, x):
        return self._ops.sqrt(x)

    def exp(self, x):
        return self._ops.exp(x)

    def sum(self, x, axis=None, keepdims=False):
        return self._ops.sum(x, axis=axis, keepdims=keepdims)

    def mean(self, x):
        return self._ops.mean(x)

    def norm(self, x):
        return self._ops.sqrt(self._ops.sum(self._ops.square(x)))

    def stack(self, xs):
        return self._ops.stack(xs)

    def add_n(self, xs):
        return self._ops.sum(self._ops.stack(xs))

    def is_finite(self, x):
        return self._ops.isfinite(x)

    def is_inf(self, x):
        return self._ops.isinf(x)

    def max_abs(self, x):
        return self._ops.max(self._ops.abs(x))

    def cond(self, pred, true_fn, false_fn):
        return self._ops.cond(pred, true_fn, false_fn)

    def logical_not(self, x):
        return self._ops.logical_not(x)

    def equal(self, x, y):
        return self._ops.equal(x, y)

    def set_item(self, vector, index, value):
        ops = self._ops
        return ops.slice_update(vector, [ops.cast(index, "int32")], ops.reshape(ops.cast(value, vector.dtype), (1,)))

    def percentile_of_first(self, values, count, q: float):
        """``numpy.percentile(values[:count], q)`` with static shapes: the slots from ``count`` on are set to
        +inf, which a sort puts last, so the first ``count`` sorted values are those of ``values[:count]``."""
        ops = self._ops
        n = values.shape[0]
        count = ops.maximum(ops.cast(count, "int32"), 1)
        filled = ops.arange(n, dtype="int32") < count
        ordered = ops.sort(ops.where(filled, values, math.inf))
        # q·(count − 1) is exact in float32 for the percentiles people use (a few decimals), so the interpolation
        # weight is rounded once, not twice (float64 may be off, as on JAX by default).
        scaled = ops.cast(count - 1, "float32") * q
        floor = ops.floor(scaled / 100.0)
        below = ops.cast(floor, "int32")
        above = ops.minimum(below + 1, count - 1)
        weight = (scaled - 100.0 * floor) / 100.0
        lo, hi = ops.take(ordered, below), ops.take(ordered, above)
        return lo + (hi - lo) * ops.cast(weight, ordered.dtype)


TENSORFLOW = TensorFlowOps()
KERAS = KerasOps()


def namespace_of(*groups):
    """The namespace for these values: TensorFlow for TensorFlow tensors and variables (and for NumPy arrays and
    Python numbers, which TensorFlow takes as they are), ``keras.ops`` for the tensors and variables of another
    Keras backend. ``groups`` are lists of values (``None`` skipped)."""
    for group in groups:
        for value in group:
            if value is None:
                continue
            module = type(value).__module__
            if module.startswith("tensorflow"):
                return TENSORFLOW
            if module.startswith(("jax", "jaxlib", "torch")):
                return KERAS
            if module.startswith("keras"):  # a keras.Variable: the backend it lives on decides
                loaded = sys.modules.get("keras")
                return TENSORFLOW if loaded is None or loaded.backend.backend() == "tensorflow" else KERAS
    return TENSORFLOW
