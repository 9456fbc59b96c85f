"""Warm kernels: runs executed one after another in one kernel are the runs a fresh kernel gives."""

import os
from pathlib import Path

import nbformat
import pytest
from papermill.exceptions import PapermillExecutionError

from clipstudy import paths
from clipstudy.study import differences, kernels, notebooks
from clipstudy.study.profiles import RUN_NOTEBOOK

RUN = paths.notebook(RUN_NOTEBOOK)
TINY = dict(task="classifier", method="none", optimizer="adam", learning_rate=0.001, epochs=1, train_subset=256,
            test_subset=100, eval_every=1, seed=0)  # fmt: skip
ADDING = dict(task="adding", method="global_norm", clip_params={"threshold": 1.0}, optimizer="sgd", learning_rate=0.1,
              task_params={"length": 10, "units": 8}, epochs=1, train_subset=256, test_subset=100, seed=0)  # fmt: skip
DETECTOR = dict(task="detector", method="global_norm", clip_params={"threshold": 10.0}, optimizer="adam",
                learning_rate=0.003, dataset="smoke", epochs=1, batch_size=32, train_subset=128, test_subset=64,
                eval_every=2, seed=0)  # fmt: skip


def notebook_of(path: Path, *cells: str) -> Path:
    """A notebook with a parameters cell (``tag``) and ``cells``, for the python3 kernel."""
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("tag = 'none'", metadata={"tags": ["parameters"]})]
        + [nbformat.v4.new_code_cell(c) for c in cells]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def outputs(path: Path) -> list:
    """Every code cell's execution count and outputs (text, figures as PNG bytes), metadata aside."""
    nb = nbformat.read(path, as_version=4)
    return [
        (c.execution_count, [{k: v for k, v in o.items() if k != "metadata"} for o in c.outputs])
        for c in nb.cells
        if c.cell_type == "code"
    ]


def printed(path: Path) -> str:
    return "".join(o.get("text", "") for _, outs in outputs(path) for o in outs)


def warm_then_fresh(tmp_path: Path, plan: dict) -> tuple[Path, Path]:
    """Execute ``plan``'s runs (name -> config) one after another in one warm kernel, then its last run in a
    kernel of its own; the last run's two folders (warm, fresh)."""
    key = kernels.KernelKey.for_notebook(RUN, 1)
    try:
        kernel = kernels.kernel_for(key)
        for name, config in plan.items():
            out = tmp_path / "warm" / name
            out.mkdir(parents=True)
            notebooks.execute(RUN, out / "nb.ipynb", {"config": config, "output_dir": str(out)}, kernel=kernel)
        assert kernels.kernel_for(key) is kernel and kernel.runs == len(plan)
    finally:
        kernels.close_all()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    notebooks.execute(RUN, fresh / "nb.ipynb", {"config": list(plan.values())[-1], "output_dir": str(fresh)})
    return tmp_path / "warm" / list(plan)[-1], fresh


@pytest.fixture
def kernel_key(tmp_path):
    key = kernels.KernelKey(str(tmp_path), None, "python3")
    yield key
    kernels.close_all()


def test_runs_after_other_runs_in_a_warm_kernel_equal_the_same_runs_in_fresh_kernels(tmp_path):
    """A classifier run, a recurrent run, then another classifier run (another seed and rate) in one warm
    kernel; the last again in a kernel of its own: the same files, bit for bit, and the same notebook
    (every printed line and figure, execution counts from 1)."""
    plan = {"first": TINY, "adding": ADDING, "last": dict(TINY, seed=3, learning_rate=0.01)}
    warm, fresh = warm_then_fresh(tmp_path, plan)
    assert differences.run_differences(warm, fresh) == []
    assert differences.run_differences(warm, tmp_path / "warm" / "first") != []  # the comparison can tell runs apart
    assert outputs(warm / "nb.ipynb") == outputs(fresh / "nb.ipynb")
    counts = [n for n, _ in outputs(warm / "nb.ipynb")]
    assert counts == list(range(1, len(counts) + 1))


def test_a_detector_run_from_the_kept_canvases_and_targets_equals_it_in_a_fresh_kernel(tmp_path):
    """The second detector run of a warm kernel reads no canvases and encodes no targets (the first left them,
    read-only): the same files, bit for bit, and the same notebook as in a kernel of its own."""
    warm, fresh = warm_then_fresh(tmp_path, {"first": DETECTOR, "last": dict(DETECTOR, seed=2, learning_rate=0.01)})
    assert differences.run_differences(warm, fresh) == []
    assert outputs(warm / "nb.ipynb") == outputs(fresh / "nb.ipynb")


def test_a_recurrent_run_from_the_kept_sequences_equals_it_in_a_fresh_kernel(tmp_path):
    """The second recurrent run of a warm kernel generates no sequences (the first left them, read-only): the
    same files, bit for bit, and the same notebook as in a kernel of its own."""
    warm, fresh = warm_then_fresh(tmp_path, {"first": ADDING, "last": dict(ADDING, seed=2, learning_rate=0.01)})
    assert differences.run_differences(warm, fresh) == []
    assert outputs(warm / "nb.ipynb") == outputs(fresh / "nb.ipynb")


def test_a_run_in_a_warm_kernel_sees_nothing_the_previous_run_defined(tmp_path, kernel_key):
    first = notebook_of(tmp_path / "a.ipynb", "leftover = 41", "import os\nprint(os.getpid())")
    second = notebook_of(tmp_path / "b.ipynb", "print('leftover' in dir(), tag)", "import os\nprint(os.getpid())")
    kernel = kernels.kernel_for(kernel_key)
    notebooks.execute(first, tmp_path / "a.out.ipynb", {"tag": "a"}, kernel=kernel)
    notebooks.execute(second, tmp_path / "b.out.ipynb", {"tag": "b"}, kernel=kernel)
    pid_a, pid_b = printed(tmp_path / "a.out.ipynb").split()[-1], printed(tmp_path / "b.out.ipynb").split()[-1]
    assert pid_a == pid_b  # the same kernel process ...
    assert printed(tmp_path / "b.out.ipynb").splitlines()[0] == "False b"  # ... with none of a's names
    counts = [n for n, _ in outputs(tmp_path / "b.out.ipynb")]
    assert counts == list(range(1, len(counts) + 1))


def test_a_failed_run_discards_its_kernel(tmp_path, kernel_key):
    fails = notebook_of(tmp_path / "fails.ipynb", "import os\nprint(os.getpid())", "raise ValueError('boom')")
    kernel = kernels.kernel_for(kernel_key)
    with pytest.raises(PapermillExecutionError, match="boom"):
        notebooks.execute(fails, tmp_path / "fails.out.ipynb", kernel=kernel)
    assert not kernel.alive() and "boom" in (tmp_path / "fails.out.ipynb").read_text()
    assert kernels.kernel_for(kernel_key) is not kernel


def test_a_kernel_is_replaced_for_other_threads_and_after_max_runs(tmp_path, kernel_key, monkeypatch):
    pid = notebook_of(tmp_path / "pid.ipynb", "import os\nprint(os.getpid())")
    first = kernels.kernel_for(kernel_key)
    other = kernels.kernel_for(kernels.KernelKey(kernel_key.cwd, 2, kernel_key.kernel_name))
    assert other is not first and not first.alive()
    monkeypatch.setattr(kernels, "MAX_RUNS", 2)
    pids = []
    for i in range(3):
        notebooks.execute(pid, tmp_path / f"{i}.ipynb", kernel=kernels.kernel_for(kernel_key))
        pids.append(printed(tmp_path / f"{i}.ipynb").strip())
    assert pids[0] == pids[1] != pids[2]


def test_each_run_log_holds_what_the_kernel_wrote_while_that_run_ran(tmp_path, kernel_key):
    says = notebook_of(tmp_path / "says.ipynb", "import os\nos.write(2, f'from {tag}\\n'.encode())")
    kernel = kernels.kernel_for(kernel_key)
    for tag in ("a", "b"):
        notebooks.execute(says, tmp_path / f"{tag}.ipynb", {"tag": tag}, kernel=kernel, log=tmp_path / f"{tag}.log")
    assert "from a" in (tmp_path / "a.log").read_text() and "from a" not in (tmp_path / "b.log").read_text()
    assert "from b" in (tmp_path / "b.log").read_text()


def test_close_all_shuts_every_kernel_down_and_removes_its_log(kernel_key):
    kernel = kernels.kernel_for(kernel_key)
    pid, log = kernel.km.provisioner.pid, kernel.log
    assert kernels.close_all() == 1
    assert not kernel.alive() and not log.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_warm_kernel_that_dies_mid_run_fails_the_run_within_seconds_and_is_replaced(tmp_path, kernel_key):
    """A kernel killed during a run (what an out-of-memory kill or a TensorFlow crash does) used to hang the sweep
    forever in a poll with no timeout; now the run fails with "Kernel died" and the next run gets a new kernel."""
    import time

    from nbclient.exceptions import DeadKernelError

    dies = notebook_of(tmp_path / "dies.ipynb", "import os, signal", "os.kill(os.getpid(), signal.SIGKILL)")
    kernel = kernels.kernel_for(kernel_key)
    started = time.monotonic()
    with pytest.raises(DeadKernelError, match="Kernel died"):
        notebooks.execute(dies, tmp_path / "dies.out.ipynb", kernel=kernel)
    assert time.monotonic() - started < 60
    assert not kernel.alive() and kernels.kernel_for(kernel_key) is not kernel
    after = notebook_of(tmp_path / "after.ipynb", "print(6 * 7)")
    notebooks.execute(after, tmp_path / "after.out.ipynb", kernel=kernels.kernel_for(kernel_key))
    assert printed(tmp_path / "after.out.ipynb").strip() == "42"


def test_a_warm_kernel_that_hangs_fails_the_run_at_its_timeout_and_is_replaced(tmp_path, kernel_key):
    """A kernel that hangs (alive, never answering: a deadlock, a stuck read) is not dead, so only a time limit
    ends its run: the run fails with nbclient's CellTimeoutError and the next run gets a new kernel."""
    import time

    from nbclient.exceptions import CellTimeoutError

    hangs = notebook_of(tmp_path / "hangs.ipynb", "import time", "time.sleep(600)")
    kernel = kernels.kernel_for(kernel_key)
    started = time.monotonic()
    with pytest.raises(CellTimeoutError):
        notebooks.execute(hangs, tmp_path / "hangs.out.ipynb", kernel=kernel, timeout=3)
    assert time.monotonic() - started < 60
    assert not kernel.alive() and kernels.kernel_for(kernel_key) is not kernel


def test_the_run_timeout_is_six_hours_unless_the_environment_says_otherwise(monkeypatch):
    from clipstudy.study import sweep

    monkeypatch.delenv("CLIPSTUDY_RUN_TIMEOUT", raising=False)
    assert sweep.run_timeout() == 21600
    monkeypatch.setenv("CLIPSTUDY_RUN_TIMEOUT", "0")
    assert sweep.run_timeout() is None
    monkeypatch.setenv("CLIPSTUDY_RUN_TIMEOUT", "ten")
    with pytest.raises(ValueError, match="CLIPSTUDY_RUN_TIMEOUT='ten' is not a number"):
        sweep.run_timeout()
