"""What the study's tests share: one published one-run profile, swept once per session (a sweep is mostly
start-up time). Tests copy it into their own folder before touching anything."""

import copy

import pytest
import yaml

from clipstudy.study import kernels, sweep

#: A one-run profile that publishes its run to a bundle.
PUBLISHED_PROFILE = {
    "publish": True,
    "experiments": [
        {
            "name": "t",
            "task": "classifier",
            "methods": ["none"],
            "settings": {"epochs": 1, "train_subset": 256, "test_subset": 100},
            "optimizers": {"adam": [0.001]},
            "seeds": [0],
        }
    ],
}


@pytest.fixture(autouse=True)
def no_warm_kernel_outlives_its_test():
    """Warm kernels a test started in this process (``verify``, ``kernels``) are shut down after it."""
    yield
    kernels.close_all()


@pytest.fixture
def one_run_profile():
    """A fresh copy of ``PUBLISHED_PROFILE``, for a test to write where it likes."""
    return copy.deepcopy(PUBLISHED_PROFILE)


@pytest.fixture(scope="session")
def swept(tmp_path_factory):
    """``PUBLISHED_PROFILE`` swept once: its folder (``pub.yaml``, ``results/``, ``reports/``; read only) and the
    sweep's result."""
    root = tmp_path_factory.mktemp("swept")
    (root / "pub.yaml").write_text(yaml.safe_dump(PUBLISHED_PROFILE))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLIPSTUDY_RESULTS_DIR", str(root / "results"))
        first = sweep.run_sweep(root / "pub.yaml", root / "reports", workers=1, progress=False)
    assert first.ok and len(first.done) == 1
    return root, first
