"""Statistics of the study: paired differences against the unclipped baseline, stability, spikes.

Pairing: a clipped run and the ``none`` run with the same task, settings (``settings_key``: epochs,
data, spikes, ...), optimizer, learning rate and seed saw the same initial weights and the same batches, so their difference isolates the
clipping. Intervals are two-sided 95% Student-t intervals over seeds.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

PAIR_KEYS = ["task", "settings_key", "optimizer", "learning_rate", "seed"]
CELL_KEYS = ["task", "settings_key", "optimizer", "learning_rate"]


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, float, int]:
    """Mean and two-sided Student-t interval of ``values`` (NaN dropped): ``(mean, low, high, n)``.

    With one value the interval is undefined (NaN); with zero spread it collapses onto the mean.
    """
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if n == 1:
        return mean, math.nan, math.nan, 1
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


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
    """``summaries`` with a column ``name``: each run's area under its ``metric`` curve (NaN if it diverged)."""
    areas = {run: area_under_curve(e, metric) for run, e in epochs.groupby("run_id")}
    out = summaries.copy()
    out[name] = out["run_id"].map(areas)
    out.loc[out["diverged"].astype(bool), name] = math.nan
    return out


def present_keys(df: pd.DataFrame, keys) -> list[str]:
    """The ``keys`` that are columns of ``df``, in order."""
    return [k for k in keys if k in df]


def paired_differences(summaries: pd.DataFrame, metric: str, baseline: str = "none") -> pd.DataFrame:
    """Per method setting and cell, the mean paired difference ``metric(clipped) - metric(baseline)``
    over seeds, with its 95% interval. Pairs where either run has no value (diverged) are dropped
    and counted in ``pairs_dropped``.
    """
    pair_keys = present_keys(summaries, PAIR_KEYS)
    cell_keys = present_keys(summaries, CELL_KEYS)
    base = summaries[summaries["method"] == baseline][pair_keys + [metric]].rename(columns={metric: "baseline"})
    clipped = summaries[summaries["method"] != baseline]
    merged = clipped.merge(base, on=pair_keys, how="inner")
    merged["difference"] = merged[metric] - merged["baseline"]
    rows = []
    for key, group in merged.groupby(cell_keys + ["method", "label"], dropna=False, sort=True):
        mean, low, high, n = mean_ci(group["difference"])
        rows.append({**dict(zip(cell_keys + ["method", "label"], key)), "metric": metric, "mean_difference": mean,
                     "ci_low": low, "ci_high": high, "pairs": n, "pairs_dropped": int(len(group) - n),
                     "baseline_mean": float(group["baseline"].mean()), "clipped_mean": float(group[metric].mean())})
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
        means = group.groupby(["label", "method", "learning_rate"]).agg(
            metric_mean=(metric, "mean"), diverged=("diverged", "mean")).reset_index()
        best = means["metric_mean"].max()
        for (label, method), g in means.groupby(["label", "method"]):
            stable = g[(g["diverged"] == 0) & (g["metric_mean"] >= good_fraction * best)]["learning_rate"]
            rates = sorted(stable)
            rows.append({"task": task, "optimizer": opt, "label": label, "method": method,
                         "divergence_rate": float(group[group["label"] == label]["diverged"].mean()),
                         "best_metric": float(g["metric_mean"].max()),
                         "stable_rates": len(rates), "rates_tried": int(g["learning_rate"].nunique()),
                         "stable_low": rates[0] if rates else math.nan, "stable_high": rates[-1] if rates else math.nan,
                         "stable_decades": math.log10(rates[-1] / rates[0]) if rates else math.nan})
    return pd.DataFrame(rows)


def spike_recovery(steps: pd.DataFrame, spike_steps, window: int = 10, tolerance: float = 1.1) -> dict[str, float]:
    """How a run met injected bad batches: the loss before them (median of the ``window`` steps before
    the first), the peak from the first spike to ``window`` steps after the last, and the steps after
    the last spike until the ``window``-step running mean is back within ``tolerance`` × the level before."""
    spike_steps = sorted(spike_steps)
    loss = steps.set_index("step")["loss"]
    before = loss.loc[max(1, spike_steps[0] - window):spike_steps[0] - 1]
    level = float(before.median()) if len(before) else math.nan
    after_last = loss.loc[spike_steps[-1] + 1:]
    peak = float(loss.loc[spike_steps[0]:spike_steps[-1] + window].max())
    running = after_last.rolling(window, min_periods=window).mean()
    back = running[running <= tolerance * level]
    return {"loss_before": level, "loss_peak": peak, "peak_ratio": peak / level if level else math.nan,
            "steps_to_recover": float(back.index[0] - spike_steps[-1]) if len(back) else math.nan}
