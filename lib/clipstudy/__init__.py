"""clipstudy: a reproducible study of gradient clipping (TensorFlow 2 / Keras 3).

The subpackages import one way, each only from those before it:

* ``clipping``  the clipping methods (the study's seven, AdaGC, quantile tracking; lift it into any loop);
* ``training``  the run configuration, one training loop with gradient telemetry;
* ``data``      verified MNIST, the detection canvases and their TFDS builder;
* ``tasks``     what is learned: the classifier (the article's CNN) and the CenterNet-style detector;
* ``study``     run files, profiles, ``run_one`` and the sweep;
* ``analysis``  statistics, the claims audit, figures and the report.

``import clipstudy`` is cheap: TensorFlow is imported on first use, quietly.
"""

from clipstudy import lazy_tf

__version__ = "0.3.0"


def quiet_tensorflow():
    """Import TensorFlow now, without the start-up lines it writes to standard error before its logger starts
    (CUDA and CPU-feature notices, which ``TF_CPP_MIN_LOG_LEVEL`` does not reach), and set its Python and absl
    loggers to errors only; returns the module. Opt-in: ``clipstudy.clipping`` never touches your process's
    logging by itself. Call it before ``import keras`` or ``import tensorflow``."""
    return lazy_tf.import_tensorflow_quietly()
