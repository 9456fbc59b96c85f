"""Gradient clipping methods with one interface and per-step telemetry (TensorFlow, and JAX through Keras).

    from clipstudy import clipping
    clipper = clipping.get("zclip", z_thresh=2.5)
    state = clipper.init(model.trainable_variables)
    grads, state, stats = clipper(grads, model.trainable_variables, state)

``METHODS`` lists the registered methods in the study's order; see ``clipping.methods``.

For ``model.fit``: ``ClippingOptimizer`` (wraps any Keras 3 optimizer), ``ClipTelemetry`` (the
clipper's statistics in the training logs, hence in ``History``, ``CSVLogger`` and TensorBoard) and
``probe_threshold`` (a global-norm threshold from a short unclipped probe of your model). They are
imported on first use, so ``import clipstudy.clipping`` stays free of Keras.
"""

import importlib

from clipstudy.clipping.base import (
    REGISTRY,
    Clipper,
    get,
    global_norm,
    scale_to_global_norm,
    unitwise_norm,
)
from clipstudy.clipping.methods import (
    AdaGC,
    AdaptiveGradClip,
    AutoClip,
    GlobalNormClip,
    NoClip,
    NormClip,
    QuantileClip,
    ValueClip,
    ZClip,
)
from clipstudy.clipping.ops import percentile_linear

#: The registered methods, in the order they were defined (the order of every table and figure).
METHODS = tuple(REGISTRY)

_LAZY = {
    "ClippingOptimizer": "optimizer",
    "ClipTelemetry": "callbacks",
    "probe_threshold": "probe",
    "ThresholdProbe": "probe",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"clipstudy.clipping.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'clipstudy.clipping' has no attribute {name!r}")


__all__ = [
    "ClippingOptimizer",
    "ClipTelemetry",
    "probe_threshold",
    "ThresholdProbe",
    "METHODS",
    "REGISTRY",
    "Clipper",
    "get",
    "global_norm",
    "percentile_linear",
    "scale_to_global_norm",
    "unitwise_norm",
    "NoClip",
    "ValueClip",
    "NormClip",
    "GlobalNormClip",
    "AdaptiveGradClip",
    "AutoClip",
    "ZClip",
    "AdaGC",
    "QuantileClip",
]
