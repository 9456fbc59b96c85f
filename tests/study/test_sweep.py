"""The sweep runner end to end on the smoke profile, resumption, and its refusals."""

import dataclasses
import json
import os
import shutil
import warnings
from pathlib import Path

import nbformat
import pytest
import yaml

from clipstudy import fileio, paths
from clipstudy.study import profiles, sweep
from clipstudy.study import runfiles as runs


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory):
    """A copy of the smoke profile's runs: those ``make smoke-runs`` made in reports/ (the sweep runs
    once per ``make test``), swept first if they are not all there."""
    shared = paths.reports_dir()
    _, specs = profiles.load_profile("smoke")
    result = sweep.run_sweep("smoke", shared, workers=2, progress=False)
    assert result.ok, result.failed
    reports = tmp_path_factory.mktemp("reports")
    shutil.copytree(
        shared / "smoke" / "runs",
        reports / "smoke" / "runs",
        ignore=lambda d, names: [n for n in names if n.startswith(".")],
    )
    return reports, [s.run_id for s in specs]


def test_smoke_profile_runs_every_run_into_its_own_folder(smoke_sweep):
    reports, planned = smoke_sweep
    _, specs = profiles.load_profile("smoke")
    assert sorted(planned) == sorted(s.run_id for s in specs) and len(set(planned)) == 7
    for spec in specs:
        run_dir = reports / "smoke" / "runs" / spec.run_id
        expected = [
            "notebook.ipynb",
            "kernel.log",
            runs.PARAMS_FILE,
            runs.SUMMARY,
            runs.STEPS,
            runs.EPOCHS,
            runs.MANIFEST,
        ]
        if spec.params["task"] == "detector":
            expected += ["ground_truth.json", "detections.json"]
        assert sorted(p.name for p in run_dir.iterdir()) == sorted(expected)
        summary = runs.load_summary(run_dir)
        assert summary["params"] == spec.params
        assert summary["params_hash"] == spec.run_id.rsplit("-", 1)[1]
        assert summary["method"] == spec.params["method"]
        assert summary["learning_rate"] == spec.params["learning_rate"]


@pytest.mark.parametrize("finished", [0, 3])
def test_the_progress_bar_ends_at_100_percent_in_any_finishing_order(finished):
    """The smoke profile's estimated costs, cheapest first as the sweep runs them: as float seconds their
    running sum overshoots their total by a last bit (tqdm then printed "-00:00 left" and a TqdmWarning);
    the bar's whole milliseconds end exactly at its total, from no runs or from some finished."""
    import io

    from tqdm import TqdmWarning

    _, specs = profiles.load_profile("smoke")
    cost = {s.run_id: sweep.estimated_seconds(s.config) for s in specs}
    order = sorted(cost, key=lambda r: (cost[r], r))
    done, todo = order[:finished], order[finished:]
    for way in (todo, todo[::-1]):
        bar, work = sweep.progress_bar(cost, done, "smoke")
        bar.fp = io.StringIO()
        with warnings.catch_warnings():
            warnings.simplefilter("error", TqdmWarning)
            for run_id in way:
                bar.update(work[run_id])
            line = str(bar)
        bar.close()
        assert bar.n == bar.total and line.startswith("sweep smoke: 100%") and "-00:00" not in line
        assert sorted(work) == sorted(cost) and all(abs(work[r] / 1000 - cost[r]) <= 0.0005 + 1e-9 for r in cost)


def test_a_second_invocation_runs_nothing(smoke_sweep):
    reports, planned = smoke_sweep
    before = {p: p.stat().st_mtime_ns for p in (reports / "smoke" / "runs").glob("*/summary.json")}
    again = sweep.run_sweep("smoke", reports, workers=2, progress=False)
    assert again.done == [] and sorted(again.skipped) == sorted(planned)
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_a_run_killed_midway_is_redone_with_the_same_numbers(smoke_sweep):
    from clipstudy.study import differences

    reports, planned = smoke_sweep
    root = reports / "smoke" / "runs"
    victim = sorted(planned)[0]
    original = reports / "original"
    shutil.copytree(root / victim, original)
    # What a kill leaves: a finished-looking folder without its summary, and a half-written partial.
    (root / victim / runs.SUMMARY).unlink()
    stale = root / f".{victim}.partial-deadbeef"
    stale.mkdir()
    (stale / "steps.parquet").write_bytes(b"half")
    # Redone in a kernel of its own: the same numbers as the warm kernel of the sweep that made it.
    again = sweep.run_sweep("smoke", reports, workers=1, progress=False, fresh_kernels=True)
    assert again.done == [victim]
    assert runs.is_finished(root / victim)
    assert not stale.exists()
    assert differences.run_differences(original, root / victim) == []


def write_profile(tmp_path, doc) -> Path:
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def good_experiment(**overrides):
    exp = {
        "name": "t",
        "task": "classifier",
        "settings": {"epochs": 1, "train_subset": 256, "test_subset": 100},
        "methods": ["none"],
        "optimizers": {"adam": [0.001]},
        "seeds": [0],
    }
    exp.update(overrides)
    return exp


@pytest.mark.parametrize(
    "experiment, field, reason",
    [
        (good_experiment(methods=["bogus"]), "experiments[0].methods[0]", "unknown clipping method 'bogus'"),
        (good_experiment(methods=[{"method": "norm", "threshold": -1}]), "experiments[0].methods[0]", "threshold=-1"),
        ({k: v for k, v in good_experiment().items() if k != "seeds"}, "experiments[0].seeds", "missing"),
        (good_experiment(settings={"epochs": "ten"}), "experiments[0].settings.epochs", "must be an integer ≥ 1"),
        (good_experiment(settings={"epochs": 0}), "experiments[0].settings.epochs", "epochs=0 is invalid"),
        (good_experiment(settings={"batch_size": 0}), "experiments[0].settings.batch_size", "batch_size=0 is invalid"),
        (good_experiment(settings={"train_subset": -3}), "experiments[0].settings.train_subset", "train_subset=-3"),
        (good_experiment(settings={"train_subset": 10**6}), "experiments[0].settings.train_subset", "[1, 60000]"),
        (good_experiment(optimizers={"adam": [float("inf")]}), "experiments[0].optimizers.adam", "learning_rate=inf"),
        (good_experiment(optimizers={"adam": ["1e-3"]}), "experiments[0].optimizers.adam", "write 1.0e-3 or 0.001"),
        (good_experiment(settings={"epoch": 1}), "experiments[0].settings.epoch", "unknown setting"),
        (good_experiment(optimizers={"adagrad": [0.1]}), "experiments[0].optimizers.adagrad", "unknown optimizer"),
        (good_experiment(optimizers={"sgd": [-0.1]}), "experiments[0].optimizers.sgd", "must be a finite number > 0"),
        (good_experiment(task="segmenter"), "experiments[0].task", "'segmenter' is not one of"),
        (good_experiment(optimizers={"adam": [1e300]}), "experiments[0].optimizers.adam", "at most 1e+06"),
        (good_experiment(settings={"epochs": 10**8}), "experiments[0].settings.epochs", "from 1 to 1,000"),
        (good_experiment(settings={"batch_size": 10**8}), "experiments[0].settings.batch_size", "from 1 to 65,536"),
        (
            good_experiment(task="adding", settings={"task_params": {"length": 10**8}}),
            "experiments[0].settings",
            "length=100000000 is invalid; it must be an integer from 2 to 10,000",
        ),
        (
            good_experiment(methods=[{"method": "norm", "threshold": 1e-45}]),
            "experiments[0].methods[0]",
            "not representable in float32",
        ),
        (
            good_experiment(methods=["none", {"method": "norm", "threshold": {"probe_percentile": 50}}]),
            "experiments[0].methods[1]",
            "on global_norm",
        ),
        (
            good_experiment(settings={"spikes": {"steps": [1], "kind": "boom"}}),
            "experiments[0].settings.spikes",
            "valid choices: scale_loss",
        ),
    ],
)
def test_a_bad_profile_is_rejected_before_anything_runs(tmp_path, experiment, field, reason):
    path = write_profile(tmp_path, {"experiments": [experiment]})
    reports = tmp_path / "reports"
    with pytest.raises(profiles.ProfileError) as info:
        sweep.run_sweep(path, reports, progress=False)
    message = str(info.value)
    assert str(path) in message and f"field {field}" in message and reason in message
    assert not reports.exists()


def test_one_run_written_two_ways_is_refused_instead_of_counted_twice(tmp_path):
    """threshold 1 and 1.0 gave two run ids for one run: both were trained and the analysis counted 4 pairs from
    2 seeds. The loader names both and asks for one spelling."""
    clipped = {"method": "global_norm", "threshold": 1.0}
    path = write_profile(
        tmp_path,
        {"experiments": [good_experiment(name="a", methods=[clipped]),
                         good_experiment(name="b", methods=[{**clipped, "threshold": 1}])]},
    )  # fmt: skip
    with pytest.raises(profiles.ProfileError, match=r"experiments\[1\] \(b\).*of experiment 'a'.*1 and 1.0 are one"):
        profiles.load_profile(path)


def test_an_alias_bomb_a_huge_grid_and_doubled_seeds_are_caught_before_anything_is_built(tmp_path):
    levels = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
        f"*a{i - 1}, *a{i - 1}]"
        for i in range(1, 9)
    ]  # 10^9 elements once expanded
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\nexperiments: []\n")
    with pytest.raises(profiles.ProfileError, match=r"expands to [\d,]+ YAML nodes .* more than 100,000"):
        profiles.load_profile(bomb)
    # the same bomb handed to a RunConfig directly (clip_params) is refused while freezing, not expanded
    import yaml

    from clipstudy.training.config import ConfigError, RunConfig

    expanded = yaml.safe_load("\n".join(levels))["a8"]
    with pytest.raises(ConfigError, match="more than 10,000 elements"):
        RunConfig.for_task("classifier", task_params={}, spikes={"steps": expanded, "kind": "scale_loss"})
    huge = write_profile(tmp_path, {"experiments": [good_experiment(seeds=list(range(30_000)))]})
    with pytest.raises(profiles.ProfileError, match=r"hold 30,000 runs, more than 20,000"):
        profiles.load_profile(huge)
    doubled = write_profile(tmp_path, {"experiments": [good_experiment(seeds=[0, 1, 1])]})
    with pytest.warns(UserWarning, match=r"seeds: seed\(s\) 1 listed more than once; each runs once"):
        _, specs = profiles.load_profile(doubled)
    assert sorted(s.config.seed for s in specs) == [0, 1]


def test_an_unknown_profile_name_lists_the_choices():
    with pytest.raises(profiles.ProfileError, match="valid choices: full, paper, quick, smoke"):
        profiles.load_profile("medium")


def failing_notebook(path: Path) -> Path:
    """A run notebook that raises: what a bug in a task would do mid-run."""
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("config = {}\noutput_dir = None", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell("raise ValueError(f\"boom at seed {config['seed']}\")"),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_a_failing_run_is_recorded_and_does_not_stop_the_others(tmp_path):
    path = write_profile(tmp_path, {"experiments": [good_experiment(seeds=[0, 1])]})
    reports = tmp_path / "reports"
    _, (good, bad) = profiles.load_profile(path)
    bad = dataclasses.replace(bad, notebook=str(failing_notebook(tmp_path / "fails.ipynb")))
    result = sweep.run_sweep(path, reports, workers=2, progress=False, plan=[good, bad])
    assert result.done == [good.run_id] and list(result.failed) == [bad.run_id]
    root = reports / "custom" / "runs"
    assert runs.is_finished(root / good.run_id) and not runs.is_finished(root / bad.run_id)
    error = json.loads((root / bad.run_id / runs.ERROR).read_text())
    assert "boom at seed 1" in error["error"]
    assert (root / bad.run_id / "notebook.ipynb").exists()


def test_the_command_line_names_a_failed_run_and_exits_non_zero(tmp_path, capsys, monkeypatch):
    path = write_profile(tmp_path, {"experiments": [good_experiment()]})
    monkeypatch.setattr(
        sweep, "run_sweep", lambda *a, **k: sweep.SweepResult("custom", tmp_path, [], [], {"r1": "boom"})
    )
    assert sweep.main(["--profile", str(path), "--reports", str(tmp_path)]) == 1
    assert "FAILED r1: boom" in capsys.readouterr().err


def test_a_threshold_from_data_comes_from_a_probe_and_is_part_of_the_run_id(tmp_path):
    import numpy as np

    from clipstudy.study import probes
    from clipstudy.training import RunConfig

    exp = good_experiment(methods=[{"method": "global_norm", "threshold": {"probe_percentile": 50}}])
    path = write_profile(tmp_path, {"experiments": [exp]})
    reports = tmp_path / "reports"
    _, (pending,) = profiles.load_profile(path)
    plan = sweep.load_plan(path)
    # --list: before its probe the run is listed under its planned id, waiting
    lines, counts = sweep.listing(plan, reports)
    assert lines == [f"{pending.run_id} waiting-for-a-probe {json.dumps(pending.params, sort_keys=True)}"]
    assert counts == {"finished": 0, "to run": 0, "waiting for a probe": 1}
    result = sweep.run_sweep(path, reports, workers=1, progress=False)
    assert result.ok and len(result.done) == 1
    # ... and after, under the id it trained under (its threshold read from the probe), finished
    lines, counts = sweep.listing(plan, reports)
    assert lines[0].startswith(f"{result.done[0]} finished ") and counts["finished"] == 1
    probe = reports / "custom" / "probes" / f"{probes.probe_id(pending.config)}.json"
    record = json.loads(probe.read_text())
    assert record["steps"] == 100 and record["probe"]["seed"] != pending.config.seed
    summary = runs.load_summary(reports / "custom" / "runs" / result.done[0])
    assert summary["clip_params"]["threshold"] == pytest.approx(float(np.percentile(record["norms"], 50)), rel=1e-12)
    assert summary["params"]["threshold_rule"] == f"probe_percentile 50 of {probe.stem}"
    # The resolved number is in the run's parameters, hence in its id.
    assert result.done[0] == runs.run_id(RunConfig.from_params(summary["params"])) != pending.run_id
    # and the report's provenance counts it as its experiment's finished run (the planned id is not the run's)
    from clipstudy.analysis import report

    rep = report.ProfileReport.load(path, reports)
    assert rep.missing == [] and report.provenance(rep)["runs by experiment"] == f"{exp['name']} 1/1"


def test_a_second_sweep_on_the_same_folder_is_refused_naming_the_holder(tmp_path):
    from clipstudy.study.lock import FolderBusy, SweepLock

    path = write_profile(tmp_path, {"experiments": [good_experiment()]})
    root = tmp_path / "reports" / "custom" / "runs"
    with SweepLock(root):
        import os

        with pytest.raises(FolderBusy, match=f"another sweep \\(process {os.getpid()}\\) is running in {root}"):
            sweep.run_sweep(path, tmp_path / "reports", progress=False)


def test_an_unwritable_output_folder_ends_the_sweep_with_one_line_naming_it(tmp_path, capsys):
    # A file where the folder should be: an OS error that even root cannot write through.
    path = write_profile(tmp_path, {"experiments": [good_experiment()]})
    reports = tmp_path / "reports"
    reports.write_text("not a folder")
    assert sweep.main(["--profile", str(path), "--reports", str(reports)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and str(reports) in err[0]


def test_an_unreachable_scheduler_fails_fast_with_one_line(tmp_path, capsys):
    import time

    path = write_profile(tmp_path, {"experiments": [good_experiment()]})
    start = time.perf_counter()
    code = sweep.main(
        ["--profile", str(path), "--reports", str(tmp_path / "reports"), "--scheduler", "tcp://127.0.0.1:9"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and time.perf_counter() - start < 30
    assert len(err) == 1 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in err[0]


@pytest.mark.parametrize("victim_file", [runs.SUMMARY, runs.STEPS])
def test_a_truncated_result_file_is_detected_set_aside_and_redone_with_the_same_numbers(smoke_sweep, victim_file):
    from clipstudy.study import differences

    reports, planned = smoke_sweep
    root = reports / "smoke" / "runs"
    victim = sorted(planned)[1 if victim_file == runs.SUMMARY else 2]
    original = reports / f"original-{victim_file}"
    shutil.copytree(root / victim, original)
    data = (root / victim / victim_file).read_bytes()
    (root / victim / victim_file).write_bytes(data[: len(data) // 2])
    assert runs.is_damaged(root / victim) and not runs.is_finished(root / victim)
    # Redone in a kernel of its own: the same numbers as the warm kernel of the sweep that made it.
    again = sweep.run_sweep("smoke", reports, workers=1, progress=False, fresh_kernels=True)
    assert again.done == [victim]
    set_aside = list((root / ".damaged").glob(f"{victim}-*"))
    assert len(set_aside) == 1 and (set_aside[0] / victim_file).read_bytes() == data[: len(data) // 2]
    assert differences.run_differences(original, root / victim) == []


def test_an_external_dask_cluster_gives_the_numbers_of_the_local_sweep(smoke_sweep, tmp_path):
    """A scheduler and a worker started from the command line on loopback, as on a cluster, run a smoke
    run; every number equals the local sweep's for the same id (the run fixes its threads itself)."""
    import socket
    import subprocess
    import sys
    import time

    from clipstudy.study import differences

    reports, planned = smoke_sweep
    _, specs = profiles.load_profile("smoke")
    plan = sorted((s for s in specs if s.params["task"] == "classifier"), key=lambda s: s.run_id)[:1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    env = {**__import__("os").environ, "DASK_LOGGING__DISTRIBUTED": "error"}
    bin_dir = Path(sys.executable).parent
    procs = [
        subprocess.Popen(
            [str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        time.sleep(3)
        procs.append(
            subprocess.Popen(
                [str(bin_dir / "dask"), "worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        result = sweep.run_sweep("smoke", tmp_path / "reports", scheduler=address, plan=plan, progress=False)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=30)
    assert result.ok and sorted(result.done) == sorted(s.run_id for s in plan)
    for spec in plan:
        assert (
            differences.run_differences(
                reports / "smoke" / "runs" / spec.run_id, tmp_path / "reports" / "smoke" / "runs" / spec.run_id
            )
            == []
        )


def _malloc_trim_here_and_in_a_child():
    from clipstudy.study import processes

    return os.environ.get("MALLOC_TRIM_THRESHOLD_"), processes.child_environment(os.environ).get(
        "MALLOC_TRIM_THRESHOLD_"
    )


def test_kernels_started_by_a_sweep_worker_do_without_the_nannys_malloc_trim_setting():
    """Dask's nanny gives its workers MALLOC_TRIM_THRESHOLD_=65536; what a worker starts (kernels, probes)
    must not inherit it (it halves TensorFlow's step speed). Asked of a real worker of the sweep's cluster."""
    client, cluster = sweep._start_client(None, 1, 1)
    try:
        here, child = client.submit(_malloc_trim_here_and_in_a_child, pure=False).result()
    finally:
        client.close()
        cluster.close()
    assert here == "65536" and child is None  # the worker's own environment is left as it is


def test_a_malloc_trim_setting_of_the_users_own_is_kept(monkeypatch):
    from clipstudy.study import processes

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # outside a Dask worker even Dask's value is the user's
    assert processes.child_environment(os.environ)["MALLOC_TRIM_THRESHOLD_"] == "65536"


def test_the_sweep_runs_every_arm_of_a_seed_before_the_next_seed():
    """Pairs share a machine: stage 3's calibration is ordered whole seeds at a time (every arm of seed 10 of
    an experiment before any run of seed 11), so a sitting cut short leaves complete pairs, not one arm of many
    seeds; within a seed, cheapest first."""
    _, specs = profiles.load_profile("paper")
    cell = [s for s in specs if s.experiment == "stage3_adding_calibration"]
    cost = {s.run_id: sweep.estimated_seconds(s.config) for s in cell}
    order = sweep.run_order(list(reversed(cell)), cost)
    seeds = [s.config.seed for s in order]
    assert sorted(set(seeds)) == [10, 11] and seeds == sorted(seeds)  # one seed's arms all before the next's
    first = [cost[s.run_id] for s in order if s.config.seed == seeds[0]]
    assert first == sorted(first) and len(first) == len(cell) // 2


def test_a_run_that_fails_after_writing_its_files_is_recorded_as_failed_not_damaged(tmp_path):
    """A failing figure cell or a full disk after the run's files were written used to leave manifest.json
    without summary.json: the run was called damaged and blocked the report even with --allow-incomplete."""
    _, specs = profiles.load_profile("smoke")
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in (runs.SUMMARY, runs.STEPS, runs.EPOCHS):
        (partial / name).write_text("{}")
    runs.write_manifest(partial)
    try:
        raise OSError(28, "No space left on device")
    except OSError as exc:
        status = sweep._record_failure(specs[0], partial, exc)
    assert status["status"] == "failed" and "No space left on device" in status["error"]
    assert not runs.is_damaged(partial) and not runs.is_finished(partial)
    assert json.loads((partial / runs.ERROR).read_text())["error"] == status["error"]


def test_ctrl_c_ends_the_sweep_with_one_line_that_says_how_to_resume(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "run_sweep", interrupted)
    assert sweep.main(["--profile", "smoke", "--reports", str(tmp_path)]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("interrupted; 0 of 7 runs finished, resume with: python -m clipstudy.study.sweep --profile")


def test_a_full_disk_ends_the_run_with_an_error_naming_the_folder(tmp_path, monkeypatch):
    """When the disk is full nothing can be recorded, not even the failure: the task raises one OSError that
    names the run and the folder (a bare write error names no file), which ends the sweep with one line."""
    _, specs = profiles.load_profile("smoke")

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sweep.notebooks, "execute", full)
    monkeypatch.setattr(sweep, "write_json_atomic", full)  # the failure record cannot be written either
    with pytest.raises(OSError) as caught:
        sweep.execute_run(specs[0], str(tmp_path), warm=False)
    assert caught.value.errno == 28 and caught.value.filename == str(tmp_path)
    assert str(caught.value) == (
        f"[Errno 28] No space left on device while writing run {specs[0].run_id}: '{tmp_path}'"
    )


def test_an_error_that_names_its_file_or_is_not_a_full_disk_passes_unchanged(tmp_path):
    named = OSError(28, "No space left on device", "/somewhere/file")
    with pytest.raises(OSError) as caught, fileio.naming_full_disk("writing", tmp_path):
        raise named
    assert caught.value is named
    with pytest.raises(PermissionError), fileio.naming_full_disk("writing", tmp_path):
        raise PermissionError(13, "Permission denied")


def test_a_run_interrupted_by_ctrl_c_in_its_kernel_is_not_recorded_as_failed(tmp_path, monkeypatch):
    """Ctrl-C in the terminal reaches the kernels too: the cell raises KeyboardInterrupt. That run is not a failure
    (it used to be recorded as one): its partial folder is removed, nothing is written, and resuming redoes it."""
    from papermill.exceptions import PapermillExecutionError

    _, specs = profiles.load_profile("smoke")

    def interrupted(*args, **kwargs):
        raise PapermillExecutionError(3, 1, "train()", "KeyboardInterrupt", "", [])

    monkeypatch.setattr(sweep.notebooks, "execute", interrupted)
    status = sweep.execute_run(specs[0], str(tmp_path), warm=False)
    assert status == {"run_id": specs[0].run_id, "status": "interrupted"}
    assert list(tmp_path.iterdir()) == []  # no failed record, no partial folder
    assert not sweep.interrupted(PapermillExecutionError(3, 1, "x", "ValueError", "boom", []))


def test_sigint_to_the_sweep_process_alone_ends_it_with_one_line_and_leaves_no_process(tmp_path):
    """``kill -INT`` of the driver alone (not the terminal's whole group): its workers and their kernels do not
    see the signal, yet the sweep ends as Ctrl-C ends it, with one line and no libzmq abort, and no worker or
    kernel outlives it. The run is signalled once its partial folder exists, that is while it trains."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    path = write_profile(tmp_path, {"experiments": [good_experiment(settings={"epochs": 20, "train_subset": 2048})]})
    reports = tmp_path / "reports"
    root = reports / "custom" / "runs"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [sys.executable, "-m", "clipstudy.study.sweep", "--profile", str(path), "--reports", str(reports)]
    # A shell's background job ignores SIGINT and its children inherit that: the driver is started by a prelude
    # that takes the default back and then becomes it (no preexec_fn: forking a process that runs JAX's threads)
    prelude = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
    )
    driver = subprocess.Popen(
        [sys.executable, "-c", prelude, *cmd],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a group of its own: only the driver gets the signal
    )
    try:
        deadline = time.monotonic() + 240
        while not list(root.glob(".*.partial-*")) and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert driver.poll() is None, driver.communicate()
        children = psutil.Process(driver.pid).children(recursive=True)
        driver.send_signal(signal.SIGINT)
        out, err = driver.communicate(timeout=90)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 130, err
    assert "Traceback" not in err and "Assertion failed" not in err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and not line.startswith("sweep ")]
    resume = f"python -m clipstudy.study.sweep {' '.join(cmd[3:])}"
    assert lines == [f"interrupted; 0 of 1 runs finished, resume with: {resume}"]
    assert children, "the sweep started no worker"
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [p.cmdline() for p in alive]


def test_a_sweeps_runs_start_in_its_order_whatever_their_names():
    """Dask starts a small task group's tasks ahead of its queue: under keys named by run id, four runs of a method
    planned last (here a third arm of seeds 6-9) started before seeds 4 and 5. Under ``task_key`` every run
    starts within a worker's reach of its planned place (two workers: at most one place early or late)."""
    from dask.distributed import Client, LocalCluster

    def work(name):
        import time

        started = time.time()
        time.sleep(0.3)
        return name, started

    names = [f"{arm}-s{seed}" for seed in range(10) for arm in ("gn", "none", "quant")[: 3 if seed >= 6 else 2]]
    with warnings.catch_warnings():  # the HTTP server takes another port when 8787 is busy: nothing to report
        warnings.filterwarnings("ignore", message="Port .* is already in use")
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, Client(cluster) as client:
        futures = [
            client.submit(work, name, key=sweep.task_key(i, name), pure=False, priority=len(names) - i)
            for i, name in enumerate(names)
        ]
        started = [name for name, _ in sorted((f.result() for f in futures), key=lambda r: r[1])]
    assert all(abs(started.index(name) - i) <= 1 for i, name in enumerate(names)), started
