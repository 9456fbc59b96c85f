"""The sweep runner end to end on the smoke profile, resumption, and its refusals."""
import json
import shutil
from pathlib import Path

import pytest
import yaml

from clipstudy import runs, sweep


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory):
    reports = tmp_path_factory.mktemp("reports")
    result = sweep.run_sweep("smoke", reports, workers=2, progress=False)
    return reports, result


def test_smoke_profile_runs_every_run_into_its_own_folder(smoke_sweep):
    reports, result = smoke_sweep
    _, specs = sweep.load_profile("smoke")
    assert result.ok and sorted(result.done) == sorted(s.run_id for s in specs) and not result.skipped
    for spec in specs:
        run_dir = reports / "smoke" / "runs" / spec.run_id
        expected = ["notebook.ipynb", "kernel.log", runs.PARAMS, runs.SUMMARY, runs.STEPS, runs.EPOCHS]
        if spec.params["task"] == "detector":
            expected += ["ground_truth.json", "detections.json"]
        assert sorted(p.name for p in run_dir.iterdir()) == sorted(expected)
        summary = runs.load_summary(run_dir)
        assert summary["params"] == spec.params
        assert summary["params_hash"] == spec.run_id.rsplit("-", 1)[1]
        assert summary["method"] == spec.params["method"]
        assert summary["learning_rate"] == spec.params["learning_rate"]


def test_a_second_invocation_runs_nothing(smoke_sweep):
    reports, first = smoke_sweep
    before = {p: p.stat().st_mtime_ns for p in (reports / "smoke" / "runs").glob("*/summary.json")}
    again = sweep.run_sweep("smoke", reports, workers=2, progress=False)
    assert again.done == [] and sorted(again.skipped) == sorted(first.done)
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_a_run_killed_midway_is_redone(smoke_sweep):
    reports, first = smoke_sweep
    root = reports / "smoke" / "runs"
    victim = sorted(first.done)[0]
    # What a kill leaves: a finished-looking folder without its summary, and a half-written partial.
    (root / victim / runs.SUMMARY).unlink()
    stale = root / f".{victim}.partial-deadbeef"
    stale.mkdir()
    (stale / "steps.parquet").write_bytes(b"half")
    again = sweep.run_sweep("smoke", reports, workers=1, progress=False)
    assert again.done == [victim]
    assert runs.is_finished(root / victim)
    assert not stale.exists()


def write_profile(tmp_path, doc) -> Path:
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def good_experiment(**overrides):
    exp = {"name": "t", "task": "classifier", "settings": {"epochs": 1, "train_subset": 256, "test_subset": 100},
           "methods": ["none"], "optimizers": {"adam": [0.001]}, "seeds": [0]}
    exp.update(overrides)
    return exp


@pytest.mark.parametrize("experiment, field, reason", [
    (good_experiment(methods=["bogus"]), "experiments[0].methods[0]", "unknown clipping method 'bogus'"),
    (good_experiment(methods=[{"method": "norm", "threshold": -1}]), "experiments[0].methods[0]", "threshold=-1"),
    ({k: v for k, v in good_experiment().items() if k != "seeds"}, "experiments[0].seeds", "missing"),
    (good_experiment(settings={"epochs": "ten"}), "experiments[0].settings.epochs", "expected int"),
    (good_experiment(settings={"epoch": 1}), "experiments[0].settings.epoch", "unknown setting"),
    (good_experiment(optimizers={"adagrad": [0.1]}), "experiments[0].optimizers.adagrad", "unknown optimizer"),
    (good_experiment(optimizers={"sgd": [-0.1]}), "experiments[0].optimizers.sgd", "must be a number > 0"),
    (good_experiment(task="segmenter"), "experiments[0].task", "'segmenter' is not one of"),
    (good_experiment(methods=["none", {"method": "norm", "threshold": {"baseline_percentile": 50}}]),
     "experiments[0].methods[1].threshold", "on global_norm"),
    (good_experiment(methods=[{"method": "global_norm", "threshold": {"baseline_percentile": 50}}]),
     "experiments[0].methods[0].threshold", "needs the unclipped method 'none'"),
    (good_experiment(settings={"spikes": {"steps": [1], "kind": "boom"}}), "experiments[0].settings.spikes",
     "valid choices: scale_loss"),
])
def test_a_bad_profile_is_rejected_before_anything_runs(tmp_path, experiment, field, reason):
    path = write_profile(tmp_path, {"experiments": [experiment]})
    reports = tmp_path / "reports"
    with pytest.raises(sweep.ProfileError) as info:
        sweep.run_sweep(path, reports, progress=False)
    message = str(info.value)
    assert str(path) in message and f"field {field}" in message and reason in message
    assert not reports.exists()


def test_an_unknown_profile_name_lists_the_choices():
    with pytest.raises(sweep.ProfileError, match="valid choices: full, quick, smoke"):
        sweep.load_profile("medium")


def test_a_failing_run_is_recorded_and_does_not_stop_the_others(tmp_path, capsys):
    failing = good_experiment(name="broken", settings={"epochs": 1, "train_subset": 10**6, "test_subset": 100})
    path = write_profile(tmp_path, {"experiments": [good_experiment(), failing]})
    reports = tmp_path / "reports"
    code = sweep.main(["--profile", str(path), "--reports", str(reports), "--workers", "2"])
    assert code == 1
    root = reports / "custom" / "runs"
    finished = [p for p in root.iterdir() if runs.is_finished(p)]
    failed = [p for p in root.iterdir() if (p / runs.ERROR).exists()]
    assert len(finished) == 1 and len(failed) == 1
    error = json.loads((failed[0] / runs.ERROR).read_text())
    assert "train_subset=1000000" in error["error"]
    assert (failed[0] / "notebook.ipynb").exists()
    assert f"FAILED {failed[0].name}" in capsys.readouterr().err


def test_a_threshold_from_data_is_the_baseline_runs_percentile(tmp_path):
    exp = good_experiment(methods=["none", {"method": "global_norm", "threshold": {"baseline_percentile": 50}}])
    path = write_profile(tmp_path, {"experiments": [exp]})
    reports = tmp_path / "reports"
    result = sweep.run_sweep(path, reports, workers=1, progress=False)
    assert result.ok and len(result.done) == 2
    _, specs = sweep.load_profile(path)
    base, clipped = sorted(specs, key=lambda s: s.params["method"] != "none")
    root = reports / "custom" / "runs"
    import numpy as np
    import pandas as pd

    expected = float(np.percentile(pd.read_parquet(root / base.run_id / runs.STEPS)["norm_before"], 50))
    summary = runs.load_summary(root / clipped.run_id)
    assert summary["clip_params"]["threshold"] == pytest.approx(expected, rel=1e-6)
    assert summary["params"]["threshold_rule"] == f"baseline_percentile 50 of {base.run_id}"
