"""Stage 3's choices from its exploratory calibration (seeds 10 and 11), by the rules of docs/protocol.md, read on
validation data only:

* each arm's tuned rate: the best *median* final validation score over the calibration seeds, a diverged run
  counting as the worst score (the adding problem: lowest validation MSE; the classifier: highest accuracy);
* the best adaptive method of the recurrent calibration: the adaptive arm whose median validation MSE at its own
  tuned rate is lowest;
* the rate of the divergence contrast: the lowest rate at which an unclipped calibration run diverged.

``python -m clipstudy.analysis.stage3`` prints them from the published bundle.
"""

from __future__ import annotations

import argparse
import math

import pandas as pd

from clipstudy.analysis import outcomes, report

CALIBRATION_SEEDS = (10, 11)
#: The adaptive rules calibrated on the adding problem (at their published defaults).
ADAPTIVE = ("zclip", "adagc", "quantile")
#: The score each task's rate is chosen on, and whether higher is better.
SCORES = {"adding": ("final_val_mse", False), "classifier": ("final_val_accuracy", True)}


def calibration(summaries: pd.DataFrame, experiment_task: str) -> pd.DataFrame:
    """The calibration runs of one task (seeds 10-11, no spikes), each with its outcome kind."""
    s = summaries[(summaries["task"] == experiment_task) & summaries["seed"].isin(CALIBRATION_SEEDS)]
    if "spiked" in s:
        s = s[~s["spiked"].astype(bool)]
    if experiment_task == "adding" and "steps_planned" in s:
        s = s[s["steps_planned"] == s["steps_planned"].max()]  # stage 3's 10,000 steps, not stage 2's 1,000
    return outcomes.add_outcomes(s)


def rate_scores(runs: pd.DataFrame, task: str) -> pd.Series:
    """Per (label, optimizer, rate): the median validation score over seeds, a diverged run the worst score."""
    column, higher = SCORES[task]
    worst = -math.inf if higher else math.inf
    score = runs[column].where(runs["outcome"] != "diverged", worst).fillna(worst)
    return score.groupby([runs["label"], runs["optimizer"], runs["learning_rate"]]).median()


def tuned_rates(runs: pd.DataFrame, task: str) -> pd.DataFrame:
    """Each arm's (label's) tuned rate per optimizer, with its median validation score."""
    scores = rate_scores(runs, task)
    higher = SCORES[task][1]
    rows = []
    for (label, optimizer), group in scores.groupby(level=[0, 1]):
        best = group.idxmax() if higher else group.idxmin()
        rows.append({"label": label, "optimizer": optimizer, "tuned_rate": best[2], "median_val": group[best]})
    return pd.DataFrame(rows)


def best_adaptive(tuned: pd.DataFrame, methods: dict[str, str]) -> str | None:
    """The adaptive arm (``ADAPTIVE``) with the lowest median validation MSE at its own tuned rate."""
    adaptive = tuned[tuned["label"].map(lambda label: methods.get(label) in ADAPTIVE)]
    return None if adaptive.empty else str(adaptive.sort_values("median_val").iloc[0]["label"])


def lowest_diverging_rate(runs: pd.DataFrame) -> float | None:
    """The lowest rate at which an unclipped calibration run diverged."""
    diverged = runs[(runs["label"] == "none") & (runs["outcome"] == "diverged")]
    return None if diverged.empty else float(diverged["learning_rate"].min())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipstudy.analysis.stage3", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="paper")
    args = parser.parse_args(argv)
    summaries = report.ProfileReport.load(args.profile).table.summaries
    for task in ("adding", "classifier"):
        runs = calibration(summaries, task)
        tuned = tuned_rates(runs, task)
        print(f"{task}: {len(runs)} calibration runs ({outcomes.counts_text(list(runs['outcome']))})")
        print(tuned.to_string(index=False))
        if task == "adding":
            methods = dict(runs[["label", "method"]].drop_duplicates().itertuples(index=False))
            print("best adaptive:", best_adaptive(tuned, methods))
            print("lowest rate where an unclipped run diverged:", lowest_diverging_rate(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
