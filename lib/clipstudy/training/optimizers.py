"""The study's optimizers by name."""

from __future__ import annotations

from clipstudy.lazy_tf import keras
from clipstudy.training.config import OPTIMIZERS


def make_optimizer(name: str, learning_rate: float):
    """A Keras optimizer by study name; ``momentum`` is SGD with Nesterov off and momentum 0.9."""
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate)
    if name == "momentum":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=learning_rate)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    raise ValueError(f"unknown optimizer {name!r}; valid choices: {', '.join(OPTIMIZERS)}")
