"""Statistics and the claims audit against hand-computed values and NumPy/SciPy references."""

import math

import numpy as np
import pandas as pd
import pytest

from clipstudy.analysis import stats as analysis


def test_mean_ci_is_the_student_t_interval():
    values = [1.0, 2.0, 4.0]
    mean, low, high, n = analysis.mean_ci(values)
    # t(0.975, 2) = 4.302653; sd = 1.527525; half = 4.302653 * 1.527525 / sqrt(3) = 3.794583
    assert (mean, n) == (pytest.approx(7 / 3), 3)
    assert low == pytest.approx(7 / 3 - 3.794583, abs=1e-5) and high == pytest.approx(7 / 3 + 3.794583, abs=1e-5)


def test_mean_ci_edge_cases():
    assert analysis.mean_ci([0.0, 0.0, 0.0])[1:3] == (0.0, 0.0)
    assert math.isnan(analysis.mean_ci([1.0])[1])
    assert analysis.mean_ci([np.nan, np.nan])[3] == 0


@pytest.mark.parametrize(
    "low, high, mean, expected",
    [
        (0.1, 0.3, 0.2, "better"),
        (-0.3, -0.1, -0.2, "worse"),
        (-0.1, 0.3, 0.1, "unclear"),
        (0.0, 0.0, 0.0, "identical"),
        (math.nan, math.nan, 0.5, "unclear"),
        (math.nan, math.nan, 0.0, "identical"),
    ],
)
def test_classify_effect(low, high, mean, expected):
    assert analysis.classify_effect(low, high, mean) == expected


def test_area_under_curve_by_trapezoids():
    epochs = pd.DataFrame({"step": [10, 20], "test_accuracy": [0.5, 1.0]})
    # flat 0.5 from 0 to 10, then 0.5 -> 1.0: (5 + 7.5) / 20
    assert analysis.area_under_curve(epochs, "test_accuracy") == pytest.approx(12.5 / 20)


def summaries_for(effects):
    """Runs of one cell: a baseline and a clipped setting per seed with the given final accuracies."""
    rows = []
    for seed, (base, clipped) in enumerate(effects):
        for method, label, acc in (("none", "none", base), ("global_norm", "global_norm (threshold=1)", clipped)):
            rows.append(
                {
                    "run_id": f"{method}-{seed}",
                    "task": "classifier",
                    "settings_key": "{}",
                    "optimizer": "adam",
                    "learning_rate": 0.001,
                    "seed": seed,
                    "method": method,
                    "label": label,
                    "final_test_accuracy": acc,
                    "diverged": acc is None or math.isnan(acc),
                }
            )
    return pd.DataFrame(rows)


def test_paired_differences_pair_by_seed_and_drop_diverged_pairs():
    pairs = [(0.90, 0.92), (0.80, 0.83), (0.85, 0.86), (0.70, math.nan), (0.75, 0.79), (0.88, 0.88)]
    s = summaries_for(pairs)
    table = analysis.paired_differences(s, "final_test_accuracy")
    row = table.iloc[0]
    diffs = np.array([0.02, 0.03, 0.01, 0.04, 0.0])
    assert row["pairs"] == 5 and row["pairs_dropped"] == 1
    assert row["mean_difference"] == pytest.approx(diffs.mean())
    from scipy import stats

    half = stats.t.ppf(0.975, 4) * diffs.std(ddof=1) / np.sqrt(5)
    assert row["ci_low"] == pytest.approx(diffs.mean() - half) and row["ci_high"] == pytest.approx(diffs.mean() + half)
    # four pairs: the mean alone, no interval and no p-value (the protocol's five seeds)
    few = analysis.paired_differences(summaries_for(pairs[:4]), "final_test_accuracy").iloc[0]
    assert few["pairs"] == 3 and few["mean_difference"] == pytest.approx(0.02)
    assert math.isnan(few["ci_low"]) and math.isnan(few["ci_high"]) and math.isnan(few["p_value"])


def test_runs_of_other_settings_are_never_paired():
    s = summaries_for([(0.9, 0.95), (0.8, 0.85)])
    other = s[s["method"] == "global_norm"].assign(settings_key='{"spikes": 1}', final_test_accuracy=0.1)
    table = analysis.paired_differences(pd.concat([s, other]), "final_test_accuracy")
    assert len(table) == 1 and table.iloc[0]["mean_difference"] == pytest.approx(0.05)


def test_spike_recovery_on_a_scripted_loss_trace():
    loss = [1.0] * 10 + [50.0, 40.0] + [3.0] * 5 + [1.0] * 20
    steps = pd.DataFrame({"step": np.arange(1, len(loss) + 1), "loss": loss})
    out = analysis.spike_recovery(steps, [11, 12], window=5, tolerance=1.1)
    assert out["loss_before"] == 1.0 and out["loss_peak"] == 50.0 and out["peak_ratio"] == 50.0
    # After step 12: five 3.0s then 1.0s; the 5-step mean first reaches <= 1.1 at step 22 (all 1.0 from 18 on).
    assert out["steps_to_recover"] == 10


def test_stability_counts_rates_without_divergence_and_near_the_best():
    rows = []
    for lr, acc, div in ((0.001, 0.95, False), (0.01, 0.97, False), (0.1, 0.5, False), (1.0, math.nan, True)):
        rows.append(
            {
                "task": "classifier",
                "optimizer": "sgd",
                "label": "none",
                "method": "none",
                "learning_rate": lr,
                "final_test_accuracy": acc,
                "diverged": div,
            }
        )
    table = analysis.stability(pd.DataFrame(rows), "final_test_accuracy")
    row = table.iloc[0]
    assert row["stable_rates"] == 2 and row["stable_low"] == 0.001 and row["stable_high"] == 0.01
    assert row["stable_decades"] == pytest.approx(1.0) and row["divergence_rate"] == 0.25


def test_a_zero_width_interval_is_never_significant_on_its_own():
    # Two equal non-zero differences: the t interval has zero width; the exact sign test decides.
    e = analysis.paired_effect([0.01, 0.01])
    assert math.isnan(e.low) and e.p == 0.5 and not e.excludes_zero() and "sign test" in e.note
    assert analysis.paired_effect([0.01] * 5).p == pytest.approx(0.0625)  # still not below 0.05
    assert analysis.paired_effect([0.01] * 6).excludes_zero()  # 2 * 0.5**6 = 0.03125


def test_the_p_value_is_scipys_one_sample_t_test():
    from scipy import stats

    diffs = [0.02, 0.05, -0.01, 0.04, 0.03]
    e = analysis.paired_effect(diffs)
    assert e.p == pytest.approx(stats.ttest_1samp(diffs, 0.0).pvalue) and e.n == 5


def test_holm_adjusts_step_down_and_keeps_the_order():
    # Sorted 0.01, 0.03, 0.04 times 3, 2, 1 = 0.03, 0.06, 0.04 -> monotone 0.03, 0.06, 0.06.
    assert analysis.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(analysis.holm([0.2, math.nan])[1])


def test_exact_mcnemar_is_the_two_sided_binomial_test_on_discordant_pairs():
    from scipy import stats

    assert analysis.exact_mcnemar(1, 9) == pytest.approx(stats.binomtest(1, 10, 0.5).pvalue)
    assert analysis.exact_mcnemar(0, 0) == 1.0


def test_figures_draw_no_interval_below_five_seeds():
    """Two accuracies 0.97 and 0.99: the t interval (t = 12.7) would run from 0.85 to 1.11; the figure shows the
    mean alone, and so it does for four values. Five get the claims' interval (t = 2.776 with 4 degrees of
    freedom, computed by hand from the values' standard deviation)."""
    from clipstudy.analysis.plots import t_interval

    assert t_interval([0.97, 0.99]) == (pytest.approx(0.98), pytest.approx(0.98))
    assert t_interval([1.0, 2.0, 4.0, 5.0]) == (pytest.approx(3.0), pytest.approx(3.0))
    values = [1.0, 2.0, 4.0, 5.0, 8.0]  # mean 4, sample sd sqrt(7.5)
    low, high = t_interval(values)
    half = 2.776445 * math.sqrt(7.5) / math.sqrt(5)
    assert low == pytest.approx(4 - half, abs=1e-5) and high == pytest.approx(4 + half, abs=1e-5)


def test_mean_training_loss_is_the_trapezoid_average_from_step_0():
    """Steps 0, 1, 3 (a thinned table: step 2 dropped) with losses 4, 2, 1: area 3·1 + 1.5·2 = 6 over 3 steps."""
    steps = pd.DataFrame({"step": [3, 0, 1], "loss": [1.0, 4.0, 2.0]})
    assert analysis.mean_training_loss(steps) == pytest.approx(2.0)
    assert math.isnan(analysis.mean_training_loss(steps.assign(loss=[np.inf, 4.0, 2.0])))
    table = analysis.add_training_loss_means(
        pd.DataFrame({"run_id": ["a", "b"]}), pd.concat([steps.assign(run_id="a"), steps.assign(run_id="b", loss=2.0)])
    )
    assert table["mean_train_loss"].tolist() == [pytest.approx(2.0), pytest.approx(2.0)]
