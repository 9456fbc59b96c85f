"""The run comparison used to show that a change left the numbers alone."""

import pandas as pd

from clipstudy.study import compare


def test_timings_and_versions_are_ignored_but_metrics_are_not():
    a = {"final_test_accuracy": 0.9, "wall_time_s": 3.0, "versions": {"tensorflow": "1"}, "best": float("nan")}
    b = {"final_test_accuracy": 0.9, "wall_time_s": 4.0, "versions": {"tensorflow": "2"}, "best": float("nan")}
    assert compare.summary_differences(a, b) == []
    assert compare.summary_differences(a, {**b, "final_test_accuracy": 0.9000001}) == [
        "final_test_accuracy: 0.9 != 0.9000001"
    ]
    assert compare.summary_differences(a, {**b, "extra": 1}) == ["extra: '<absent>' != 1"]


def test_tables_must_match_in_every_column_but_the_timings():
    a = pd.DataFrame({"step": [1, 2], "loss": [0.5, 0.25], "step_time_s": [0.1, 0.2]})
    assert compare.table_differences(a, a.assign(step_time_s=[9.0, 9.0]), "steps") == []
    assert compare.table_differences(a, a.assign(loss=[0.5, 0.2500001]), "steps") == ["steps: column loss differs"]
    assert "shape or columns differ" in compare.table_differences(a, a.iloc[:1], "steps")[0]
