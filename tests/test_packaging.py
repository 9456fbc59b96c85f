"""The core library as a wheel, installed into a fresh virtual environment with only its own dependencies.

To stay cheap and offline, the fresh environment sees this environment's packages through a ``.pth``
file (so pip finds TensorFlow, Keras and NumPy already installed and downloads nothing; ``--no-index``
makes any attempt fail), and the script it runs blocks every study-only dependency: the core must
import and train without them.
"""

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

import clipstudy
from clipstudy.paths import REPO

CORE = {"tensorflow", "keras", "numpy"}
STUDY_ONLY = [
    "pandas",
    "pyarrow",
    "yaml",
    "scipy",
    "tqdm",
    "matplotlib",
    "seaborn",
    "PIL",
    "tensorflow_datasets",
    "pycocotools",
    "papermill",
    "nbformat",
    "jupytext",
    "dask",
    "distributed",
    "tensorboard",
]

SCRIPT = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = set(sys.argv[1].split(","))

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not a core dependency")

    sys.meta_path.insert(0, Block())
    import numpy as np
    import clipstudy
    from clipstudy.clipping import ClippingOptimizer, ClipTelemetry, probe_threshold
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
    model.compile(ClippingOptimizer(keras.optimizers.Adam(1e-2), "zclip", {"warmup_steps": 2}),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    probe = probe_threshold(model, x, y, batch_size=16, steps=8)
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[ClipTelemetry()])
    print("FROM", clipstudy.__file__)
    print("LOSS", history.history["loss"][0], history.history["loss"][-1])
    print("NORM", history.history["clip_norm_before"][-1], "THRESHOLD", probe.threshold)
""")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    # built from a copy, so the build's own folders never land in the working tree
    shutil.copytree(REPO / "lib", source / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (found,) = out.glob("clipstudy-*.whl")
    return found


def test_the_wheel_declares_ranges_for_the_core_and_puts_the_study_in_an_extra(wheel):
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode()
        assert "clipstudy/py.typed" in archive.namelist()  # type checkers read the package's annotations
        assert any(n.endswith("LICENSE") for n in archive.namelist())
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    core = [r for r in requires if "extra ==" not in r]
    assert {r.split(">")[0].split("=")[0].strip() for r in core} == CORE
    assert not any("==" in r for r in core)  # ranges, not pins
    assert any(r.startswith("pandas") and 'extra == "study"' in r for r in requires)
    assert "Requires-Python: >=3.10" in metadata


def test_the_wheel_installs_offline_into_a_fresh_environment_and_fits_a_model_with_the_wrapper(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "outer_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-index", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    run = subprocess.run(
        [str(python), "-c", SCRIPT, ",".join(STUDY_ONLY)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in run.stdout.splitlines() if line[:4] in ("FROM", "LOSS", "NORM"))
    assert lines["FROM"].startswith(str(venv))  # the installed wheel, not the source tree
    first, last = map(float, lines["LOSS"].split())
    assert last < first
    assert importlib.metadata.version("clipstudy") == clipstudy.__version__


def test_quiet_tensorflow_keeps_tensorflows_start_up_lines_off_standard_error():
    """TensorFlow writes CUDA and CPU notices to fd 2 before its logger starts; after clipstudy.quiet_tensorflow()
    importing Keras and running a layer print none of them (the plain import is left to TensorFlow)."""
    code = (
        "import clipstudy; clipstudy.quiet_tensorflow(); import keras; "
        "print(keras.layers.Dense(2)(keras.ops.ones((1, 3))).shape)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "(1, 2)"
    chatter = [line for line in done.stderr.splitlines() if re.match(r"(I|W|E)0000 |WARNING: All log messages", line)]
    assert not chatter, done.stderr


def _start_up_lines(code: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # make test sets it; users do not
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return [re.sub(r"^[IWEF]\d{4} [\d:.]+\s+\d+ ", "", line) for line in done.stderr.splitlines()]


def test_the_clipping_library_writes_each_of_tensorflows_start_up_lines_once_and_loses_none():
    """A plain ``import tensorflow`` writes its start-up notices twice (two of its shared libraries write each);
    importing the library's Keras wrapper writes every one of them, once. Which notices appear depends on the
    machine (CUDA, CPU features), so the reference is the plain import on this one."""
    layer = "import keras; keras.layers.Dense(2)(keras.ops.ones((1, 3)))"
    plain = _start_up_lines(f"import tensorflow; {layer}")
    wrapper = _start_up_lines(f"from clipstudy.clipping import ClippingOptimizer; {layer}")
    assert plain, "TensorFlow wrote no start-up line to compare with"
    assert len(wrapper) == len(set(wrapper)), wrapper
    assert set(wrapper) == set(plain)
    assert clipstudy.lazy_tf.once_each("x\nI0000 00:00:1.5  12 a.cc:3] y\nx\nI0000 00:00:2.25  13 a.cc:3] y\nz\n") == (
        "x\nI0000 00:00:1.5  12 a.cc:3] y\nz\n"
    )
