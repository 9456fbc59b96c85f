"""clipstudy: a reproducible study of gradient clipping (TensorFlow 2 / Keras 3).

Modules: ``data`` (verified MNIST), ``clipping`` (seven methods, one interface),
``models`` (the article's CNN), ``training`` (one loop with gradient telemetry).
"""
from clipstudy._quiet import import_tensorflow_quietly

import_tensorflow_quietly()

__version__ = "0.1.0"
