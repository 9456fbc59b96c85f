"""TensorFlow and Keras, imported on first use and without their start-up log lines.

``from clipstudy.lazy_tf import tf, keras`` gives stand-ins that import the real module the first
time an attribute is read, so importing a clipstudy module costs nothing until TensorFlow is
actually needed (the sweep driver and the report's profile checks never need it).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import sys
import tempfile
from pathlib import Path


def import_tensorflow_quietly():
    """Import TensorFlow once, with C++ log lines of its start-up sent to /dev/null.

    ``TF_CPP_MIN_LOG_LEVEL`` does not cover the lines TensorFlow writes before its logger
    starts (oneDNN and CUDA notices), so standard error is muted at the descriptor level
    for the length of the import only. Errors still surface as Python exceptions.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    tf.get_logger().setLevel("ERROR")
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:  # absl ships with TensorFlow; nothing to quiet without it
        pass
    return tf


#: The prefix absl gives a C++ log line (severity, date, time, thread): two copies of one notice differ only there.
_ABSL_PREFIX = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ ")


def once_each(text: str) -> str:
    """``text`` with every line after the first of its kind left out, two lines being of one kind when they differ
    only in absl's prefix (TensorFlow's two shared libraries each write the same start-up notices)."""
    seen, kept = set(), []
    for line in text.splitlines(keepends=True):
        key = _ABSL_PREFIX.sub("", line).rstrip()
        if key not in seen:
            seen.add(key)
            kept.append(line)
    return "".join(kept)


def import_tensorflow_once():
    """Import TensorFlow as a user's own ``import tensorflow`` would (its logging untouched, every notice kept: a
    GPU user needs its CUDA lines), but with each start-up line written once instead of twice: standard error is
    captured at the descriptor level for the length of the import, then written out without repeats (also when
    the import fails, so its own messages are never lost)."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        try:
            os.dup2(captured.fileno(), 2)
            import tensorflow as tf
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            sys.stderr.write(once_each(captured.read().decode("utf-8", "replace")))
            sys.stderr.flush()
    return tf


def keras_backend() -> str:
    """The backend ``import keras`` loads: ``KERAS_BACKEND``, else the one in Keras' config file, else TensorFlow."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    config = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "keras.json"
    try:
        return json.loads(config.read_text()).get("backend", "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def import_keras_once():
    """``import keras``, its TensorFlow backend (when that is the one it loads) imported by ``import_tensorflow_once``
    first, so that TensorFlow's start-up lines appear once."""
    if "keras" not in sys.modules and keras_backend() == "tensorflow":
        import_tensorflow_once()
    return importlib.import_module("keras")


class _Deferred:
    """A module imported on first attribute access: after TensorFlow, quietly (the study's modules), or
    plainly (``quiet=False``: the clipping library, which must not touch a user's process-wide logging; TensorFlow's
    start-up lines are then written once each)."""

    def __init__(self, name: str, quiet: bool = True):
        self._name = name
        self._quiet = quiet
        self._module = None

    def _load(self):
        if self._module is None:
            if self._quiet:
                import_tensorflow_quietly()
            elif self._name == "tensorflow":
                import_tensorflow_once()
            elif self._name == "keras":
                import_keras_once()
            self._module = importlib.import_module(self._name)
        return self._module

    def __getattr__(self, attr):
        return getattr(self._load(), attr)

    def __repr__(self):
        return f"<deferred module {self._name!r}{' (loaded)' if self._module else ''}>"


def verbose() -> bool:
    """Whether the chatter of the tools under the study (Dask's INFO lines, kernels' warnings,
    TensorFlow Datasets' progress) should reach the terminal: ``CLIPSTUDY_VERBOSE=1`` (``make VERBOSE=1``,
    or ``-v`` on the command lines) brings it back."""
    return os.environ.get("CLIPSTUDY_VERBOSE", "") not in ("", "0")


def quiet_dask() -> None:
    """Dask's distributed logs at ERROR only, in this process and in the workers it starts (unless verbose)."""
    if verbose():
        return
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    logging.getLogger("distributed").setLevel(logging.ERROR)


tf = _Deferred("tensorflow")
keras = _Deferred("keras")
#: For ``clipstudy.clipping``: deferred, and imported as the user's own ``import tensorflow`` would be, its start-up
#: lines written once.
plain_tf = _Deferred("tensorflow", quiet=False)
plain_keras = _Deferred("keras", quiet=False)
