"""Executing the study's notebooks with papermill, and keeping what is stored of them clean.

The notebooks live as jupytext percent-format ``.py`` files paired with ``.ipynb`` files
(``jupytext.toml``): the ``.py`` holds the code that is reviewed, the ``.ipynb`` the outputs that
nbval compares. A stored notebook carries no widget state (progress bars) and no temporary paths.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import nbformat

from clipstudy._quiet import verbose
from clipstudy.fileio import atomic_target

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
KERNEL = "python3"


def clean(nb: nbformat.NotebookNode, keep_papermill: bool = False) -> nbformat.NotebookNode:
    """Drop widget state and widget outputs; drop papermill's paths (and, unless ``keep_papermill``,
    its timings), so the same execution stores the same file wherever it ran."""
    nb.metadata.pop("widgets", None)
    papermill = nb.metadata.get("papermill")
    if papermill is not None:
        for key in ("input_path", "output_path"):
            papermill.pop(key, None)
        if not keep_papermill:
            nb.metadata.pop("papermill")
    for cell in nb.cells:
        if not keep_papermill:
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if WIDGET_MIME not in o.get("data", {})]
    return nb


#: glibc's allocator in the kernels (and probes) that train: one arena, blocks up to 1 GiB from the heap, and
#: freed memory kept until 1 GiB of it is free. By default TensorFlow's thread allocates from an arena of its
#: own, each buffer over 32 MiB (a classifier evaluation batch's first activation is 86 MB) is mapped for it
#: and unmapped when freed, and mapped memory is faulted in page by page: a ``quick`` classifier run took
#: 460,000 page faults and 1.5 s of system time, its evaluations 4.2 s; with these, 6,000 and 0.02 s, its
#: evaluations 2.6 s (AMD EPYC Zen 3, glibc 2.36). Where they are and how much memory is kept change, not
#: a number. Applied on glibc 2.36 or later (where they were measured; an older glibc may refuse a 1 GiB
#: mmap threshold, and the trim threshold alone makes it worse), unless the allocator is tuned already.
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


def kernel_environment(env) -> dict[str, str]:
    """``env`` for a process that trains (a kernel, a probe): TensorFlow's C++ log quiet, and glibc's allocator
    tuned (``KERNEL_MALLOC``) unless ``env`` tunes it already or the C library is not glibc 2.36+."""
    env = {"TF_CPP_MIN_LOG_LEVEL": "3", **env}
    given = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t]
    tuned = {t.partition("=")[0] for t in given} & set(KERNEL_MALLOC) or any(v in env for v in MALLOC_ENV)
    if not tuned and (glibc_version() or (0,)) >= (2, 36):
        env["GLIBC_TUNABLES"] = ":".join([*given, *(f"{k}={v}" for k, v in KERNEL_MALLOC.items())])
    return env


#: A kernel that dies before answering its first request has run no cell (kernels started at the same
#: moment by two workers can pick the same free port), so its start is tried again, up to this often.
KERNEL_START_TRIES = 3
KERNEL_START_FAILURE = "Kernel died before replying to kernel_info"


def execute(
    source: str | Path,
    target: str | Path,
    parameters: dict | None = None,
    *,
    cwd: str | Path | None = None,
    keep_papermill: bool = False,
    log_output: bool = False,
    log: str | Path | None = None,
    kernel=None,
    timeout: float | None = None,
) -> Path:
    """Execute ``source`` (an ``.ipynb``) with ``parameters`` into ``target``, cleaned.

    The kernel's own standard error (its start-up warnings, TensorFlow's C++ lines) goes to ``log``
    (default: ``.<target>.kernel.log`` beside ``target``, removed after a success), not the terminal,
    unless ``CLIPSTUDY_VERBOSE`` is set. A failing cell raises papermill's ``PapermillExecutionError``;
    the notebook executed up to the failure is still written to ``target`` (whole, never half a file).

    ``kernel``: a ``kernels.WarmKernel`` to execute in (reset first) instead of a kernel started for this
    notebook; its standard error since the reset goes to ``log``. A failure discards that kernel.

    ``timeout``: seconds any one cell may run (a run's training is one cell); past it nbclient raises
    ``CellTimeoutError`` and the kernel, hung rather than dead, is discarded. None: no limit.
    """
    if kernel is not None:
        return _execute_warm(source, target, parameters, kernel, keep_papermill, log_output, log, timeout)
    import papermill as pm  # deferred: only executions need it

    source, target = Path(source), Path(target)
    running = target.with_name(f".{target.stem}.running{target.suffix}")
    kept = log is not None
    log = Path(log) if kept else target.with_name(f".{target.stem}.kernel.log")
    os.environ.update(kernel_environment(os.environ))  # papermill's kernel inherits this process's environment
    try:
        with stderr_to(None if verbose() else log):
            for attempt in range(1, KERNEL_START_TRIES + 1):
                try:
                    pm.execute_notebook(
                        str(source),
                        str(running),
                        parameters=parameters or {},
                        kernel_name=KERNEL,
                        progress_bar=False,
                        cwd=str(cwd or source.parent),
                        log_output=log_output,
                        execution_timeout=timeout,
                    )
                    break
                except RuntimeError as exc:  # papermill's cell errors are not RuntimeErrors
                    if KERNEL_START_FAILURE not in str(exc) or attempt == KERNEL_START_TRIES:
                        raise
                    os.write(
                        2,
                        f"kernel start failed ({exc}); starting another "  # to the log, where stderr goes
                        f"({attempt + 1}/{KERNEL_START_TRIES})\n".encode(),
                    )
        if not kept:
            log.unlink(missing_ok=True)
    finally:
        _publish_executed(running, target, keep_papermill)
    return target


def _publish_executed(running: Path, target: Path, keep_papermill: bool) -> None:
    """The executed notebook papermill left at ``running`` (whole or up to a failed cell), cleaned, to ``target``."""
    if running.exists():
        nb = clean(nbformat.read(running, as_version=4), keep_papermill)
        with atomic_target(target) as tmp:
            nbformat.write(nb, str(tmp))
        running.unlink()


def _execute_warm(source, target, parameters, kernel, keep_papermill, log_output, log, timeout=None) -> Path:
    """``execute`` in the warm ``kernel``: its reset, then the notebook; this process's standard error and
    what the kernel wrote to its own meanwhile go to ``log``, as in a kernel started for the notebook."""
    import papermill as pm

    import clipstudy.study.kernels as kernels

    source, target = Path(source), Path(target)
    running = target.with_name(f".{target.stem}.running{target.suffix}")
    kept = log is not None
    log = Path(log) if kept else target.with_name(f".{target.stem}.kernel.log")
    since = kernel.log_size()
    try:
        with stderr_to(None if verbose() else log):
            kernel.reset()
            pm.execute_notebook(
                str(source),
                str(running),
                parameters=parameters or {},
                kernel_name=KERNEL,
                engine_name=_warm_engine(),
                progress_bar=False,
                log_output=log_output,
                warm_kernel=kernel,
                execution_timeout=timeout,
            )
        kernel.runs += 1
        if not kept:
            log.unlink(missing_ok=True)
    except BaseException:
        kernels.discard(kernel)  # whatever state the failure left, no later run sees it
        raise
    finally:
        if log.exists():
            kernel.copy_log(since, log)
        _publish_executed(running, target, keep_papermill)
    return target


WARM_ENGINE = "clipstudy-warm"


def _warm_engine() -> str:
    """Register (once) papermill's nbclient engine that executes in a given, already started kernel."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.log import logger

    class WarmEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(
            cls, nb_man, kernel_name, log_output=False, warm_kernel=None, execution_timeout=None, **kwargs
        ):
            from jupyter_client.asynchronous import AsyncKernelClient

            client = PapermillNotebookClient(
                nb_man,
                km=warm_kernel.km,
                kernel_name=kernel_name,
                log=logger,
                log_output=log_output,
                timeout=execution_timeout,
            )
            # An asynchronous client of the same kernel, as nbclient expects: with the kernel's own blocking one,
            # nbclient's wait for a reply blocked its event loop, its kernel-alive check never ran, and a kernel
            # that died mid-run (killed, out of memory) hung the sweep forever. Now a death is seen within seconds
            # (DeadKernelError) and the run fails with that reason; nbclient neither starts nor stops the kernel.
            async_kc = AsyncKernelClient()
            async_kc.load_connection_info(warm_kernel.km.get_connection_info())
            async_kc.start_channels()
            client.kc = async_kc
            # papermill writes the whole notebook at each cell's start and end (about 0.1 s a run); a sweep's run
            # is written once, when papermill completes it (after a failure too), which is all anyone reads.
            output_path, nb_man.output_path = nb_man.output_path, None
            try:
                return client.execute()
            finally:
                nb_man.output_path = output_path
                async_kc.stop_channels()

    papermill_engines.register(WARM_ENGINE, WarmEngine)
    return WARM_ENGINE


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


def cells_of(nb) -> list[tuple[str, str, tuple]]:
    """What a paired ``.py`` and ``.ipynb`` must agree on: each cell's type, source and tags."""
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in nb.cells]


def disagreements(py_file: str | Path) -> list[str]:
    """How the ``.ipynb`` paired with ``py_file`` differs from it (empty when they agree)."""
    import jupytext  # deferred: only the pairing check and refresh need it

    py_file = Path(py_file)
    ipynb = py_file.with_suffix(".ipynb")
    if not ipynb.is_file():
        return [f"{ipynb} is missing: run `make notebooks`"]
    text, stored = cells_of(jupytext.read(py_file)), cells_of(nbformat.read(ipynb, as_version=4))
    problems = (
        [f"{ipynb.name} has {len(stored)} cells, {py_file.name} has {len(text)}"] if len(text) != len(stored) else []
    )
    for i, (a, b) in enumerate(zip(text, stored)):
        if a != b:
            problems.append(f"cell {i} differs between {py_file.name} and {ipynb.name}: {a[1][:60]!r} vs {b[1][:60]!r}")
    return problems


def refresh(py_file: str | Path) -> Path:
    """Rebuild the ``.ipynb`` paired with ``py_file`` from it and execute it with its defaults (the
    outputs nbval compares)."""
    import jupytext

    py_file = Path(py_file)
    ipynb = py_file.with_suffix(".ipynb")
    nb = jupytext.read(py_file)
    if ipynb.is_file():  # keep the stored cell ids, so a refresh diffs only where something changed
        stored = nbformat.read(ipynb, as_version=4).cells
        for new, old in zip(nb.cells, stored):
            if new.cell_type == old.cell_type and "id" in old:
                new["id"] = old["id"]
    source = ipynb.with_name(f".{ipynb.stem}.source.ipynb")
    nbformat.write(nb, source)
    try:
        return execute(source, ipynb, cwd=py_file.parent)
    finally:
        source.unlink(missing_ok=True)


def main(argv=None) -> int:
    """``python -m clipstudy.study.notebooks check|refresh FILE.py...``"""
    parser = argparse.ArgumentParser(
        prog="python -m clipstudy.study.notebooks",
        description="Check or refresh the .ipynb paired with each jupytext .py.",
    )
    parser.add_argument("command", choices=["check", "refresh"])
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    bad = 0
    for f in args.files:
        if args.command == "refresh":
            print(f"executed {refresh(f)}")
        for problem in disagreements(f):
            bad += 1
            print(f"error: {problem}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
