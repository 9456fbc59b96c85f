"""Import TensorFlow without its start-up log lines, which would otherwise land in every notebook."""
from __future__ import annotations

import os
import sys


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
