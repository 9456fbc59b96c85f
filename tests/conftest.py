import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from clipstudy.lazy_tf import import_tensorflow_quietly  # noqa: E402

tf = import_tensorflow_quietly()

from clipstudy.data.mnist import default_mnist_path  # noqa: E402
from clipstudy.data.split import Split  # noqa: E402


@pytest.fixture(scope="session")
def mnist():
    """The real data file as arrays ``((x_train, y_train), (x_test, y_test))`` (``make test`` fetches it first)."""
    from clipstudy.data.mnist import load_mnist

    path = default_mnist_path()
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make data` (make test does it for you)")
    return load_mnist(path)


@pytest.fixture(scope="session")
def mnist_splits(mnist):
    """The same as ``(train, test)`` splits, what ``training.train`` takes."""
    (x_train, y_train), (x_test, y_test) = mnist
    return Split(x_train, y_train), Split(x_test, y_test)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
