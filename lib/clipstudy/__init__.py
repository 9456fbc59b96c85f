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

__version__ = "0.3.0"
