import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import clipstudy  # noqa: E402,F401  (imports TensorFlow quietly first)
import tensorflow as tf  # noqa: E402
from clipstudy.data import default_mnist_path  # noqa: E402


@pytest.fixture(scope="session")
def mnist():
    """The real data file (``make test`` fetches it first)."""
    from clipstudy.data import load_mnist

    path = default_mnist_path()
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make data` (make test does it for you)")
    return load_mnist(path)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def random_model_variables(rng):
    """Variables shaped like a small conv net's: HWIO kernel, bias, IO kernel, bias."""
    shapes = [(3, 3, 2, 4), (4,), (36, 5), (5,)]
    return [tf.Variable(rng.normal(size=s).astype(np.float32)) for s in shapes]
