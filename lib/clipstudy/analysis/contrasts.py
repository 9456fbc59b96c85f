"""Selecting, pairing and testing runs: what every stage's rules are built from.

A contrast pairs each clipped run with the unclipped run of the same task, condition, optimizer, rate and seed, and
reads the paired differences over seeds (Student-t, p-value beside the interval). ``directional`` turns one such
contrast into a verdict by the study's rule: at least ``MIN_SEEDS`` seeds, supported or refuted when the 95% interval
excludes 0, "no effect" when it lies inside the metric's margin. ``scan`` is the secondary analysis over every cell,
Holm-adjusted, which never decides a verdict.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd

from clipstudy.analysis import stats

MIN_SEEDS = 5
ALPHA = 0.05
#: Smallest effects of interest: an interval inside ±margin counts as "no effect".
MARGINS = {"auc": 0.002, "final_test_accuracy": 0.002, "final_AP50": 0.01}


@dataclass
class Verdict:
    verdict: str  # supported / refuted / inconclusive
    kind: str  # data / deterministic / by construction
    numbers: str
    effect: stats.Effect | None = None
    secondary: str = ""
    words: str = ""  # the verdict in words that match its rule ("no effect within ±0.002"); default: ``verdict``


def run_label(method: str, clip_params: str, warmup_steps: int) -> str:
    """A run's label: its method, its clipping parameters (``clip_params`` as formatted, ``-`` for none) and its
    learning-rate warm-up, if it has one (``none + warm-up 300``): runs with and without a warm-up are never drawn,
    paired or counted together."""
    label = method + (f" ({clip_params})" if clip_params != "-" else "")
    return f"{label}{WARMUP_SUFFIX}{warmup_steps}" if warmup_steps else label


WARMUP_SUFFIX = " + warm-up "


def warmup_steps(s: pd.DataFrame) -> pd.Series:
    """Each run's learning-rate warm-up in steps (0: none), read from its settings."""
    if "settings_key" not in s:
        return pd.Series(0, index=s.index, dtype=int)
    return s["settings_key"].map(lambda k: int(json.loads(k).get("warmup_steps", 0))).astype(int)


def select(s: pd.DataFrame, where: dict, spiked: bool | None = False) -> pd.DataFrame:
    """The runs matching every ``column: value`` of ``where`` (and spiked or not)."""
    keep = pd.Series(True, index=s.index)
    for column, value in where.items():
        keep &= (s[column] - value).abs() <= 1e-12 * abs(value) if column == "learning_rate" else s[column] == value
    if spiked is not None:
        keep &= s["spiked"] == spiked
    return s[keep]


def longest_settings(rows: pd.DataFrame) -> pd.DataFrame:
    """The runs of the condition that trains longest (the article's recipe where a profile has it)."""
    if rows.empty or "steps_planned" not in rows:
        return rows
    return rows[rows["settings_key"] == rows.groupby("settings_key")["steps_planned"].max().idxmax()]


def pairs(rows: pd.DataFrame, label: str, base: str = "none") -> pd.DataFrame:
    """Runs of ``label`` beside the run of ``base`` with the same task, condition, optimizer, rate and
    seed (columns of the latter end in ``_base``)."""
    keys = stats.present_keys(rows, stats.PAIR_KEYS)
    return rows[rows["label"] == label].merge(rows[rows["label"] == base], on=keys, suffixes=("", "_base"))


def fewest_seeds(p: pd.DataFrame) -> int:
    return int(p.groupby(stats.present_keys(p, stats.CELL_KEYS))["seed"].nunique().min()) if len(p) else 0


def identical(p: pd.DataFrame) -> bool:
    """Every pair was bit-identical over the whole run (same trajectory digest, nothing clipped)."""
    column = "outcome_sha256" if "outcome_sha256" in p and p["outcome_sha256"].notna().all() else "trajectory_sha256"
    if p.empty or column not in p:
        return False
    return bool((p[column] == p[f"{column}_base"]).all() and (p["clip_fraction"] == 0).all())


def directional(p: pd.DataFrame, metric: str, direction: int, what: str, null_refutes: bool = True) -> Verdict:
    """The verdict of a paired contrast: ``direction`` +1 (clipping raises ``metric``), −1 (lowers it)
    or 0 (either). An interval inside ±margin refutes the claim when ``null_refutes``."""
    if p.empty:
        return Verdict("inconclusive", "data", f"{what}: the profile has no such runs")
    effect = stats.paired_effect(p[metric] - p[f"{metric}_base"])
    seeds, margin = fewest_seeds(p), MARGINS[metric]
    numbers = f"{what}, {metric}: {effect.format()}"
    if seeds < MIN_SEEDS:
        return Verdict("inconclusive", "data", f"{numbers}; {seeds} seeds < {MIN_SEEDS}", effect)
    if effect.excludes_zero(ALPHA):
        agrees = direction == 0 or (effect.mean > 0) == (direction > 0)
        return Verdict("supported" if agrees else "refuted", "data", numbers, effect)
    if null_refutes and -margin <= effect.low and effect.high <= margin:
        return Verdict(
            "refuted",
            "data",
            f"{numbers}; the interval lies within ±{margin:g}: no effect",
            effect,
            words=f"no effect within ±{margin:g}",
        )
    return Verdict("inconclusive", "data", numbers, effect)


def scan(s: pd.DataFrame) -> pd.DataFrame:
    """Secondary: every clipped setting against the unclipped run in every unspiked cell, in the
    convergence metric (learning-curve area; AP50 for the detector) and final accuracy, Holm-adjusted."""
    rows = []
    base = s[~s["spiked"]]
    for metric in ("auc", "final_test_accuracy", "final_AP50"):
        if metric not in base:
            continue
        for label in sorted(set(base["label"]) - {"none"}):
            p = pairs(base.dropna(subset=[metric]), label)
            for _, group in p.groupby(stats.present_keys(p, stats.CELL_KEYS)):
                e = stats.tested(stats.paired_effect(group[metric] - group[f"{metric}_base"]))
                rows.append(
                    {
                        "metric": metric,
                        "label": label,
                        "optimizer": group["optimizer"].iloc[0],
                        "learning_rate": group["learning_rate"].iloc[0],
                        "task": group["task"].iloc[0],
                        "mean": e.mean,
                        "low": e.low,
                        "high": e.high,
                        "p": e.p,
                        "n": e.n,
                    }
                )
    table = pd.DataFrame(
        rows, columns=["metric", "label", "optimizer", "learning_rate", "task", "mean", "low", "high", "p", "n"]
    )
    table["p_holm"] = stats.holm(table["p"]) if len(table) else []
    return table


def scan_summary(table: pd.DataFrame) -> str:
    if table.empty:
        return "secondary scan: no paired cells"
    hits = table[table["p_holm"] < ALPHA]
    worse, better = hits[hits["mean"] < 0], hits[hits["mean"] > 0]
    tested = int(table["p"].notna().sum())
    out = (
        f"secondary scan of {tested} contrasts with at least {stats.MIN_TESTED_N} seeds, Holm-adjusted "
        f"({len(table) - tested} with fewer get no p-value): {len(worse)} worse, {len(better)} better"
    )
    examples = [
        f"{r.label} {r.optimizer} lr={r.learning_rate:g} {r.metric} {r.mean:+.4f} (Holm p={r.p_holm:.2g}, n={r.n})"
        for r in pd.concat([worse, better]).head(4).itertuples()
    ]
    return out + ("; e.g. " + "; ".join(examples) if examples else "")


def failure_contrast(p: pd.DataFrame) -> tuple[int, int, float]:
    """Paired failures: runs that failed clipped only, unclipped only, and the exact McNemar p of the two counts."""
    clipped_only = int((p["failed"] & ~p["failed_base"]).sum())
    base_only = int((~p["failed"] & p["failed_base"]).sum())
    return clipped_only, base_only, stats.exact_mcnemar(clipped_only, base_only)


def failure_effect(p: pd.DataFrame) -> tuple[stats.Effect, float, float, int, int]:
    """Paired failures as an effect: the clipped arm's failure rate minus the unclipped arm's, with the exact McNemar
    p of the discordant pairs and n the pairs; then the two rates and the pairs that failed clipped only and
    unclipped only."""
    clipped_only, base_only, pval = failure_contrast(p)
    base_rate, clip_rate = float(p["failed_base"].mean()), float(p["failed"].mean())
    effect = stats.Effect(clip_rate - base_rate, math.nan, math.nan, len(p), pval, "failure rate, exact McNemar")
    return effect, base_rate, clip_rate, clipped_only, base_only
