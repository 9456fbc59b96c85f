"""The clipper interface, the registry every method joins by being defined, and the shared helpers.

A method is a ``Clipper`` subclass with a ``name``; defining it registers it. Its parameters are
its ``__init__`` arguments (so ``get`` knows them from the signature), and ``flops_per_parameter``
counts the floating-point work it adds per parameter and step.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from clipstudy._quiet import plain_tf as tf

_NAN = float("nan")

#: name -> Clipper subclass, in the order the methods were defined.
REGISTRY: dict[str, type[Clipper]] = {}


def wide(g):
    """``g`` in a type wide enough for a norm: float16 and bfloat16 are cast to float32 (a float16
    norm of 300 would read inf); float32 and float64 come back as they are (the same tensor)."""
    if g.dtype in (tf.float32, tf.float64):
        return g
    return tf.cast(g, tf.float32)


def global_norm(grads):
    """L2 norm over every non-None tensor, computed as Keras computes it, in float32 at least."""
    squares = [tf.reduce_sum(tf.square(wide(g))) for g in grads if g is not None]
    if not squares:
        return tf.constant(0.0)
    return tf.sqrt(tf.reduce_sum(tf.stack(squares)))


def scale_to_global_norm(grads, norm, threshold, trigger=None):
    """Rescale all gradients together to global norm ``threshold`` where ``trigger`` holds
    (default: ``norm > threshold``); elsewhere they come back bit for bit.

    The scale is Keras' ``threshold * min(1/norm, 1/threshold)``, so a triggered step gives
    exactly the gradients of Keras' ``global_clipnorm``.
    """
    if trigger is None:
        trigger = norm > threshold
    scale = tf.where(trigger, threshold * tf.minimum(1.0 / norm, 1.0 / threshold), 1.0)
    return [None if g is None else g * tf.cast(scale, g.dtype) for g in grads]


def unitwise_norm(x):
    """Norm of each output unit of a Keras weight: whole tensor for scalars and vectors,
    per column of a Dense kernel (IO), per output channel of a Conv2D kernel (HWIO)."""
    rank = x.shape.rank
    x = wide(x)
    if rank <= 1:
        return tf.sqrt(tf.reduce_sum(tf.square(x)))
    if rank in (2, 3):
        return tf.sqrt(tf.reduce_sum(tf.square(x), axis=0, keepdims=True))
    if rank == 4:
        return tf.sqrt(tf.reduce_sum(tf.square(x), axis=[0, 1, 2], keepdims=True))
    raise ValueError(f"unitwise_norm: a tensor of rank {rank} (shape {x.shape}); AGC handles ranks 0 to 4")


def percentile_linear(values, q: float):
    """``numpy.percentile(values, q)`` with its default linear interpolation, for a 1-D tensor."""
    ordered = tf.sort(values)
    n = tf.shape(ordered)[0]
    position = (q / 100.0) * tf.cast(n - 1, tf.float64)
    below = tf.cast(tf.floor(position), tf.int32)
    above = tf.minimum(below + 1, n - 1)
    weight = tf.cast(position - tf.floor(position), ordered.dtype)
    lo, hi = ordered[below], ordered[above]
    return lo + (hi - lo) * weight


def make_stats(before, after, clipped, threshold) -> dict:
    return {
        "norm_before": before,
        "norm_after": after,
        "clipped": tf.cast(clipped, tf.float32),
        "threshold": tf.cast(threshold, tf.float32),
        "nonfinite": tf.logical_not(tf.math.is_finite(before)),
    }


def check_positive(method: str, name: str, value) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{method}: {name}={value!r} is invalid; it must be a finite number > 0")
    return float(value)


class Clipper:
    """Base class: stateless, identity. Subclasses set ``name``, override ``_clip`` (and ``init`` if stateful).

    Class attributes a method sets:
      name: its registry name.
      flops_per_parameter: floating-point operations it adds per parameter and step beyond the
        gradient itself, counted from its rule (norms 2, rescale 1, compare/select 1-2; per-step
        scalar work such as AutoClip's sort of its history or ZClip's EMA is left out).
      reference_params: the setting used where the study needs one example of the method
        (``make bench``); empty means the defaults.
    """

    name = "none"
    flops_per_parameter = 0
    reference_params: dict[str, Any] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:  # a subclass that only refines a method is not a new method
            return
        if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
            raise TypeError(
                f"clipping method {cls.name!r} is defined twice ({REGISTRY[cls.name].__name__}, {cls.__name__})"
            )
        REGISTRY[cls.name] = cls

    @classmethod
    def parameter_names(cls) -> tuple[str, ...]:
        """The parameters ``get`` accepts for this method: its ``__init__`` arguments."""
        if cls.__init__ is object.__init__:
            return ()
        return tuple(p for p in inspect.signature(cls.__init__).parameters if p != "self")

    def init(self, variables) -> dict:
        return {}

    def __call__(self, grads, variables, state):
        grads = list(grads)
        before = global_norm(grads)
        clipped, state, n_clipped, threshold = self._clip(grads, list(variables), state, before)
        after = before if clipped is grads else global_norm(clipped)
        return clipped, state, make_stats(before, after, n_clipped, threshold)

    def _clip(self, grads, variables, state, norm):
        return grads, state, 0.0, _NAN

    def config(self) -> dict[str, Any]:
        """The parameters that define this clipper, for run summaries."""
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def get(name: str | Clipper, **params) -> Clipper:
    """The clipper called ``name`` (one of ``REGISTRY``) built with ``params``.

    Raises:
      ValueError: unknown name, a parameter the method does not take, or a bad value.
    """
    if isinstance(name, Clipper):
        if params:
            raise ValueError(f"get: parameters {sorted(params)} given with an already built {name!r}")
        return name
    if name not in REGISTRY:
        raise ValueError(f"unknown clipping method {name!r}; valid choices: {', '.join(REGISTRY)}")
    cls = REGISTRY[name]
    accepted = cls.parameter_names()
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        valid = ", ".join(accepted) if accepted else "none"
        raise ValueError(f"{name}: unknown parameter(s) {', '.join(unknown)}; it takes: {valid}")
    return cls(**params)
