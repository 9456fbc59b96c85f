"""Stage 3's calibration choices follow the protocol's rules on hand-built runs."""

import math

import pandas as pd

from clipstudy.analysis import stage3


def run(label, method, lr, seed, val_mse, diverged=False):
    return {"task": "adding", "label": label, "method": method, "optimizer": "sgd", "learning_rate": lr,
            "seed": seed, "final_val_mse": val_mse, "diverged": diverged,
            "failure": "diverged: non-finite" if diverged else None, "final_train_loss": 0.01, "loss_start": 1.0,
            "steps_planned": 10_000}  # fmt: skip


def test_a_tuned_rate_is_the_best_median_with_a_diverged_run_the_worst_score():
    """At 0.1 one seed is the best of all (0.005) and the other diverged: its median is the worst, so the mean
    rule (which a diverged run's 1e37 drags) and a best-seed rule would both pick wrongly; the median picks 0.03."""
    runs = pd.DataFrame(
        [
            run("none", "none", 0.01, 10, 0.030), run("none", "none", 0.01, 11, 0.034),
            run("none", "none", 0.03, 10, 0.020), run("none", "none", 0.03, 11, 0.022),
            run("none", "none", 0.1, 10, 0.005), run("none", "none", 0.1, 11, math.nan, diverged=True),
            run("zclip", "zclip", 0.03, 10, 0.030), run("zclip", "zclip", 0.03, 11, 0.031),
            run("adagc", "adagc", 0.03, 10, 0.015), run("adagc", "adagc", 0.03, 11, 0.016),
            run("none", "none", 0.3, 12, 0.001),  # a confirmatory seed: never read by the calibration
        ]
    )  # fmt: skip
    runs = stage3.calibration(runs, "adding")
    tuned = stage3.tuned_rates(runs, "adding").set_index("label")
    assert tuned.loc["none", "tuned_rate"] == 0.03 and math.isclose(tuned.loc["none", "median_val"], 0.021)
    assert stage3.best_adaptive(tuned.reset_index(), {"zclip": "zclip", "adagc": "adagc", "none": "none"}) == "adagc"
    assert stage3.lowest_diverging_rate(runs) == 0.1
