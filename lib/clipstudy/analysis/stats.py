"""Statistics of the study: paired differences against the unclipped baseline, stability, spikes.

Pairing: a clipped run and the ``none`` run with the same task, settings (``settings_key``: epochs,
data, spikes, ...), optimizer, learning rate and seed saw the same initial weights and the same batches, so
their difference isolates the clipping. Intervals are two-sided 95% Student-t intervals over seeds.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

PAIR_KEYS = ["task", "settings_key", "optimizer", "learning_rate", "seed"]
CELL_KEYS = ["task", "settings_key", "optimizer", "learning_rate"]


@dataclass(frozen=True)
class Effect:
    """A mean paired difference over seeds: its two-sided 95% Student-t interval, p-value and n.

    When every difference is the same non-zero number the t interval has zero width and means
    nothing; the p-value is then the exact two-sided sign test (``2 · 0.5^n``) and the interval NaN.
    """

    mean: float
    low: float
    high: float
    n: int
    p: float
    note: str = ""

    def excludes_zero(self, alpha: float = 0.05) -> bool:
        return self.n >= 2 and self.p < alpha

    def format(self, digits: int = 4) -> str:
        interval = "no interval" if math.isnan(self.low) else f"[{self.low:+.{digits}f}, {self.high:+.{digits}f}]"
        p = "p n/a" if math.isnan(self.p) else (f"p={self.p:.2g}" if self.p >= 1e-4 else "p<1e-4")
        return f"{self.mean:+.{digits}f} {interval}, {p}, n={self.n}" + (f" ({self.note})" if self.note else "")


def paired_effect(differences, confidence: float = 0.95) -> Effect:
    """The ``Effect`` of paired ``differences`` (NaN dropped): one-sample t-test against 0."""
    x = np.asarray([v for v in differences if v is not None and np.isfinite(v)], np.float64)
    n = len(x)
    if n == 0:
        return Effect(math.nan, math.nan, math.nan, 0, math.nan, "no pairs")
    mean = float(x.mean())
    if n == 1:
        return Effect(mean, math.nan, math.nan, 1, math.nan, "one pair: no interval")
    sd = float(x.std(ddof=1))
    if sd == 0:
        if mean == 0:
            return Effect(0.0, 0.0, 0.0, n, 1.0, "every pair identical")
        return Effect(mean, math.nan, math.nan, n, min(1.0, 2 * 0.5**n), "zero variance: sign test")
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n))
    p = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    return Effect(mean, mean - half, mean + half, n, p)


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, float, int]:
    """Mean and two-sided Student-t interval of ``values`` (NaN dropped): ``(mean, low, high, n)``."""
    e = paired_effect(values, confidence)
    return e.mean, e.low, e.high, e.n


#: No interval and no p-value from fewer paired seeds than this, in verdicts, scans and figures alike (the
#: protocol's rule: with two seeds t = 12.7 and an "interval" says nothing).
MIN_TESTED_N = 5


def tested(effect: Effect) -> Effect:
    """``effect`` with its interval and p-value removed when it rests on fewer than ``MIN_TESTED_N`` pairs."""
    if effect.n >= MIN_TESTED_N:
        return effect
    return dataclasses.replace(effect, low=math.nan, high=math.nan, p=math.nan)


def holm(pvalues) -> list[float]:
    """Holm-adjusted p-values (step-down, family-wise error), in the order given; NaN stays NaN."""
    p = np.asarray(pvalues, np.float64)
    valid = np.flatnonzero(~np.isnan(p))
    adjusted = np.full(len(p), np.nan)
    running = 0.0
    for rank, i in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (len(valid) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def exact_mcnemar(clipped_only: int, baseline_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs: runs where only the clipped one
    failed, and runs where only the unclipped one failed."""
    discordant = clipped_only + baseline_only
    if discordant == 0:
        return 1.0
    return float(min(1.0, 2 * stats.binom.cdf(min(clipped_only, baseline_only), discordant, 0.5)))


def area_under_curve(epochs: pd.DataFrame, metric: str) -> float:
    """Mean of ``metric`` over training: the trapezoid area under metric-vs-step, divided by the steps.

    A run that learns faster has the larger area even when the final values agree.
    """
    e = epochs.dropna(subset=[metric]).sort_values("step")
    if len(e) == 0:
        return math.nan
    steps = np.r_[0.0, e["step"].to_numpy(np.float64)]
    values = np.r_[e[metric].iloc[0], e[metric].to_numpy(np.float64)]  # flat start: no value before step 1
    if steps[-1] == 0:
        return float(values[-1])
    return float(np.trapezoid(values, steps) / steps[-1])


def add_curve_areas(summaries: pd.DataFrame, epochs: pd.DataFrame, metric: str, name: str = "auc") -> pd.DataFrame:
    """``summaries`` with a column ``name``: each run's area under its ``metric`` curve. A failed run
    keeps the area it achieved (its evaluations are real: a stopped run is scored as it stood)."""
    areas = {run: area_under_curve(e, metric) for run, e in epochs.groupby("run_id")}
    out = summaries.copy()
    out[name] = out["run_id"].map(areas)
    return out


def mean_training_loss(steps: pd.DataFrame) -> float:
    """A run's training loss averaged over its steps from step 0 (trapezoid over the recorded steps, so a thinned
    step table weighs each stretch by its length): lower means it converged sooner. NaN for a run whose loss
    stopped being finite (its failure is counted elsewhere)."""
    s = steps.sort_values("step")
    x, y = s["step"].to_numpy(np.float64), s["loss"].to_numpy(np.float64)
    if len(x) == 0 or not np.all(np.isfinite(y)):
        return math.nan
    if len(x) == 1 or x[-1] == x[0]:
        return float(y[0])
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # NumPy 2 renamed it
    return float(trapezoid(y, x) / (x[-1] - x[0]))


def add_training_loss_means(summaries: pd.DataFrame, steps: pd.DataFrame, name: str = "mean_train_loss"):
    """``summaries`` with a column ``name``: each run's ``mean_training_loss`` (convergence measured from step 0,
    where the first evaluation comes only after the first ~200 steps)."""
    means = {run: mean_training_loss(s) for run, s in steps.groupby("run_id")} if len(steps) else {}
    out = summaries.copy()
    out[name] = out["run_id"].map(means)
    return out


def present_keys(df: pd.DataFrame, keys) -> list[str]:
    """The ``keys`` that are columns of ``df``, in order."""
    return [k for k in keys if k in df]


def paired_differences(summaries: pd.DataFrame, metric: str, baseline: str = "none") -> pd.DataFrame:
    """Per method setting and cell, the mean paired difference ``metric(clipped) - metric(baseline)``
    over seeds, with its 95% interval and p-value. Failed runs count as what they achieved; a pair
    where either run has no value at all is dropped and counted in ``pairs_dropped``.
    """
    pair_keys = present_keys(summaries, PAIR_KEYS)
    cell_keys = present_keys(summaries, CELL_KEYS)
    base = summaries[summaries["method"] == baseline][pair_keys + [metric]].rename(columns={metric: "baseline"})
    clipped = summaries[summaries["method"] != baseline]
    merged = clipped.merge(base, on=pair_keys, how="inner")
    merged["difference"] = merged[metric] - merged["baseline"]
    rows = []
    for key, group in merged.groupby(cell_keys + ["method", "label"], dropna=False, sort=True):
        e = tested(paired_effect(group["difference"]))
        rows.append(
            {
                **dict(zip(cell_keys + ["method", "label"], key)),
                "metric": metric,
                "mean_difference": e.mean,
                "ci_low": e.low,
                "ci_high": e.high,
                "p_value": e.p,
                "pairs": e.n,
                "pairs_dropped": int(len(group) - e.n),
                "baseline_mean": float(group["baseline"].mean()),
                "clipped_mean": float(group[metric].mean()),
            }
        )
    return pd.DataFrame(rows)


def classify_effect(low: float, high: float, mean: float) -> str:
    """``better`` / ``worse`` when the interval excludes 0, ``identical`` when every pair differed by 0,
    ``unclear`` otherwise (including too few pairs for an interval)."""
    if mean == 0 and (low == 0 or math.isnan(low)) and (high == 0 or math.isnan(high)):
        return "identical"
    if math.isnan(low) or math.isnan(high):
        return "unclear"
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "unclear"


def stability(summaries: pd.DataFrame, metric: str, good_fraction: float = 0.9) -> pd.DataFrame:
    """Per task, optimizer and method setting: divergence rate, best mean ``metric``, and the stable
    learning rates: those where no seed diverged and the mean ``metric`` is at least ``good_fraction``
    of the best mean reached by any method at any rate for that task and optimizer."""
    rows = []
    for (task, opt), group in summaries.groupby(["task", "optimizer"]):
        means = (
            group.groupby(["label", "method", "learning_rate"])
            .agg(metric_mean=(metric, "mean"), diverged=("diverged", "mean"))
            .reset_index()
        )
        best = means["metric_mean"].max()
        for (label, method), g in means.groupby(["label", "method"]):
            stable = g[(g["diverged"] == 0) & (g["metric_mean"] >= good_fraction * best)]["learning_rate"]
            rates = sorted(stable)
            rows.append(
                {
                    "task": task,
                    "optimizer": opt,
                    "label": label,
                    "method": method,
                    "divergence_rate": float(group[group["label"] == label]["diverged"].mean()),
                    "best_metric": float(g["metric_mean"].max()),
                    "stable_rates": len(rates),
                    "rates_tried": int(g["learning_rate"].nunique()),
                    "stable_low": rates[0] if rates else math.nan,
                    "stable_high": rates[-1] if rates else math.nan,
                    "stable_decades": math.log10(rates[-1] / rates[0]) if rates else math.nan,
                }
            )
    return pd.DataFrame(rows)


def spike_recovery(steps: pd.DataFrame, spike_steps, window: int = 10, tolerance: float = 1.1) -> dict[str, float]:
    """How a run met injected bad batches: the loss before them (median of the ``window`` steps before
    the first), the peak from the first spike to ``window`` steps after the last, and the steps after
    the last spike until the ``window``-step running mean is back within ``tolerance`` × the level before."""
    spike_steps = sorted(spike_steps)
    loss = steps.set_index("step")["loss"]
    before = loss.loc[max(1, spike_steps[0] - window) : spike_steps[0] - 1]
    level = float(before.median()) if len(before) else math.nan
    after_last = loss.loc[spike_steps[-1] + 1 :]
    peak = float(loss.loc[spike_steps[0] : spike_steps[-1] + window].max())
    running = after_last.rolling(window, min_periods=window).mean()
    back = running[running <= tolerance * level]
    return {
        "loss_before": level,
        "loss_peak": peak,
        "peak_ratio": peak / level if level else math.nan,
        "steps_to_recover": float(back.index[0] - spike_steps[-1]) if len(back) else math.nan,
    }
