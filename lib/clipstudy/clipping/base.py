"""The clipper interface, the registry every method joins by being defined, and the shared helpers.

A method is a ``Clipper`` subclass with a ``name``; defining it registers it. Its parameters are
its ``__init__`` arguments (so ``get`` knows them from the signature), and ``flops_per_parameter``
counts the floating-point work it adds per parameter and step.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from clipstudy.clipping.ops import TENSORFLOW, namespace_of

_NAN = float("nan")

#: name -> Clipper subclass, in the order the methods were defined.
REGISTRY: dict[str, type[Clipper]] = {}


def wide(g, xp=TENSORFLOW):
    """``g`` in a type wide enough for a norm: float16 and bfloat16 are cast to float32 (a float16
    norm of 300 would read inf); float32 and float64 come back as they are (the same tensor)."""
    if xp.is_wide(g):
        return g
    return xp.cast(g, xp.float32)


def global_norm(grads, xp=None, overflow_safe: bool = True):
    """L2 norm over every non-None tensor, computed as Keras computes it, in float32 at least. Where that
    overflows (finite elements whose squares pass float32's 3.4e38: an element of 1e20 does), the norm is taken
    again scaled by the largest element, as robust norm implementations do, so that only a gradient holding inf
    or NaN has a non-finite norm; every other step keeps Keras' bits (the scaled form runs only then)."""
    xp = xp or namespace_of(grads)
    tensors = [wide(g, xp) for g in grads if g is not None]
    if not tensors:
        return xp.constant(0.0)
    plain = xp.sqrt(xp.sum(xp.stack([xp.sum(xp.square(g)) for g in tensors])))
    if not overflow_safe:
        return plain

    def scaled():
        peak = xp.max_abs(xp.stack([xp.cast(xp.max_abs(g), plain.dtype) for g in tensors]))
        squares = [xp.cast(xp.sum(xp.square(g / xp.cast(peak, g.dtype))), plain.dtype) for g in tensors]
        return xp.where(xp.is_finite(peak), peak * xp.sqrt(xp.sum(xp.stack(squares))), plain)  # inf stays inf

    return xp.cond(xp.is_inf(plain), scaled, lambda: plain)


def scale_to_global_norm(grads, norm, threshold, trigger=None, xp=None):
    """Rescale all gradients together to global norm ``threshold`` where ``trigger`` holds
    (default: ``norm > threshold``); elsewhere they come back bit for bit.

    The scale is Keras' ``threshold * min(1/norm, 1/threshold)``, so a triggered step gives
    exactly the gradients of Keras' ``global_clipnorm``.
    """
    xp = xp or namespace_of(grads)
    if trigger is None:
        trigger = norm > threshold
    scale = xp.where(trigger, threshold * xp.minimum(1.0 / norm, 1.0 / threshold), 1.0)
    return [None if g is None else g * xp.cast(scale, g.dtype) for g in grads]


def unitwise_norm(x, xp=None):
    """Norm of each output unit of a Keras weight: whole tensor for scalars and vectors,
    per column of a Dense kernel (IO), per output channel of a Conv2D kernel (HWIO)."""
    xp = xp or namespace_of([x])
    rank = len(x.shape)
    x = wide(x, xp)
    if rank <= 1:
        return xp.sqrt(xp.sum(xp.square(x)))
    if rank in (2, 3):
        return xp.sqrt(xp.sum(xp.square(x), axis=0, keepdims=True))
    if rank == 4:
        return xp.sqrt(xp.sum(xp.square(x), axis=(0, 1, 2), keepdims=True))
    raise ValueError(f"unitwise_norm: a tensor of rank {rank} (shape {x.shape}); AGC handles ranks 0 to 4")


def num_elements(x) -> int:
    """The number of elements of a tensor of static shape."""
    return math.prod(int(d) for d in x.shape)


def make_stats(before, after, clipped, threshold, xp=TENSORFLOW) -> dict:
    return {
        "norm_before": before,
        "norm_after": after,
        "clipped": xp.cast(clipped, xp.float32),
        "threshold": xp.cast(threshold, xp.float32),
        "nonfinite": xp.logical_not(xp.is_finite(before)),
    }


#: float32's smallest normal and largest finite numbers: a parameter outside them is 0 (or denormal) or inf
#: in the float32 variables it is compared with, and training would freeze or never clip.
FLOAT32_RANGE = (1.1754943508222875e-38, 3.4028234663852886e38)


def check_positive(method: str, name: str, value) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{method}: {name}={value!r} is invalid; it must be a finite number > 0")
    low, high = FLOAT32_RANGE
    if not low <= value <= high:
        raise ValueError(
            f"{method}: {name}={value!r} is invalid; it is not representable in float32, the dtype of the "
            f"gradients it acts on (valid: {low:.7g} to {high:.7g})"
        )
    return float(value)


class Clipper:
    """Base class: stateless, identity. Subclasses set ``name``, override ``_clip`` (and ``_init`` if stateful).

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
        """The method's initial state for ``variables``, as tensors of their backend (see ``_init``)."""
        variables = list(variables)
        return self._init(variables, namespace_of(variables))

    def _init(self, variables, xp) -> dict:
        return {}

    def __call__(self, grads, variables, state, *, overflow_safe: bool = True):
        """Clip ``grads``; returns ``(clipped, new state, stats)``. ``overflow_safe=False`` takes the norms as
        Keras does, which reads inf once the squares pass float32 (a norm of about 1.8e19) and so reports such a
        step as non-finite: the study's training loop, whose published runs were made so, asks for it."""
        grads, variables = list(grads), list(variables)
        xp = namespace_of(grads, variables)
        before = global_norm(grads, xp, overflow_safe)
        clipped, state, n_clipped, threshold = self._clip(xp, grads, variables, state, before)
        after = before if clipped is grads else global_norm(clipped, xp, overflow_safe)
        return clipped, state, make_stats(before, after, n_clipped, threshold, xp)

    def _clip(self, xp, grads, variables, state, norm):
        """The rule, written once in the ops of ``xp`` (``clipping.ops``): returns the clipped gradients, the new
        state, the share clipped and the threshold."""
        return grads, state, 0.0, _NAN

    def config(self) -> dict[str, Any]:
        """The parameters that define this clipper, for run summaries."""
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def get(name: str | Clipper, **clip_params) -> Clipper:
    """The clipper called ``name`` (one of ``REGISTRY``) built with the method's parameters ``clip_params``.

    Raises:
      ValueError: unknown name, a parameter the method does not take, or a bad value.
    """
    if isinstance(name, Clipper):
        if clip_params:
            raise ValueError(f"get: parameters {sorted(clip_params)} given with an already built {name!r}")
        return name
    if name not in REGISTRY:
        raise ValueError(f"unknown clipping method {name!r}; valid choices: {', '.join(REGISTRY)}")
    cls = REGISTRY[name]
    accepted = cls.parameter_names()
    unknown = sorted(set(clip_params) - set(accepted))
    if unknown:
        valid = ", ".join(accepted) if accepted else "none"
        raise ValueError(f"{name}: unknown parameter(s) {', '.join(unknown)}; it takes: {valid}")
    return cls(**clip_params)
