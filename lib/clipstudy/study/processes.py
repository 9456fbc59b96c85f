"""How the study starts the processes that train (notebook kernels, threshold probes): their environment, built as
a value and handed to the child (never written into this process's ``os.environ``), where their standard error
goes, and how often a kernel's start is tried.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: glibc's allocator in the kernels (and probes) that train: one arena, blocks up to 1 GiB from the heap, and
#: freed memory kept until 1 GiB of it is free. By default TensorFlow's thread allocates from an arena of its
#: own, each buffer over 32 MiB (a classifier evaluation batch's first activation is 86 MB) is mapped for it
#: and unmapped when freed, and mapped memory is faulted in page by page, a few hundred thousand page faults
#: a ``quick`` classifier run (the CHANGELOG's 0.3.0 has the measurement). Where they are and how much
#: memory is kept change, not a number. Applied on glibc 2.36 or later (where they were measured; an older
#: glibc may refuse a 1 GiB mmap threshold, and the trim threshold alone makes it worse), unless the
#: allocator is tuned already.
KERNEL_MALLOC = {
    "glibc.malloc.arena_max": "1",
    "glibc.malloc.mmap_threshold": str(1 << 30),
    "glibc.malloc.trim_threshold": str(1 << 30),
}
MALLOC_ENV = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def glibc_version() -> tuple[int, ...] | None:
    """The C library's version if it is glibc (``(2, 36)``), else None."""
    try:
        name, _, version = os.confstr("CS_GNU_LIBC_VERSION").partition(" ")
    except (AttributeError, ValueError, OSError):
        return None
    return tuple(int(p) for p in version.split(".") if p.isdigit()) if name == "glibc" else None


def child_environment(env) -> dict[str, str]:
    """The environment, as a value, of a process that trains (a kernel, a probe) started with ``env``: TensorFlow's
    C++ log quiet; in a Dask worker, without the glibc setting its nanny gave it (``dask_malloc_trim``); glibc's
    allocator tuned (``KERNEL_MALLOC``) unless ``env`` tunes it already or the C library is not glibc 2.36+."""
    env = {"TF_CPP_MIN_LOG_LEVEL": "3", **env}
    nanny = dask_malloc_trim()
    if nanny is not None and env.get("MALLOC_TRIM_THRESHOLD_") == nanny:
        del env["MALLOC_TRIM_THRESHOLD_"]
    given = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t]
    tuned = {t.partition("=")[0] for t in given} & set(KERNEL_MALLOC) or any(v in env for v in MALLOC_ENV)
    if not tuned and (glibc_version() or (0,)) >= (2, 36):
        env["GLIBC_TUNABLES"] = ":".join([*given, *(f"{k}={v}" for k, v in KERNEL_MALLOC.items())])
    return env


#: A kernel that dies before answering its first request has run no cell (kernels started at the same
#: moment by two workers can pick the same free port), so its start is tried again, up to this often.
KERNEL_START_TRIES = 3
KERNEL_START_FAILURE = "Kernel died before replying to kernel_info"


def dask_malloc_trim() -> str | None:
    """In a Dask worker, the ``MALLOC_TRIM_THRESHOLD_`` its nanny set (``distributed.nanny.pre-spawn-environ``), else
    None. A kernel that inherits it hands TensorFlow's buffers back after every op and faults them in again: a
    quick classifier step took twice as long. A value the user set otherwise is not the nanny's, and stays."""
    if "distributed" not in sys.modules:
        return None
    import dask.config
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:  # not in a worker: nothing was set by a nanny
        return None
    value = (dask.config.get("distributed.nanny.pre-spawn-environ", None) or {}).get("MALLOC_TRIM_THRESHOLD_")
    return None if value is None else str(value)


class stderr_to:
    """Send this process's standard error (inherited by the kernels it starts) to ``path`` for a
    while; ``None`` leaves it alone."""

    def __init__(self, path: Path | None):
        self.path = path

    def __enter__(self):
        if self.path is None:
            return self
        sys.stderr.flush()
        self.saved = os.dup(2)
        self.log = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(self.log, 2)
        return self

    def __exit__(self, *exc):
        if self.path is not None:
            sys.stderr.flush()
            os.dup2(self.saved, 2)
            os.close(self.saved)
            os.close(self.log)
        return False
