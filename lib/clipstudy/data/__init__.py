"""The study's data: verified MNIST (``mnist``), the detection canvases (``canvases``, NumPy only;
``tfds_builder``, their TensorFlow Datasets builder), box formats (``boxes``) and the ``Split`` type.

Command line: ``python -m clipstudy.data`` fetches MNIST; ``--detection SIZE...`` builds canvases.
"""

from clipstudy.data.mnist import DataError, default_mnist_path, fetch_mnist, load_mnist
from clipstudy.data.split import Split, subset_indices

__all__ = ["DataError", "Split", "default_mnist_path", "fetch_mnist", "load_mnist", "subset_indices"]
