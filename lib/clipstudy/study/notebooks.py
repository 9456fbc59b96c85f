"""Executing the study's notebooks with papermill, and keeping what is stored of them clean.

The notebooks live as jupytext percent-format ``.py`` files paired with ``.ipynb`` files
(``jupytext.toml``): the ``.py`` holds the code that is reviewed, the ``.ipynb`` the outputs that
nbval compares. A stored notebook carries no widget state (progress bars) and no temporary paths.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

from clipstudy.fileio import atomic_target
from clipstudy.lazy_tf import verbose
from clipstudy.study import kernels
from clipstudy.study.processes import stderr_to

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
KERNEL = kernels.KERNEL


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
    notebook; its standard error since the reset goes to ``log``. A failure discards that kernel. ``timeout``:
    seconds a cell may run (None: no limit); past it nbclient raises ``CellTimeoutError``, the kernel is discarded.
    """
    if kernel is not None:
        return _execute_warm(source, target, parameters, kernel, keep_papermill, log_output, log, timeout)
    # A kernel of its own, started with its environment handed to it as a value (``processes.child_environment``)
    # and shut down after: the same kernel and execution as a warm one's, without the runs before it.
    one_off = kernels.WarmKernel(kernels.KernelKey(str(Path(cwd or Path(source).parent)), None))
    one_off.start()
    try:
        return _execute_warm(source, target, parameters, one_off, keep_papermill, log_output, log, timeout, since=0)
    finally:
        one_off.close()


def _publish_executed(running: Path, target: Path, keep_papermill: bool) -> None:
    """The executed notebook papermill left at ``running`` (whole or up to a failed cell), cleaned, to ``target``."""
    if running.exists():
        nb = clean(nbformat.read(running, as_version=4), keep_papermill)
        with atomic_target(target) as tmp:
            nbformat.write(nb, str(tmp))
        running.unlink()


def _execute_warm(
    source, target, parameters, kernel, keep_papermill, log_output, log, timeout=None, since=None
) -> Path:
    """``execute`` in the warm ``kernel``: its reset, then the notebook; this process's standard error and what
    the kernel wrote to its own from byte ``since`` (default: its size now) go to ``log``. A failure discards the
    kernel, after its part of the log is copied."""
    import papermill as pm

    source, target = Path(source), Path(target)
    running = target.with_name(f".{target.stem}.running{target.suffix}")
    kept = log is not None
    log = Path(log) if kept else target.with_name(f".{target.stem}.kernel.log")
    since = kernel.log_size() if since is None else since
    failed = False
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
        failed = True
        raise
    finally:
        if log.exists():
            kernel.copy_log(since, log)
        if failed:
            kernels.discard(kernel)  # whatever state the failure left, no later run sees it
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
            # papermill writes the whole notebook at each cell's start and end; a sweep's run
            # is written once, when papermill completes it (after a failure too), which is all anyone reads.
            output_path, nb_man.output_path = nb_man.output_path, None
            try:
                return client.execute()
            finally:
                nb_man.output_path = output_path
                async_kc.stop_channels()

    papermill_engines.register(WARM_ENGINE, WarmEngine)
    return WARM_ENGINE


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
