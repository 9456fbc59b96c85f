"""Results that repair themselves: each fault injected the way it was found, on a one-run published profile.

One sweep trains the run once (a few seconds); every test starts from a copy of that state: the bundle in
``results/pub/`` and the local copy in ``reports/pub/runs/``.
"""

import errno
import json
import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml

from clipstudy.analysis import report
from clipstudy.orchestration import build_report
from clipstudy.study import bundle, lock, probes, profiles, runfiles, sweep
from clipstudy.training import RunConfig


@pytest.fixture(scope="module")
def trained(swept):
    """The profile file, a folder holding ``results/`` and ``reports/`` after one sweep, and the run's id."""
    root, first = swept
    return root / "pub.yaml", root, first.done[0]


@pytest.fixture
def state(trained, tmp_path, monkeypatch):
    """A private copy of the trained state: ``(profile, reports, bundle, run_id)``."""
    path, base, run_id = trained
    shutil.copytree(base / "results", tmp_path / "results")
    shutil.copytree(base / "reports", tmp_path / "reports")
    monkeypatch.setenv("CLIPSTUDY_RESULTS_DIR", str(tmp_path / "results"))
    return path, tmp_path / "reports", tmp_path / "results" / "pub", run_id


def _damage_summary(run_dir: Path, accuracy: float = 0.1) -> None:
    summary = json.loads((run_dir / runfiles.SUMMARY).read_text())
    summary["final_test_accuracy"] = accuracy
    (run_dir / runfiles.SUMMARY).write_text(json.dumps(summary))


def test_a_damaged_bundle_copy_is_set_aside_and_published_again_from_the_local_copy(state):
    path, reports, pub, run_id = state
    _damage_summary(pub / "runs" / run_id)
    with pytest.raises(report.DamagedRun, match=run_id):
        report.load_profile_runs(path, reports)
    again = sweep.run_sweep(path, reports, workers=1, progress=False)
    assert again.ok and again.done == [] and again.skipped == [run_id]  # republished, nothing retrained
    (aside,) = (pub / bundle.DAMAGED).iterdir()  # kept, never deleted
    assert json.loads((aside / runfiles.SUMMARY).read_text())["final_test_accuracy"] == 0.1
    _, table, missing = report.load_profile_runs(path, reports)
    assert missing == [] and table.summaries["final_test_accuracy"].iloc[0] != 0.1


def test_a_publish_killed_between_removing_and_renaming_is_repaired(state):
    path, reports, pub, run_id = state
    shutil.rmtree(pub / "runs" / run_id)  # what a kill between the two steps left
    again = sweep.run_sweep(path, reports, workers=1, progress=False)
    assert again.done == [] and bundle.run_problems(pub, run_id) == []


def test_with_no_local_copy_a_damaged_bundle_copy_is_set_aside_and_retrained(state):
    path, reports, pub, run_id = state
    original = runfiles.load_summary(pub / "runs" / run_id)
    shutil.rmtree(reports)
    _damage_summary(pub / "runs" / run_id)
    again = sweep.run_sweep(path, reports, workers=1, progress=False)
    assert again.done == [run_id] and len(list((pub / bundle.DAMAGED).iterdir())) == 1
    assert runfiles.load_summary(pub / "runs" / run_id)["outcome_sha256"] == original["outcome_sha256"]


@pytest.mark.parametrize(
    "manifest, match",
    [
        ({}, "does not list summary.json"),
        ("drop-summary", "does not list summary.json"),
        ({"hostname": {"size": 1, "sha256": "0"}, "/etc/hostname": {"size": 1, "sha256": "0"}}, "outside the run"),
    ],
)
def test_a_manifest_cannot_vouch_for_itself(state, manifest, match, monkeypatch):
    """An edited summary with its manifest emptied, its entry removed, or pointing outside the folder."""
    path, reports, pub, run_id = state
    run_dir = pub / "runs" / run_id
    _damage_summary(run_dir)
    entries = json.loads((run_dir / runfiles.MANIFEST).read_text())
    if manifest == "drop-summary":
        entries.pop(runfiles.SUMMARY)
    else:
        entries = manifest if match != "outside the run" else {**entries, **manifest}
    (run_dir / runfiles.MANIFEST).write_text(json.dumps(entries))
    opened = []
    real_sha = runfiles.sha256_file
    monkeypatch.setattr(runfiles, "sha256_file", lambda p: opened.append(str(p)) or real_sha(p))
    with pytest.raises(report.DamagedRun, match=run_id):
        report.load_profile_runs(path, reports)
    assert not any("/etc/" in p for p in opened)


def test_an_edit_that_rewrites_the_manifest_too_is_caught_by_the_bundle_index(state):
    path, reports, pub, run_id = state
    run_dir = pub / "runs" / run_id
    _damage_summary(run_dir)
    runfiles.write_manifest(run_dir)  # a consistent forgery: files and manifest agree
    assert runfiles.is_finished(run_dir)
    with pytest.raises(report.DamagedRun, match=f"{run_id}.*does not match the sha256 in index.json"):
        report.load_profile_runs(path, reports)


def test_a_bundle_without_its_index_is_refused_not_set_aside(state):
    path, reports, pub, run_id = state
    (pub / bundle.INDEX).unlink()
    with pytest.raises(bundle.UnindexedBundle, match="--reindex pub"):
        sweep.run_sweep(path, reports, workers=1, progress=False)
    assert (pub / "runs" / run_id).is_dir() and not (pub / bundle.DAMAGED).exists()
    bundle.reindex(pub)
    assert bundle.run_problems(pub, run_id) == []


def test_probe_files_are_named_when_unreadable_or_edited(tmp_path):
    config = RunConfig.for_task("classifier", method="global_norm", clip_params={"threshold": {"probe_percentile": 50}})
    spec = profiles.RunSpec(runfiles.run_id(config), profiles.RUN_NOTEBOOK, config)
    probe = probes.probe_file(tmp_path, config)
    probe.write_text("{not json")
    with pytest.raises(probes.ProbeError, match=f"probe file {probe} is unreadable"):
        probes.resolve(spec, tmp_path)
    norms = [1.0, 2.0, 3.0]
    probe.write_text(json.dumps({"norms": norms, "norms_sha256": probes.norms_digest(norms)}))
    assert probes.resolve(spec, tmp_path).config.clip_params["threshold"] == 2.0
    probe.write_text(json.dumps({"norms": [1.0, 2.0, 30.0], "norms_sha256": probes.norms_digest(norms)}))
    with pytest.raises(probes.ProbeError, match="do not match the sha256 it carries"):
        probes.resolve(spec, tmp_path)


def test_a_relative_reports_path_is_resolved_before_the_notebooks_see_it(state, tmp_path, monkeypatch):
    path, _, pub, run_id = state
    shutil.rmtree(pub)
    monkeypatch.chdir(tmp_path)
    result = sweep.run_sweep(path, "rel-reports", workers=1, progress=False)
    assert result.ok and result.root == tmp_path / "rel-reports" / "pub" / "runs"
    assert runfiles.is_finished(tmp_path / "rel-reports" / "pub" / "runs" / run_id)
    name, table, missing = report.load_profile_runs(path, "rel-reports")
    assert missing == [] and len(table.summaries) == 1


def test_a_profile_whose_name_would_climb_out_of_the_reports_folder_is_refused(tmp_path, one_run_profile):
    path = tmp_path / "...yaml"
    path.write_text(yaml.safe_dump(one_run_profile))
    with pytest.raises(profiles.ProfileError, match="name '..' .* letters, digits"):
        profiles.load_profile(path)


def test_publishing_waits_for_the_bundles_lock(state, tmp_path):
    """Two sweeps with different report folders publish into one bundle one at a time."""
    path, reports, pub, run_id = state
    held = lock.SweepLock(pub, name=bundle.PUBLISH_LOCK)
    held.__enter__()
    finished = []
    worker = threading.Thread(
        target=lambda: finished.append(bundle.publish(reports / "pub" / "runs" / run_id, pub / "runs"))
    )
    worker.start()
    time.sleep(1.5)
    assert finished == []  # still waiting for the lock
    held.__exit__(None, None, None)
    worker.join(timeout=30)
    assert finished and bundle.run_problems(pub, run_id) == []


def test_a_file_system_without_locks_gives_a_clear_error(tmp_path, monkeypatch):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(lock.fcntl, "flock", no_locks)
    with pytest.raises(lock.LocksUnsupported, match="does not support file locks.*local disk"):
        with lock.SweepLock(tmp_path):
            pass


def test_a_report_swap_that_fails_half_way_leaves_the_previous_report_whole(tmp_path, monkeypatch):
    out, staging = tmp_path / "out", tmp_path / "out" / ".report-build-x"
    staging.mkdir(parents=True)
    for name in build_report.REPORT_OUTPUTS:
        (out / name).write_text(f"old {name}")
        (staging / name).write_text(f"new {name}")
    real = Path.rename
    placements = []

    def fail_on_the_second_placement(self, target):
        if self.parent == staging:
            placements.append(self.name)
            if len(placements) == 2:
                raise KeyboardInterrupt  # Ctrl-C in the middle of the swap
        return real(self, target)

    monkeypatch.setattr(Path, "rename", fail_on_the_second_placement)
    with pytest.raises(KeyboardInterrupt):
        build_report._swap_in(staging, out)
    monkeypatch.setattr(Path, "rename", real)
    assert all((out / n).read_text() == f"old {n}" for n in build_report.REPORT_OUTPUTS)
    assert not list(out.glob(".report-old-*"))


def test_a_report_build_on_a_full_disk_ends_with_one_line_naming_the_folder_and_keeps_the_old_report(
    state, monkeypatch, capsys
):
    """The build's writes fail one after another on a full disk (the notebook, then its kernel's log): the user
    reads one line naming the report folder, not the chain, and the previous report is still there."""
    path, reports, _, _ = state
    out = reports / "pub"
    for name in ("claims.csv", "report.html"):
        (out / name).write_text(f"old {name}")

    def disk_full(*args, **kwargs):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:  # what the kernel's log copy raises while the first failure is handled
            raise OSError(errno.ENOSPC, "No space left on device") from None

    monkeypatch.setattr(build_report.notebooks, "execute", disk_full)
    assert build_report.main(["--profile", str(path), "--reports", str(reports)]) == 1
    err = capsys.readouterr().err.strip()
    kept = "while building the report (the previous one is kept)"
    assert err == f"error: [Errno 28] No space left on device {kept}: '{out}'"
    assert [(out / n).read_text() for n in ("claims.csv", "report.html")] == ["old claims.csv", "old report.html"]
    assert not list(out.glob(".report-*"))


def test_a_killed_build_is_cleaned_up_and_its_backup_restored_by_the_next_one(tmp_path):
    out = tmp_path / "out"
    (out / ".report-build-dead").mkdir(parents=True)
    (out / ".report-old-dead").mkdir()
    (out / ".report-old-dead" / "report.html").write_text("the previous report")
    (out / "claims.csv").write_text("new claims")  # placed before the kill
    done = build_report.recover_interrupted_builds(out)
    assert (out / "report.html").read_text() == "the previous report"
    assert (out / "claims.csv").read_text() == "new claims"
    assert not list(out.glob(".report-*")) and len(done) == 2


def test_a_run_configuration_keeps_its_own_copy_and_is_hashable():
    params = {"threshold": 1.0}
    config = RunConfig.for_task("classifier", method="global_norm", clip_params=params)
    before = runfiles.run_id(config)
    params["threshold"] = -1.0
    assert runfiles.run_id(config) == before and config.clip_params["threshold"] == 1.0
    with pytest.raises(TypeError, match="cannot change"):
        config.clip_params["threshold"] = -1.0
    assert hash(config) == hash(RunConfig.for_task("classifier", method="global_norm", clip_params={"threshold": 1.0}))
    assert {config: 1}[config.replace()] == 1


@pytest.mark.parametrize("content", ['{"runs": {"a": ', "[]"])
def test_a_truncated_or_foreign_index_is_refused_with_the_repair_command(tmp_path, content):
    """A truncated index.json crashed the sweep with a raw traceback; now it is refused (the sweep prints it as
    one error line) with the two ways to repair it."""
    from clipstudy.study import bundle

    (tmp_path / "paperish" / "runs").mkdir(parents=True)
    (tmp_path / "paperish" / bundle.INDEX).write_text(content)
    with pytest.raises(bundle.UnindexedBundle, match=r"git checkout -- .*index.json.* --reindex paperish"):
        bundle.read_index(tmp_path / "paperish")
