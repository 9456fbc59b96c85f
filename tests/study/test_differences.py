"""The run comparison used to show that a change left the numbers alone."""

import pandas as pd

from clipstudy.study import differences


def test_timings_and_versions_are_ignored_but_metrics_are_not():
    a = {"final_test_accuracy": 0.9, "wall_time_s": 3.0, "versions": {"tensorflow": "1"}, "best": float("nan")}
    b = {"final_test_accuracy": 0.9, "wall_time_s": 4.0, "versions": {"tensorflow": "2"}, "best": float("nan")}
    assert differences.summary_differences(a, b) == []
    assert differences.summary_differences(a, {**b, "final_test_accuracy": 0.9000001}) == [
        "final_test_accuracy: 0.9 != 0.9000001"
    ]
    assert differences.summary_differences(a, {**b, "extra": 1}) == ["extra: '<absent>' != 1"]


def test_tables_must_match_in_every_column_but_the_timings():
    a = pd.DataFrame({"step": [1, 2], "loss": [0.5, 0.25], "step_time_s": [0.1, 0.2]})
    assert differences.table_differences(a, a.assign(step_time_s=[9.0, 9.0]), "steps") == []
    assert differences.table_differences(a, a.assign(loss=[0.5, 0.2500001]), "steps") == ["steps: column loss differs"]
    assert "shape or columns differ" in differences.table_differences(a, a.iloc[:1], "steps")[0]


def test_make_reproduces_sample_is_one_short_run_per_experiment_drawn_reproducibly():
    """What `make reproduce` retrains: from the published bundle, one run of each experiment that has runs of at
    most 1,300 steps, the same draw for the same seed; the experiments without such runs are named, not sampled."""
    from clipstudy.orchestration import verify
    from clipstudy.study.runfiles import load_summary

    first = verify.sample_runs("paper", 0, 1300, only_short=True)
    again = verify.sample_runs("paper", 0, 1300, only_short=True)
    assert [s.run_id for s in first] == [s.run_id for s in again]
    experiments = [s.experiment for s in first]
    assert len(experiments) == len(set(experiments)) >= 5
    bundle_runs = verify.bundle.bundle_dir("paper") / "runs"
    assert all(load_summary(bundle_runs / s.run_id)["steps_planned"] <= 1300 for s in first)
    skipped = verify.skipped_experiments("paper", first)
    assert "article" in skipped and not set(skipped) & set(experiments)
    everything = verify.sample_runs("paper", 0, 1300)  # without only_short: the cheapest of the long ones too
    assert {s.experiment for s in everything} == set(experiments) | set(skipped)


def test_make_reproduces_draw_covers_every_experiment_whole_where_short_else_by_its_prefix():
    """`make reproduce`'s draw (SAMPLE_STEPS=1000, --prefix-long): one run of every experiment with published
    runs, the same for the same seed, another seed draws others; a whole run only where it is that short."""
    from clipstudy.orchestration import verify

    drawn = verify.sample_runs("paper", 0, 1000, prefix_long=True)
    assert [s.run_id for s in drawn] == [s.run_id for s in verify.sample_runs("paper", 0, 1000, prefix_long=True)]
    assert verify.skipped_experiments("paper", drawn) == []
    experiments = [s.experiment for s in drawn]
    assert len(experiments) == len(set(experiments)) >= 10
    short = {s.experiment for s in verify.sample_runs("paper", 0, 1000, only_short=True)}
    assert short and short < set(experiments)  # the rest are long: checked on their first steps
    assert [s.run_id for s in verify.sample_runs("paper", 1, 1000, prefix_long=True)] != [s.run_id for s in drawn]


def test_a_flipped_failure_is_within_the_cell_only_where_its_seeds_both_fail_and_train():
    """Rule 2 of the study level: a retrained run that fails where the published one trained (or the reverse)
    is outside the promise, unless the cell's published seeds show both outcomes."""
    from clipstudy.orchestration import verify

    trained = {"final_test_accuracy": 0.97, "failure": None}
    collapsed = {"final_test_accuracy": 0.11, "failure": "collapsed: test accuracy 0.11 < 0.2"}

    def failure_row(published, retrained, cell):
        rows = verify.deviations(published, retrained, cell, ["final_test_accuracy"])
        return {d["metric"]: d for d in rows}

    uniform = failure_row(collapsed, trained, [collapsed, {**collapsed, "final_test_accuracy": 0.10}])
    assert not uniform["failure"]["within"] and not uniform["final_test_accuracy"]["within"]
    mixed = failure_row(collapsed, trained, [collapsed, trained])
    assert mixed["failure"]["within"] and mixed["failure"]["spread"] == "seeds differ"
    assert mixed["final_test_accuracy"]["within"]  # 0.86 apart, the cell's seeds 0.86 apart
    assert failure_row(trained, trained, [trained])["failure"]["within"]
