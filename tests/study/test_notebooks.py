"""The notebooks: jupytext .py files paired with .ipynb files that carry only clean outputs."""

import ast
import dataclasses

import nbformat
import pytest

from clipstudy import paths
from clipstudy.study import notebooks, processes
from clipstudy.training import RunConfig

SOURCES = sorted(paths.NOTEBOOKS.glob("[0-9]*.py"))


def test_there_is_one_run_notebook_for_every_task_and_each_notebook_has_its_pair():
    assert [p.stem for p in SOURCES] == ["00_data", "10_train", "30_clip_your_own_model", "90_report"]
    assert all(p.with_suffix(".ipynb").exists() for p in SOURCES)


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_the_py_and_the_ipynb_agree(source):
    assert notebooks.disagreements(source) == []


def test_a_changed_py_is_reported_as_a_disagreement(tmp_path):
    source = SOURCES[1]
    copy = tmp_path / source.name
    copy.write_text(source.read_text().replace("# ## Train", "# ## Training, edited"))
    (tmp_path / source.with_suffix(".ipynb").name).write_bytes(source.with_suffix(".ipynb").read_bytes())
    problems = notebooks.disagreements(copy)
    assert len(problems) == 1 and "Training, edited" in problems[0]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_the_first_code_cell_is_the_parameters_cell(source):
    nb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert first.metadata.get("tags") == ["parameters"]


@pytest.mark.parametrize("source", [s for s in SOURCES if "train" in s.stem], ids=lambda p: p.stem)
def test_run_notebooks_take_only_run_config_fields(source):
    nb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    tree = ast.parse(next(c for c in nb.cells if c.cell_type == "code").source)
    config = next(n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "config")
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    assert {k.arg for k in config.keywords} <= fields


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_stored_notebooks_carry_no_widget_state_and_no_temporary_paths(source):
    text = source.with_suffix(".ipynb").read_text()
    assert notebooks.WIDGET_MIME not in text and '"widgets"' not in text
    assert "output_path" not in text and "/tmp/" not in text


def test_clean_strips_widgets_and_papermill_paths():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    nb.cells[0].outputs = [
        nbformat.v4.new_output("display_data", data={notebooks.WIDGET_MIME: {}, "text/plain": "0%"}),
        nbformat.v4.new_output("stream", text="kept\n"),
    ]
    nb.metadata["widgets"] = {"state": {}}
    nb.metadata["papermill"] = {"input_path": "/a", "output_path": "/tmp/b", "parameters": {"x": 1}}
    kept = notebooks.clean(nbformat.from_dict(nb), keep_papermill=True)
    assert [o.output_type for o in kept.cells[0].outputs] == ["stream"]
    assert "widgets" not in kept.metadata and kept.metadata["papermill"] == {"parameters": {"x": 1}}
    assert "papermill" not in notebooks.clean(nbformat.from_dict(nb)).metadata


def test_a_kernel_that_dies_at_start_is_started_again_up_to_its_tries(tmp_path, monkeypatch):
    """Two workers can start kernels on the same free port at once; the one that dies at start is started again,
    and after KERNEL_START_TRIES failures the error says how often it was tried."""
    from clipstudy.study import kernels

    calls = []
    real = kernels.WarmKernel._start_once

    def flaky(self):
        calls.append(1)
        if len(calls) == 1:
            raise kernels.KernelError("Kernel died before replying to kernel_info")
        real(self)

    monkeypatch.setattr(kernels.WarmKernel, "_start_once", flaky)
    source = tmp_path / "tiny.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, source)
    notebooks.execute(source, tmp_path / "out.ipynb")
    assert len(calls) == 2 and (tmp_path / "out.ipynb").is_file()

    def dead(self):
        calls.append(1)
        raise kernels.KernelError("Kernel died before replying to kernel_info")

    monkeypatch.setattr(kernels.WarmKernel, "_start_once", dead)
    with pytest.raises(kernels.KernelError, match=f"\\({processes.KERNEL_START_TRIES} tries\\)"):
        notebooks.execute(source, tmp_path / "again.ipynb")
    assert len(calls) == 2 + processes.KERNEL_START_TRIES


def _checked_outputs(nb) -> list[str]:
    """The text each nbval-checked cell printed."""
    return [
        "".join(o.get("text", "") for o in c.get("outputs", []))
        for c in nb.cells
        if c.cell_type == "code" and "NBVAL_CHECK_OUTPUT" in c.source
    ]


def test_what_nbval_checks_in_a_run_notebook_does_not_depend_on_the_cpu(tmp_path, monkeypatch):
    """Another CPU, simulated on this one: oneDNN capped at AVX picks other kernels and changes the run's
    last bits (``make kernel-settings`` shows it), yet every output nbval compares stays as stored."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX")
    source = paths.NOTEBOOKS / "10_train.ipynb"
    out = tmp_path / "run"
    executed = notebooks.execute(source, tmp_path / "nb.ipynb", {"output_dir": str(out)})
    from clipstudy.study import runfiles

    assert runfiles.load_summary(out)["platform"]["onednn_isa"] == "avx"
    stored = _checked_outputs(nbformat.read(source, as_version=4))
    assert stored and _checked_outputs(nbformat.read(executed, as_version=4)) == stored


TUNED = "glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=1073741824"


def test_a_training_kernel_gets_glibcs_allocator_tuned_unless_it_is_tuned_already(monkeypatch):
    monkeypatch.setattr(processes, "glibc_version", lambda: (2, 36))
    assert processes.child_environment({"PATH": "/bin"}) == {
        "PATH": "/bin",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "GLIBC_TUNABLES": TUNED,
    }
    other = processes.child_environment({"GLIBC_TUNABLES": "glibc.cpu.x86_avx=0", "TF_CPP_MIN_LOG_LEVEL": "1"})
    assert other == {"GLIBC_TUNABLES": f"glibc.cpu.x86_avx=0:{TUNED}", "TF_CPP_MIN_LOG_LEVEL": "1"}
    for users in ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=8"}, {"MALLOC_TRIM_THRESHOLD_": "65536"}):
        assert processes.child_environment(users).get("GLIBC_TUNABLES") == users.get("GLIBC_TUNABLES")
    for version in ((2, 31), None):  # an older glibc, or another C library: left alone
        monkeypatch.setattr(processes, "glibc_version", lambda version=version: version)
        assert "GLIBC_TUNABLES" not in processes.child_environment({})


FAULTS = """
import ctypes, resource
libc, size = ctypes.CDLL(None), 96 << 20
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
def once():
    p = libc.malloc(size); ctypes.memset(p, 1, size); libc.free(p)
once()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    once()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif((processes.glibc_version() or (0,)) < (2, 36), reason="the tuning applies to glibc 2.36+ only")
def test_the_tuned_allocator_reuses_a_freed_large_buffer_instead_of_faulting_it_in_again():
    """A 96 MB buffer allocated, filled and freed four times: by default glibc maps and unmaps it each time and
    every page faults in again (about 24,600 faults a time); in a training kernel's environment it stays."""
    import os
    import subprocess
    import sys

    def faults(env):
        return int(subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True).stdout)

    plain = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_")}
    default, tuned = faults(plain), faults(processes.child_environment(plain))
    assert default > 4 * 20_000 and tuned < default / 20, (default, tuned)


def test_the_committed_report_notebook_shows_the_published_paper_study():
    """The report notebook's defaults are the published profile, and its stored outputs (what nbval compares) count
    the runs the bundle holds: planned runs (a threshold from data read from its probe, which names the run) less
    the run folders under results/paper/runs, counted here."""
    import re

    from clipstudy.study.plan import load_plan

    nb = nbformat.read(paths.NOTEBOOKS / "90_report.ipynb", as_version=4)
    parameters = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert re.search(r'^profile = "paper"', parameters.source, re.M)
    printed = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "stream"
    )
    plan = load_plan("paper")
    held = {p.name for p in (plan.bundle / "runs").iterdir() if p.is_dir()}
    missing = [s for s in plan.resolved(plan.bundle / "probes") if s is None or s.run_id not in held]
    if missing:
        assert f"INCOMPLETE: {len(missing)} of {len(plan.specs)} planned runs did not finish" in printed
    else:
        assert "INCOMPLETE" not in printed
