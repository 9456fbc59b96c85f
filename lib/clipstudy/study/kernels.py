"""Warm kernels: a sweep worker executes its runs' notebooks one after another in one Jupyter kernel.

A run's notebook in a kernel of its own pays for the kernel's start and for importing TensorFlow, Keras
and the study's modules (more than a ``quick`` classifier run's 64 training steps take: docs/speed.md),
every run. A warm kernel pays for them once per worker.

What makes a run in a warm kernel the run it would be in a kernel of its own:

* before each run, ``reset_kernel_state`` runs in the kernel: IPython's reset (the user namespace, the
  input and output history, the execution count back to 1, so the stored notebook numbers its cells as
  a fresh kernel does), Keras' global state cleared (``clear_session``: its seed generator, layer name
  counters), matplotlib's figures closed, garbage collected (what survives, the imported modules
  mostly, is then frozen out of later collections: ``gc.freeze``). The run then seeds Python, NumPy,
  TensorFlow and Keras itself (``training.set_determinism``), as it does in a fresh kernel;
* what a process can set only once, TensorFlow's thread counts and the kernel's working directory, is
  the kernel's identity (``KernelKey``): a run that asks for other threads gets another kernel;
* a run that fails, a kernel that died, or one that has executed ``MAX_RUNS`` runs is replaced by a
  fresh kernel, so one bad run cannot change another and memory cannot creep.

The study's modules keep no state between calls but the caches listed in ``clipstudy.caches`` (each named and
bounded: the MNIST arrays, the detection canvases and the detector's encoded targets of them, the adding problem's
sequences, all read-only; and the last runs' compiled training steps, which a run of the same shape loads its own
start into: its weights, optimizer slots, clipper state and examples, instead of tracing them again). So what
stays warm is code (imported modules, autograph's conversions, compiled steps) and input read and encoded once
per worker. A kernel starts with glibc's
allocator tuned for TensorFlow's large buffers (``processes.KERNEL_MALLOC``). Tested
(``tests/study/test_kernels.py``): runs executed after other runs in one kernel write the same files, bit
for bit, and the same notebook (every output, figures included) as the same runs executed each in a fresh
kernel.

The kernel's own standard error (C++ log lines) goes to a file per kernel; each run's ``kernel.log``
receives the part written while it ran.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from clipstudy.lazy_tf import verbose
from clipstudy.study.processes import KERNEL_START_TRIES, child_environment, stderr_to

#: Runs a kernel executes before it is replaced by a fresh one (bounds what a long sweep can accumulate).
MAX_RUNS = 40
#: Seconds to wait for a kernel to start, and for its reset between runs.
START_TIMEOUT_S = 120
RESET_TIMEOUT_S = 120


def reset_kernel_state() -> None:
    """Run in the kernel before each run: forget everything the previous run left (see the module's text)."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None:
        shell.reset(new_session=True)  # namespace, history, execution count 1; imported modules stay
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session(free_memory=False)  # collected once, below
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")
    gc.collect()
    # What is still alive now (the imported modules, mostly) is left out of later collections: a full
    # collection of TensorFlow's heap is slow, and the reset makes two.
    gc.freeze()


RESET_CODE = "from clipstudy.study.kernels import reset_kernel_state as _r; _r()"


#: The Jupyter kernel spec every notebook of the study runs in (the environment's own Python).
KERNEL = "python3"


@dataclass(frozen=True)
class KernelKey:
    """What a kernel is started with and cannot change afterwards."""

    cwd: str
    threads: int | None
    kernel_name: str = KERNEL

    @classmethod
    def for_notebook(cls, notebook: str | Path, threads: int | None) -> KernelKey:
        """The kernel a notebook runs in: started in the notebook's folder (its relative paths), with
        ``threads`` TensorFlow threads (None: a one-off kernel that sets none)."""
        return cls(str(Path(notebook).parent), threads)


class KernelError(RuntimeError):
    """The kernel could not be started or reset."""


class WarmKernel:
    """One Jupyter kernel kept between notebook executions (``notebooks.execute(..., kernel=)``)."""

    def __init__(self, key: KernelKey):
        self.key = key
        self.runs = 0
        self.km = self.kc = None
        fd, name = tempfile.mkstemp(prefix="clipstudy-kernel-", suffix=".log")
        os.close(fd)
        self.log = Path(name)

    def start(self) -> None:
        """Start the kernel; a start that dies at once (two workers that picked the same free port) is
        tried again, up to ``processes.KERNEL_START_TRIES`` times."""
        for attempt in range(1, KERNEL_START_TRIES + 1):
            try:
                self._start_once()
                return
            except KernelError as exc:
                if attempt == KERNEL_START_TRIES:
                    said = self.log.read_text(errors="replace").strip().splitlines()[-5:] if self.log.exists() else []
                    self.log.unlink(missing_ok=True)
                    raise KernelError(f"{exc} ({KERNEL_START_TRIES} tries); it said: {' | '.join(said)}") from None

    def _start_once(self) -> None:
        from jupyter_client.manager import KernelManager  # deferred: only executions need it

        self.km = KernelManager(kernel_name=self.key.kernel_name)
        with stderr_to(None if verbose() else self.log):  # inherited by the kernel for its whole life
            self.km.start_kernel(
                cwd=self.key.cwd,
                env=child_environment(os.environ),
                extra_arguments=["--HistoryManager.hist_file=:memory:"],
            )
        self.kc = self.km.client()
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=START_TIMEOUT_S)
        except RuntimeError as exc:
            self.close(keep_log=True)
            raise KernelError(f"the kernel did not start: {exc}") from exc
        self.kc.allow_stdin = False

    def alive(self) -> bool:
        return self.km is not None and self.km.is_alive()

    def reset(self) -> None:
        """Forget the previous run (``reset_kernel_state``), without entering the kernel's history."""
        errors = []

        def keep_errors(msg):
            if msg["msg_type"] == "error":
                errors.append(f"{msg['content']['ename']}: {msg['content']['evalue']}")

        reply = self.kc.execute_interactive(
            RESET_CODE, store_history=False, timeout=RESET_TIMEOUT_S, output_hook=keep_errors
        )
        if reply["content"]["status"] != "ok":
            raise KernelError(f"resetting the kernel failed: {'; '.join(errors) or reply['content']['status']}")

    def log_size(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def copy_log(self, since: int, target: Path) -> None:
        """Append what the kernel wrote to standard error from byte ``since`` on to ``target``."""
        if not self.log.exists():
            return
        with open(self.log, "rb") as src, open(target, "ab") as dst:
            src.seek(since)
            dst.write(src.read())

    def close(self, keep_log: bool = False) -> None:
        if self.kc is not None:
            self.kc.stop_channels()
        if self.km is not None and self.km.has_kernel:
            self.km.shutdown_kernel(now=True)
        self.km = self.kc = None
        if not keep_log:
            self.log.unlink(missing_ok=True)


_local = threading.local()  # one kernel per executing thread (a Dask worker may run several tasks at once)
_all: list[WarmKernel] = []
_all_lock = threading.Lock()


def kernel_for(key: KernelKey) -> WarmKernel:
    """This thread's warm kernel for ``key``, started (or replaced: another key, dead, or ``MAX_RUNS`` used)."""
    current = getattr(_local, "kernel", None)
    if current is not None and (current.key != key or not current.alive() or current.runs >= MAX_RUNS):
        discard(current)
        current = None
    if current is None:
        current = WarmKernel(key)
        current.start()
        _local.kernel = current
        with _all_lock:
            if not _all:
                atexit.register(close_all)
            _all.append(current)
    return current


def discard(kernel: WarmKernel) -> None:
    """Shut ``kernel`` down; the next run on its thread starts a fresh one."""
    kernel.close()
    if getattr(_local, "kernel", None) is kernel:
        _local.kernel = None
    with _all_lock:
        if kernel in _all:
            _all.remove(kernel)


def close_all() -> int:
    """Shut down every warm kernel of this process (the sweep calls it on each worker at its end)."""
    with _all_lock:
        kernels = list(_all)
    for kernel in kernels:
        discard(kernel)
    return len(kernels)
