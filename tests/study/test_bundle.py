"""The published results bundle: compact run copies, resumption from them, the report from them alone."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from clipstudy import paths
from clipstudy.study import bundle, runfiles, sweep


def test_long_step_tables_are_thinned_but_keep_their_start_end_and_spikes():
    steps = pd.DataFrame({"step": np.arange(1, 4691), "loss": np.linspace(2.3, 0.1, 4690)})
    thin = bundle.downsample_steps(steps, spike_steps=[1500, 1501])
    kept = set(thin["step"])
    assert len(thin) < 800 and set(range(1, 51)) <= kept and 4690 in kept
    assert set(range(1470, 1532)) <= kept
    pd.testing.assert_frame_equal(thin.set_index("step"), steps.set_index("step").loc[sorted(kept)])
    short = steps.iloc[:300]
    pd.testing.assert_frame_equal(bundle.downsample_steps(short), short)


@pytest.fixture
def published_profile(swept, tmp_path, monkeypatch):
    """The swept profile copied into this test's own folder, with its bundle in ``tmp_path/results``
    (the run is already published there) and its sweep's outputs in ``tmp_path/reports``."""
    root, _ = swept
    for name in ("results", "reports"):
        shutil.copytree(root / name, tmp_path / name)
    shutil.copy(root / "pub.yaml", tmp_path / "pub.yaml")
    monkeypatch.setenv("CLIPSTUDY_RESULTS_DIR", str(tmp_path / "results"))
    return tmp_path / "pub.yaml"


def test_a_published_profile_copies_each_run_to_its_bundle_and_resumes_from_it(swept, published_profile, tmp_path):
    reports = tmp_path / "reports"
    first = swept[1]
    assert first.ok and len(first.done) == 1
    run_id = first.done[0]
    copy = paths.results_dir() / "pub" / "runs" / run_id
    assert sorted(p.name for p in copy.iterdir()) == sorted(
        [runfiles.SUMMARY, runfiles.EPOCHS, runfiles.STEPS, runfiles.MANIFEST]
    )
    assert runfiles.is_finished(copy)
    assert json.loads((copy / runfiles.SUMMARY).read_text()) == runfiles.load_summary(reports / "pub" / "runs" / run_id)
    # A fresh clone has the bundle but no reports/: nothing is run again.
    shutil.rmtree(reports)
    again = sweep.run_sweep(published_profile, reports, workers=1, progress=False)
    assert again.done == [] and again.skipped == [run_id]


def test_the_report_of_a_published_profile_reads_the_bundle_alone(published_profile, tmp_path):
    from clipstudy.analysis import report

    reports = tmp_path / "reports"
    shutil.rmtree(reports)
    name, table, missing = report.load_profile_runs(published_profile, reports)
    assert name == "pub" and len(table.summaries) == 1 and missing == []


def test_publishing_is_all_or_nothing(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame({"step": [1, 2], "loss": [1.0, 0.5]}).to_parquet(run / runfiles.STEPS)
    (run / runfiles.SUMMARY).write_text(json.dumps({"params": {}}))
    # epochs.parquet is missing: the copy fails and leaves nothing behind
    with pytest.raises(FileNotFoundError):
        bundle.publish(run, tmp_path / "bundle")
    assert list((tmp_path / "bundle").iterdir()) == []


def test_a_published_run_reproduces_exactly_and_a_tampered_one_does_not(published_profile, tmp_path):
    """Both sides computed on this machine: the platform matches, so the promise is bit for bit."""
    from clipstudy.orchestration import verify

    (spec,) = verify.cheapest_runs(published_profile, 5)
    published = paths.results_dir() / "pub" / "runs" / spec.run_id
    first = verify.verify_run(spec, published, tmp_path / "again")
    assert first.promise == verify.BITS and first.platform == [] and first.identical and first.ok
    summary = json.loads((published / runfiles.SUMMARY).read_text())
    summary["final_test_accuracy"] += 1e-9
    (published / runfiles.SUMMARY).write_text(json.dumps(summary))
    tampered = verify.verify_run(spec, published, tmp_path / "third")
    assert tampered.promise == verify.BITS and not tampered.ok
    assert len(tampered.bit_differences) == 1 and tampered.bit_differences[0].startswith("final_test_accuracy:")


def test_a_run_from_another_platform_is_held_to_the_study_level(published_profile, tmp_path):
    """A published run whose recorded CPU is not this one: its bits are not promised, its metrics are
    checked against the cell's seed-to-seed spread instead, and a metric moved past it is caught."""
    from clipstudy.orchestration import verify

    (spec,) = verify.cheapest_runs(published_profile, 5)
    published = paths.results_dir() / "pub" / "runs" / spec.run_id
    summary = json.loads((published / runfiles.SUMMARY).read_text())
    summary["platform"]["cpu_model_name"] = "Another CPU"
    summary["final_test_loss"] += 1e-9  # the last bits moved; the cell has one seed, so its spread is 0
    (published / runfiles.SUMMARY).write_text(json.dumps(summary))
    runfiles.write_manifest(published)  # a whole run, as another machine would have published it
    v = verify.verify_run(spec, published, tmp_path / "again")
    assert v.promise == verify.STUDY_LEVEL and v.platform[0].startswith("cpu_model_name:")
    loss = next(d for d in v.deviations if d["metric"] == "final_test_loss")
    assert loss["difference"] == pytest.approx(1e-9, rel=1e-6) and loss["spread"] == 0 and not loss["within"]
    assert not v.ok and next(d for d in v.deviations if d["metric"] == "failure")["within"]


def test_the_cheapest_published_paper_run_reproduces_at_the_level_its_platform_promises(tmp_path):
    """The published numbers are reproducible: the cheapest run of results/paper/, retrained here. Bit for
    bit where the recorded platform is this one; elsewhere within its cell's seed-to-seed spread."""
    from clipstudy.orchestration import verify

    chosen = verify.cheapest_runs("paper", 1)
    if not chosen:
        pytest.skip("results/paper/ holds no finished run yet")
    published = bundle.bundle_dir("paper") / "runs" / chosen[0].run_id
    v = verify.verify_run(chosen[0], published, tmp_path)
    print("\n".join(v.lines()))
    assert v.ok, "\n".join(v.lines())
    verdicts = verify.verdicts_with("paper", {v.run_id: v.out_dir})
    assert (verdicts["published"] == verdicts["retrained"]).all(), verdicts


def test_every_published_run_keeps_its_id_under_the_current_run_configuration():
    """The ids of results/paper/ are digests of each run's parameters: rebuilding every run's RunConfig from
    the parameters it recorded (through the tasks' specs and checks of today's code) gives back its folder's
    name, so no published run changed identity with the task layer or the frozen configuration."""
    from clipstudy.training import RunConfig

    runs = sorted(p for p in (bundle.bundle_dir("paper") / "runs").iterdir() if p.is_dir())
    if not runs:
        pytest.skip("results/paper/ holds no finished run yet")
    for run in runs:
        params = runfiles.load_summary(run)["params"]
        assert runfiles.run_id(RunConfig.from_params(params)) == run.name


def _copy_run(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_a_prefix_reproduces_bit_for_bit_here_and_each_study_level_rule_catches_its_deviation(
    published_profile, tmp_path
):
    """make reproduce's check of a long run: its first steps retrained. Both sides computed on this machine:
    bits. Then the rules applied where the platform differs, each against a deviation made by hand."""
    from clipstudy.orchestration import verify

    (spec,) = verify.cheapest_runs(published_profile, 5)
    published = paths.results_dir() / "pub" / "runs" / spec.run_id
    v = verify.verify_prefix(spec, published, tmp_path / "again", steps=1)
    assert v.promise == verify.BITS and v.identical and v.ok and v.prefix == 1
    assert runfiles.load_summary(v.out_dir)["stopped_after"] == 1

    def moved(name, step, factor, **summary):
        run = _copy_run(published, tmp_path / name)
        steps = pd.read_parquet(run / runfiles.STEPS)
        steps.loc[steps["step"] == step, "loss"] *= factor
        steps.to_parquet(run / runfiles.STEPS)
        (run / runfiles.SUMMARY).write_text(json.dumps({**runfiles.load_summary(run), **summary}))
        return run

    # Bits: only the prefix's steps are compared.
    assert verify.prefix_bit_differences(moved("late", 2, 1.5), v.out_dir, 1) == []
    assert verify.prefix_bit_differences(moved("early", 1, 1 + 1e-7), v.out_dir, 1)

    def rules(run, cell):
        return {d["metric"]: d["within"] for d in verify.prefix_deviations(run, v.out_dir, cell, 1)}

    # Step 1 moved by 1e-3 relative: outside FIRST_STEP_RTOL (1e-4); by 1e-6, inside it.
    far, near = moved("far", 1, 1 + 1e-3), moved("near", 1, 1 + 1e-6)
    assert not rules(far, [far])["step-1 loss"] and rules(near, [near])["step-1 loss"]
    # The mean loss of the prefix against the cell's spread: a one-seed cell has none, a second seed gives some.
    assert not rules(near, [near])["mean loss, steps 1-1"]
    other_seed = moved("seed1", 1, 1.5)
    assert rules(near, [near, other_seed])["mean loss, steps 1-1"]
    # Divergence within the prefix must match: a run that diverged after it does not count.
    assert rules(moved("diverged_later", 1, 1.0, diverged=True), [published])["diverged within 1 steps"]
    diverged = moved("diverged", 1, 1.0, diverged=True)
    steps = pd.read_parquet(diverged / runfiles.STEPS)
    steps[steps["step"] <= 1].to_parquet(diverged / runfiles.STEPS)
    assert not rules(diverged, [published])["diverged within 1 steps"]


def test_a_published_paper_runs_prefix_reproduces_at_the_level_its_platform_promises(tmp_path):
    """What make reproduce checks of the paper runs too long to retrain in its minutes: one classifier run's
    first 50 steps, retrained here (bits where the recorded platform is this one, else the study level)."""
    from clipstudy.orchestration import verify

    chosen = [s for s in verify.sample_runs("paper", 0, 1000, prefix_long=True) if s.experiment == "spikes"]
    if not chosen:
        pytest.skip("results/paper/ holds no spike run yet")
    published = bundle.bundle_dir("paper") / "runs" / chosen[0].run_id
    v = verify.verify_prefix(chosen[0], published, tmp_path)
    print("\n".join(v.lines()))
    assert v.ok and v.prefix == verify.PREFIX_STEPS, "\n".join(v.lines())
    assert len(pd.read_parquet(v.out_dir / runfiles.STEPS)) == verify.PREFIX_STEPS


def test_verify_from_the_command_line_checks_a_sampled_run_by_its_first_steps(published_profile, capsys):
    """`python -m clipstudy.orchestration.verify` as `make reproduce` calls it: a run longer than --max-steps is
    checked by its first steps, the output names the promise, and it exits 0 when everything holds."""
    from clipstudy.orchestration import verify

    code = verify.main(["--profile", str(published_profile), "--draw", "sample", "--max-steps", "1", "--prefix-long"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"(its first {verify.PREFIX_STEPS} steps) ..." in out and "(checked: bits, first 50 steps)" in out
    assert "1 of the runs were checked on their first 50 steps" in out and "REPRODUCED" in out


def test_a_second_sweep_publishing_to_the_same_bundle_is_refused_whatever_its_reports_folder(
    published_profile, tmp_path
):
    """Two sweeps of one published profile with different --reports would both write the bundle (and train every
    run twice); the second is refused, naming the bundle, before it starts anything."""
    from clipstudy.study.lock import FolderBusy, SweepLock

    with SweepLock(paths.results_dir() / "pub", holder="sweep publishing to it"):
        with pytest.raises(FolderBusy, match=f"another sweep publishing to it .* in {paths.results_dir() / 'pub'}"):
            sweep.run_sweep(published_profile, tmp_path / "elsewhere", workers=1, progress=False)


def test_q3s_cpu_crossed_seeds_are_every_arm_of_seeds_5_to_7_as_published():
    """The robustness check retrains exactly Q3's three arms of seeds 5-7 (unclipped, the probe's median, YOLO's
    10), each with the id it was published under."""
    from clipstudy.orchestration import robustness
    from clipstudy.study.plan import load_plan

    plan = load_plan("paper")
    runs = robustness.q3_crossed_runs(plan)
    arms = sorted((s.config.method, bool(s.config.threshold_rule), s.config.seed) for s in runs)
    kinds = (("none", False), ("global_norm", False), ("global_norm", True))
    assert arms == sorted((m, rule, seed) for m, rule in kinds for seed in (5, 6, 7))
    assert all((plan.bundle / "runs" / s.run_id / "summary.json").is_file() for s in runs)
    assert {s.config.learning_rate for s in runs} == {0.01} and {s.config.optimizer for s in runs} == {"adam"}
