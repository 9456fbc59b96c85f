"""Gradient clipping methods with one interface and per-step telemetry (TensorFlow only).

    from clipstudy import clipping
    clipper = clipping.get("zclip", z_thresh=2.5)
    state = clipper.init(model.trainable_variables)
    grads, state, stats = clipper(grads, model.trainable_variables, state)

``METHODS`` lists the registered methods in the study's order; see ``clipping.methods``.
"""
from clipstudy.clipping.base import (REGISTRY, Clipper, get, global_norm, percentile_linear,
                                     scale_to_global_norm, unitwise_norm)
from clipstudy.clipping.methods import (AdaptiveGradClip, AutoClip, GlobalNormClip, NoClip, NormClip,
                                        ValueClip, ZClip)

#: The registered methods, in the order they were defined (the order of every table and figure).
METHODS = tuple(REGISTRY)

__all__ = ["METHODS", "REGISTRY", "Clipper", "get", "global_norm", "percentile_linear", "scale_to_global_norm",
           "unitwise_norm", "NoClip", "ValueClip", "NormClip", "GlobalNormClip", "AdaptiveGradClip", "AutoClip",
           "ZClip"]
