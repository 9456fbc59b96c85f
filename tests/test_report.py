"""Aggregation of run folders into tidy tables, and the HTML report build."""
import math

import numpy as np
import pandas as pd
import pytest

from clipstudy import report, runs
from clipstudy.training import RunResult


def fake_run(method, optimizer, lr, seed, accuracy, diverged=False, clip_fraction=0.0):
    steps = pd.DataFrame({"step": [1, 2, 3, 4], "epoch": [1, 1, 2, 2], "loss": [2.3, 1.0, 0.5, 0.4],
                          "norm_before": [3.0, 2.0, 1.5, 1.0], "norm_after": [1.0, 1.0, 1.0, 1.0],
                          "clipped": [1.0, 1.0, 1.0, 0.0], "threshold": [1.0] * 4,
                          "nonfinite": [False] * 4, "step_time_s": [0.01] * 4})
    epochs = pd.DataFrame({"epoch": [1, 2], "step": [2, 4], "train_loss": [1.5, 0.45],
                           "train_accuracy": [0.6, accuracy], "test_loss": [1.2, 0.5],
                           "test_accuracy": [0.7, accuracy], "wall_time_s": [1.0, 2.0], "eval_time_s": [0.1, 0.1]})
    params = {"task": "classifier", "method": method, "clip_params": {"threshold": 1.0} if method != "none" else {},
              "optimizer": optimizer, "learning_rate": lr, "seed": seed}
    summary = {"method": method, "optimizer": optimizer, "learning_rate": lr, "seed": seed,
               "final_test_accuracy": accuracy if not diverged else math.nan, "diverged": diverged,
               "clip_fraction": clip_fraction, "steps_to_98": math.nan, "clip_params": params["clip_params"]}
    return RunResult(steps, epochs, summary), params


@pytest.fixture
def runs_root(tmp_path):
    root = tmp_path / "reports" / "fake" / "runs"
    table = [("none", "adam", 0.001, 0, 0.90), ("none", "adam", 0.001, 1, 0.80),
             ("global_norm", "adam", 0.001, 0, 0.95), ("global_norm", "adam", 0.001, 1, 0.85),
             ("none", "sgd", 0.1, 0, 0.5), ("global_norm", "sgd", 0.1, 0, 0.6)]
    for i, (m, o, lr, s, acc) in enumerate(table):
        result, params = fake_run(m, o, lr, s, acc, diverged=(m == "none" and o == "sgd"), clip_fraction=0.75 if m != "none" else 0)
        runs.save_run(result, root / runs.run_id(params), params)
    # A failed run and a killed one (no summary) are not results.
    (root / "broken").mkdir()
    runs.write_json_atomic({"error": "ValueError: boom"}, root / "broken" / runs.ERROR)
    (root / "killed").mkdir()
    return root


def test_load_runs_reads_every_finished_run_into_tidy_tables(runs_root):
    table = report.load_runs(runs_root)
    assert len(table.summaries) == 6
    assert len(table.steps) == 6 * 4 and len(table.epochs) == 6 * 2
    assert table.failed.to_dict("records") == [{"run_id": "broken", "error": "ValueError: boom"}]
    assert set(table.steps.columns) >= {"run_id", "method", "optimizer", "learning_rate", "seed", "norm_before"}
    assert table.summaries["final_test_accuracy"].isna().sum() == 1  # JSON null is NaN again


def test_method_table_averages_over_seeds(runs_root):
    t = report.method_table(report.load_runs(runs_root).summaries)
    row = t[(t.optimizer == "adam") & (t.method == "global_norm")].iloc[0]
    assert row["runs"] == 2
    assert row["test_accuracy"] == pytest.approx(np.mean([0.95, 0.85]))
    assert row["clip_fraction"] == pytest.approx(0.75)
    sgd_none = t[(t.optimizer == "sgd") & (t.method == "none")].iloc[0]
    assert sgd_none["diverged"] == 1.0
    assert t[t.optimizer == "adam"]["method"].tolist() == ["none", "global_norm"]  # study order


def test_no_runs_says_to_run_the_sweep(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the sweep first"):
        report.load_runs(tmp_path / "reports" / "nothing" / "runs")


def test_the_report_is_exported_to_html_without_code_and_saves_figures(runs_root):
    reports = runs_root.parents[1]
    html = report.build_report("fake", reports)
    text = html.read_text()
    assert "Report: what clipping did" in text
    assert "report.load_runs" not in text  # code cells are left out
    figures = reports / "fake" / "figures"
    for name in ["learning_curves", "final_accuracy", "clip_fraction", "divergence", "norms_adam", "norms_sgd"]:
        assert (figures / f"{name}.png").stat().st_size > 1000
        assert (figures / f"{name}.svg").exists()
