"""The classifier's figures in the report: the stability map (method setting x learning rate), the steps to 98%
test accuracy, and the loss around injected bad batches."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from clipstudy.analysis.plots import _dodge, hue_and_order, label_colors, seeds_note, t_interval
from clipstudy.palette import FAILED_COLOR


def stability_map(summaries: pd.DataFrame, metric: str = "final_test_accuracy", title: str | None = None):
    """Method setting × learning rate, per optimizer (two panels per row). Each cell shows the mean ``metric``
    over seeds; its colour is the error ``1 − metric`` on a log scale, so that 0.92 and 0.99 (errors 0.08 and
    0.01) look different. Cells where runs failed (diverged or collapsed, ``failure``) carry the share that did
    (× for all)."""
    from matplotlib.colors import LogNorm

    summaries = summaries.assign(
        failed=(summaries["failure"].notna() if "failure" in summaries else summaries["diverged"]).astype(float)
    )
    optimizers = sorted(summaries["optimizer"].unique())
    col, order = hue_and_order(summaries)
    columns = min(2, len(optimizers))
    rows = math.ceil(len(optimizers) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(6.2 * columns + 1.5, rows * (0.42 * len(order) + 1.6)), squeeze=False
    )
    norm = LogNorm(vmin=0.005, vmax=1.0)
    for k, (ax, opt) in enumerate(zip(axes.ravel(), optimizers)):
        sub, epochs = _rate_grid(summaries[summaries["optimizer"] == opt])
        values, labels = _stability_table(sub, col, order, metric)
        error = (1.0 - values).clip(lower=norm.vmin, upper=norm.vmax)
        sns.heatmap(
            error,
            norm=norm,
            cmap="viridis_r",
            annot=labels,
            fmt="",
            ax=ax,
            annot_kws={"fontsize": 9},
            cbar=k % columns == columns - 1,
            cbar_kws={"label": f"1 − mean {metric.replace('_', ' ')} (log scale)"},
        )
        # each panel labels its own rows: optimizers need not share the same method settings
        ax.set(
            title=opt if epochs is None else f"{opt} ({epochs:g} epochs)",
            xlabel="learning rate",
            ylabel="clipping method (setting)" if k % columns == 0 else "",
        )
        ax.set_xticklabels([f"{float(t.get_text()):g}" for t in ax.get_xticklabels()], rotation=0)
    for ax in axes.ravel()[len(optimizers) :]:
        ax.set_axis_off()
    fig.suptitle(
        title
        or f"Stability map: mean {metric.replace('_', ' ')} (× every seed failed, ÷ share of seeds failed: diverged "
        "or collapsed)"
    )
    fig.tight_layout()
    return fig


def _stability_table(sub: pd.DataFrame, col: str, order: list, metric: str) -> tuple[pd.DataFrame, np.ndarray]:
    """One optimizer's panel: the mean ``metric`` per method setting (rows, in ``order``) and rate (columns), and
    each cell's text (the mean, or the share of its seeds that failed)."""
    values = sub.pivot_table(index=col, columns="learning_rate", values=metric, aggfunc="mean", dropna=False)
    failed = sub.pivot_table(index=col, columns="learning_rate", values="failed", aggfunc="mean")
    present = [m for m in order if m in failed.index]
    values = values.reindex(index=present, columns=failed.columns).astype(float)
    failed = failed.reindex(present).astype(float)
    labels = np.array(
        [[_stability_cell(v, d) for v, d in zip(vr, dr)] for vr, dr in zip(values.to_numpy(), failed.to_numpy())],
        dtype=object,
    )
    return values, labels


def _rate_grid(sub: pd.DataFrame) -> tuple[pd.DataFrame, float | None]:
    """One condition (``settings_key``: epochs, data, validation split) per panel, so that no cell averages
    runs trained differently: the condition covering the most learning rates (the rate grid; ties go to
    the longer training), and its number of epochs, or None when the panel has one condition."""
    if "settings_key" not in sub or sub["settings_key"].nunique() <= 1:
        return sub, None
    reach = sub.groupby("settings_key").agg(rates=("learning_rate", "nunique"), epochs=("epochs", "max"))
    chosen = sub[sub["settings_key"] == reach.sort_values(["rates", "epochs"]).index[-1]]
    return chosen, float(chosen["epochs"].max())


def _stability_cell(value: float, failed: float) -> str:
    """A stability-map cell's text: × where every seed failed, else the mean with the share that failed."""
    if failed >= 1:
        return "×"
    mean = "" if np.isnan(value) else f"{value:.3f}"
    return f"{mean}\n÷{failed:.2f}" if failed > 0 else mean


def steps_to_target_points(summaries: pd.DataFrame, column: str = "steps_to_98", title: str | None = None):
    """Optimizer steps until the target was first reached, per method setting and learning rate, with 95%
    intervals over the seeds that reached it; None when no run reached it."""
    data = summaries.dropna(subset=[column])
    if data.empty:
        return None  # nothing to draw: the report says so in words instead of an empty panel
    fig, ax = plt.subplots(figsize=(9, 3.8))
    hue, order = hue_and_order(data)
    data = data.assign(setting=data["optimizer"] + ", lr=" + data["learning_rate"].map(lambda v: f"{v:g}"))
    sns.pointplot(
        data=data,
        x="setting",
        y=column,
        hue=hue,
        hue_order=order,
        palette=label_colors(data),
        errorbar=t_interval,
        dodge=_dodge(order, 0.5),
        linestyle="none",
        ax=ax,
    )
    ax.set(
        xlabel="optimizer and learning rate",
        ylabel="optimizer steps to reach the target",
        title=title
        or f"{column.replace('_', ' ')} (mean, 95% t interval over the seeds that reached it; {seeds_note(data)})",
    )
    ax.legend(fontsize="small", bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.tick_params(axis="x", labelrotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    fig.tight_layout()
    return fig


def spike_traces(
    steps: pd.DataFrame,
    spike_steps,
    summaries: pd.DataFrame | None = None,
    title: str = "Loss around the injected bad batches",
):
    """Loss per step (median over seeds) of each method setting, one panel per optimizer, with the injected steps
    shaded. Where ``summaries`` say a run failed (diverged or collapsed), its last finite loss is marked × in its
    method's colour, at the top of the panel when it lies above it; the legend counts failures per setting."""
    hue, order = hue_and_order(steps)
    optimizers = sorted(steps["optimizer"].unique())
    palette = label_colors(steps)
    failed = set()
    if summaries is not None and len(summaries):
        bad = summaries["failure"].notna() if "failure" in summaries else summaries["diverged"].astype(bool)
        failed = set(summaries.loc[bad, "run_id"])
    fig, axes = plt.subplots(1, len(optimizers), figsize=(max(4.0 * len(optimizers), 8.0), 4.8), squeeze=False)
    for ax, opt in zip(axes[0], optimizers):
        sub = steps[steps["optimizer"] == opt]
        finite = sub[np.isfinite(sub["loss"])]
        median = finite.groupby([hue, "step"])["loss"].median().reset_index()
        for label in order:
            line = median[median[hue] == label]
            if len(line):
                ax.plot(line["step"], line["loss"], color=palette[label], lw=1)
        ax.axvspan(min(spike_steps) - 0.5, max(spike_steps) + 0.5, color=FAILED_COLOR, alpha=0.12)
        ax.set_yscale("log")
        top = float(median["loss"].quantile(0.999)) * 3 if len(median) else 10.0
        ax.set_ylim(top=top)
        for run_id in sorted(set(sub["run_id"]) & failed):
            run = finite[finite["run_id"] == run_id].sort_values("step")
            if len(run):
                last = run.iloc[-1]
                ax.plot(last["step"], min(float(last["loss"]), top / 1.5), "x", color=FAILED_COLOR, ms=9, mew=2)
        lr = sub["learning_rate"].iloc[0]
        ax.set(xlabel="optimizer step", title=f"{opt}, lr={lr:g}")
    axes[0][0].set_ylabel("training loss of the batch (log)")
    counts = steps.drop_duplicates("run_id")
    handles = []
    for label in order:
        runs = counts[counts[hue] == label]["run_id"]
        k = len(set(runs) & failed)
        handles.append(plt.Line2D([], [], color=palette[label], lw=1.5, label=f"{label}: {k} of {len(runs)} failed"))
    handles.append(plt.Line2D([], [], color=FAILED_COLOR, marker="x", lw=0, label="a failed run's last finite loss"))
    handles.append(plt.Rectangle((0, 0), 1, 1, color=FAILED_COLOR, alpha=0.12, label="injected bad batches"))
    fig.legend(handles=handles, fontsize=9, loc="lower center", ncol=2, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06 * (len(handles) + 1) / 2, 1, 1))
    return fig
