"""Figures of a single run and of a whole profile. Every figure has a title and labelled axes."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from PIL import Image  # matplotlib's own dependency

from clipstudy.analysis import outcomes
from clipstudy.analysis.stats import paired_effect
from clipstudy.clipping import METHODS
from clipstudy.fileio import atomic_target
from clipstudy.palette import FAILED_COLOR, METHOD_COLORS, SPARE_COLORS

#: Tables and figures list methods in the order they are registered.
METHOD_ORDER = list(METHODS)


#: Intervals (and p-values) are drawn only from this many seeds up, as the protocol says; below it the point or
#: line stands alone (with two seeds t = 12.7 and an interval runs from below 0 to above 1).
MIN_INTERVAL_N = 5


def t_interval(values) -> tuple[float, float]:
    """The two-sided 95% Student-t interval of the mean of ``values`` (the one the claims use); with
    fewer than ``MIN_INTERVAL_N`` values, or none that differ, no interval is drawn."""
    e = paired_effect(values)
    if e.n < MIN_INTERVAL_N or math.isnan(e.low):
        return (e.mean, e.mean)
    return (e.low, e.high)


def _dodge(order, width: float):
    """Seaborn's dodge for ``order``'s hue levels (it divides by their number less one: one level, no dodge)."""
    return width if len(order) > 1 else False


def seeds_note(frame: pd.DataFrame) -> str:
    """``n = k seeds`` (or a range), and a warning when that is too few for an interval."""
    n = (
        frame.groupby([c for c in ("label", "optimizer", "learning_rate") if c in frame])["seed"].nunique()
        if "seed" in frame
        else pd.Series([1])
    )
    low, high = int(n.min()), int(n.max())
    text = f"n = {low} seed{'s' if high > 1 else ''}" if low == high else f"n = {low}–{high} seeds"
    return text + ("; one seed: no interval" if low < 2 else "")


def method_order(present) -> list[str]:
    present = list(dict.fromkeys(present))
    return [m for m in METHOD_ORDER if m in present] + sorted(m for m in present if m not in METHOD_ORDER)


def hue_and_order(df: pd.DataFrame):
    """Colour by method setting (``label``, e.g. ``global_norm (threshold=10)``) when present, else by method."""
    if "label" not in df:
        return "method", method_order(df["method"])
    pairs = df[["method", "label"]].drop_duplicates()
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    ordered = sorted(pairs.itertuples(index=False), key=lambda r: (rank.get(r.method, len(rank)), r.label))
    return "label", [r.label for r in ordered]


def _shade(color: str, amount: float) -> tuple[float, float, float]:
    """``color`` mixed towards white (amount > 0) or black (amount < 0)."""
    from matplotlib.colors import to_rgb

    rgb = np.array(to_rgb(color))
    target = np.ones(3) if amount > 0 else np.zeros(3)
    return tuple(rgb + (target - rgb) * abs(amount))


def label_colors(df: pd.DataFrame) -> dict[str, tuple]:
    """The colour of each of ``df``'s method settings (``hue_and_order``'s levels): its method's colour, and
    for a method with several settings, shades of it from dark to light in the settings' order."""
    hue, order = hue_and_order(df)
    method_of = dict(df[[hue, "method"]].drop_duplicates().itertuples(index=False)) if hue == "label" else {}
    colors: dict[str, tuple] = {}
    spare = iter(SPARE_COLORS * 4)
    base = {m: METHOD_COLORS.get(m) or next(spare) for m in dict.fromkeys(method_of.get(lv, lv) for lv in order)}
    for method, color in base.items():
        levels = [lv for lv in order if method_of.get(lv, lv) == method]
        amounts = [0.0] if len(levels) == 1 else np.linspace(-0.35, 0.45, len(levels))
        for level, amount in zip(levels, amounts, strict=True):
            colors[level] = _shade(color, float(amount)) if amount else _shade(color, 0.0)
    return colors


def save_figure(fig, directory: str | Path, name: str) -> list[Path]:
    """Save ``fig`` as PNG (``compact_png``) and SVG under ``directory`` (each to a temporary name, then renamed)."""
    written = []
    for ext in ("png", "svg"):
        target = Path(directory) / f"{name}.{ext}"
        with atomic_target(target) as tmp:
            fig.savefig(tmp, format=ext, dpi=120, bbox_inches="tight")
            if ext == "png":
                compact_png(tmp)
        written.append(target)
    return written


def compact_png(path: Path) -> None:
    """Re-encode a figure's PNG with a palette of its 256 most used colours where that makes the file smaller
    (about a third of the size for the report's figures, which the page embeds and the bundle publishes; a
    plot's flat colours and their anti-aliased edges fit in 256 with no visible change)."""
    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    smaller = path.with_name(f"{path.name}.palette.png")
    palette.save(smaller, format="PNG", optimize=True)
    if smaller.stat().st_size < path.stat().st_size:
        smaller.replace(path)
    else:
        smaller.unlink()


def learning_curves(epochs: pd.DataFrame, title: str = "Learning curves"):
    """Train and test loss and accuracy against optimizer steps, for one run."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    for split, style in (("train", "--"), ("test", "-")):
        ax_loss.plot(epochs["step"], epochs[f"{split}_loss"], style, marker="o", label=split)
        ax_acc.plot(epochs["step"], epochs[f"{split}_accuracy"], style, marker="o", label=split)
    ax_loss.set(xlabel="optimizer step", ylabel="cross-entropy loss", title="Loss")
    ax_acc.set(xlabel="optimizer step", ylabel="accuracy", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def training_length(frame: pd.DataFrame) -> pd.Series:
    """Each row's number of epochs, read from its run's settings (``settings_key``); NaN where unknown."""
    if "epochs" in frame:
        return frame["epochs"]
    if "settings_key" not in frame:
        return pd.Series(np.nan, index=frame.index)
    keys = frame["settings_key"]
    epochs = {k: json.loads(k).get("epochs", np.nan) if isinstance(k, str) else np.nan for k in keys.unique()}
    return keys.map(epochs)  # each distinct key parsed once (a step table repeats a run's key on every row)


def _condition(frame: pd.DataFrame, parts: list[str]) -> pd.Series:
    """A panel's condition in words: the given columns, plus the training length when runs of several lengths
    are present (they are never drawn in one panel)."""
    text = pd.Series("", index=frame.index)
    for i, col in enumerate(parts):
        words = {v: f"{v:g}" if isinstance(v, float) else str(v) for v in frame[col].unique()}
        value = frame[col].map(words)
        text = text + ("" if i == 0 else ", ") + ("lr=" if col == "learning_rate" else "") + value
    length = training_length(frame)
    if length.nunique() > 1:
        text = text + ", " + length.map(lambda e: f"{int(e)} epochs" if e == e else "? epochs")
    return text


def _sorted_conditions(frame: pd.DataFrame, column: str, keys: list[str]) -> list[str]:
    ordered = frame.assign(_len=training_length(frame)).sort_values([*keys, "_len"])
    return list(dict.fromkeys(ordered[column]))


def curves_with_ci(
    epochs: pd.DataFrame,
    metric: str = "test_accuracy",
    title: str | None = None,
    bounds: tuple[float, float] | None = None,
):
    """Mean ``metric`` per method against steps, one panel per condition (optimizer, learning rate and, where
    runs of several lengths exist, epochs), in that order, each with its own step axis, with the 95% Student-t
    interval over seeds where there are at least three, cut at ``bounds`` (a metric's range: an accuracy's or an
    AP's [0, 1], which seeds that both collapse and train overrun)."""

    def interval(values):
        low, high = t_interval(values)
        return (low, high) if bounds is None else (max(low, bounds[0]), min(high, bounds[1]))

    data = epochs.copy()
    data["setting"] = _condition(data, ["optimizer", "learning_rate"])
    hue, order = hue_and_order(data)
    g = sns.relplot(
        data=data,
        x="step",
        y=metric,
        hue=hue,
        hue_order=order,
        palette=label_colors(data),
        col="setting",
        col_order=_sorted_conditions(data, "setting", ["optimizer", "learning_rate"]),
        col_wrap=min(3, data["setting"].nunique()),
        kind="line",
        errorbar=interval,
        marker="o",
        height=3.0,
        aspect=1.3,
        facet_kws={"sharey": False, "sharex": False},
    )
    g.set_titles("{col_name}")
    g.set_axis_labels("optimizer step", metric.replace("_", " "))
    g.figure.suptitle(
        f"{title or metric.replace('_', ' ') + ' over training'} "
        f"(mean, 95% t interval from 3 seeds; {seeds_note(epochs)})",
        y=1.02,
    )
    return g.figure


def training_loss_from_the_first_step(steps: pd.DataFrame, title: str | None = None):
    """The training loss of every recorded step from the first, median over seeds per method setting, one
    panel per condition (optimizer, learning rate and, where runs of several lengths exist, epochs), on log
    axes: the first few hundred steps, which evaluations start too late to see, take half of each panel.
    Past step 50 each run's loss is a centred mean over 15 recorded steps. Steps that were not finite
    (diverged runs) are left out; the number of seeds is in the title."""
    data = steps[np.isfinite(steps["loss"])].sort_values(["run_id", "step"]).copy()
    # Past step 50 (where the bundle thins the steps), a centred mean over 15 recorded steps of the run: one
    # batch's loss is noisy enough to hide which line is on top; the first 50 steps are drawn as they were.
    smooth = data.groupby("run_id")["loss"].transform(lambda x: x.rolling(15, center=True, min_periods=1).mean())
    data["loss"] = data["loss"].where(data["step"] <= 50, smooth)
    data["setting"] = _condition(data, ["optimizer", "learning_rate"])
    hue, order = hue_and_order(data)
    # The median over seeds at each step, taken here in one groupby (seaborn's own estimator takes one per step
    # and line: the same numbers, many times slower on a bundle's hundreds of runs).
    medians = data.groupby(["setting", hue, "step"], sort=False)["loss"].median().reset_index()
    g = sns.relplot(
        data=medians,
        x="step",
        y="loss",
        hue=hue,
        hue_order=order,
        palette=label_colors(data),
        col="setting",
        col_order=_sorted_conditions(data, "setting", ["optimizer", "learning_rate"]),
        col_wrap=min(3, data["setting"].nunique()),
        kind="line",
        estimator=None,
        errorbar=None,
        linewidth=1.0,
        height=3.0,
        aspect=1.3,
        facet_kws={"sharey": False, "sharex": False},
    )
    g.set(xscale="log", yscale="log")
    g.set_titles("{col_name}")
    g.set_axis_labels("optimizer step (log)", "training loss (log)")
    g.figure.suptitle(
        f"{title or 'Training loss from the first step'} (median over seeds; {seeds_note(steps)})", y=1.02
    )
    return g.figure


def final_metric_points(
    summaries: pd.DataFrame,
    metric: str = "final_test_accuracy",
    metric_range: tuple[float, float] | None = None,
    bounds: tuple[float, float] | None = None,
):
    """Final ``metric`` per method at each learning rate, one panel per optimizer (and training length, where
    runs of several lengths exist): every run as a small dot (a failed run as a red ×), the mean over seeds as a
    large marker joined across rates, and its 95% interval where there are at least three seeds. With
    ``metric_range``, values beyond it are drawn at its edge (a diverged run's r2 of -1e37 would flatten the rest)
    and so is an interval (seeds that both collapse and train give one wider than the metric's range); ``bounds``
    cuts the intervals alone (an accuracy's [0, 1]) and leaves the axes to the data."""
    hue, order = hue_and_order(summaries)
    if metric_range is not None:
        summaries = summaries.assign(**{metric: summaries[metric].clip(*metric_range)})
    failed = summaries["failure"].notna() if "failure" in summaries else pd.Series(False, index=summaries.index)
    summaries = summaries.assign(condition=_condition(summaries, ["optimizer"]), _failed=failed)
    conditions = _sorted_conditions(summaries, "condition", ["optimizer"])
    cols = min(3, len(conditions))
    rows = math.ceil(len(conditions) / cols)
    width = 10.0 if cols == 1 else 4.4 * cols
    fig, axes = plt.subplots(rows, cols, figsize=(width, 3.6 * rows + 0.9), squeeze=False)
    colors = label_colors(summaries)
    for ax, condition in zip(axes.flat, conditions):
        panel = summaries[summaries["condition"] == condition]
        _points_panel(ax, panel, metric, hue, order, colors, metric_range, bounds or metric_range)
        ax.set_title(condition, fontsize=10)
    for ax in list(axes.flat)[len(conditions) :]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], color=colors[m], marker="o", lw=2, label=m) for m in order] + [
        plt.Line2D([], [], color=FAILED_COLOR, marker="x", lw=0, label="a failed run (diverged or stalled)"),
        plt.Line2D([], [], color="gray", marker="o", ms=3.5, lw=0, alpha=0.6, label="one run"),
    ]
    ncol = min(2 if max(len(m) for m in order) > 45 else 4, len(handles))  # long labels: fewer, wider columns
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=9, frameon=False)
    legend_rows = math.ceil(len(handles) / ncol)
    fig.suptitle(
        f"{metric.replace('_', ' ')} per method: every run, the mean over seeds and its 95% t interval from 3 "
        f"seeds ({seeds_note(summaries)}; failed runs count as what they achieved)",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.07 * legend_rows / rows, 1, 0.95))
    return fig


def _points_panel(ax, sub: pd.DataFrame, metric: str, hue: str, order: list, colors: dict, metric_range, bounds):
    """One panel of ``final_metric_points``: the rates as categories, the method settings dodged within each."""
    rates = sorted(sub["learning_rate"].unique())
    present = [m for m in order if m in set(sub[hue])]
    step = 0.6 / max(len(present), 1)
    for i, method in enumerate(present):
        offset = (i - (len(present) - 1) / 2) * step
        runs = sub[sub[hue] == method]
        xs, means = [], []
        for j, rate in enumerate(rates):
            cell = runs[runs["learning_rate"] == rate]
            values = cell[metric].dropna().to_numpy(float)
            if not len(values):
                continue
            x = j + offset
            spread = (np.arange(len(values)) - (len(values) - 1) / 2) * min(step / 6, 0.03)
            ok = ~cell.loc[cell[metric].notna(), "_failed"].to_numpy(bool)
            ax.scatter((x + spread)[ok], values[ok], s=12, color=colors[method], alpha=0.55, lw=0, zorder=2)
            ax.scatter((x + spread)[~ok], values[~ok], s=28, color=FAILED_COLOR, marker="x", lw=1.2, zorder=4)
            low, high = t_interval(values)
            if bounds is not None:
                low, high = max(low, bounds[0]), min(high, bounds[1])
            if high > low:
                ax.plot([x, x], [low, high], color=colors[method], lw=2.2, zorder=3, gid="interval")
            xs.append(x)
            means.append(values.mean())
        ax.plot(xs, means, color=colors[method], marker="o", ms=7, lw=2, zorder=3, gid="mean")
    ax.set_xticks(range(len(rates)), [f"{r:g}" for r in rates])
    ax.set_xlim(-0.6, len(rates) - 0.4)
    ax.set_xlabel("learning rate")
    ax.set_ylabel(metric.replace("_", " "))
    if metric_range is not None:
        pad = 0.05 * (metric_range[1] - metric_range[0])
        ax.set_ylim(metric_range[0] - pad, metric_range[1] + pad)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


#: Methods whose ``threshold`` is a global norm, and so belongs on a global-norm axis. The others' is a bound
#: per element (value), per tensor (norm, adagc) or a ratio to the weights (agc): not drawn there.
GLOBAL_NORM_THRESHOLDS = ("global_norm", "autoclip", "zclip", "quantile")


def norms_by_method(steps: pd.DataFrame, title: str):
    """Per method, the median over seeds of the global norm before and after clipping, and the threshold in
    force where it is a global norm (``GLOBAL_NORM_THRESHOLDS``)."""
    col, order = hue_and_order(steps)
    steps = steps.assign(threshold=steps["threshold"].where(steps["method"].isin(GLOBAL_NORM_THRESHOLDS)))
    long = steps.melt(
        id_vars=[col, "step"],
        value_vars=["norm_before", "norm_after", "threshold"],
        var_name="series",
        value_name="value",
    ).dropna()
    # the median over seeds at each step in one groupby (seaborn's estimator takes one per step and line)
    medians = long.groupby([col, "series", "step"], sort=False)["value"].median().reset_index()
    g = sns.relplot(
        data=medians,
        x="step",
        y="value",
        hue="series",
        hue_order=list(pd.unique(long["series"])),
        col=col,
        col_order=order,
        col_wrap=min(4, len(order)),
        kind="line",
        estimator=None,
        errorbar=None,
        height=2.6,
        aspect=1.3,
        lw=0.8,
    )
    g.set(yscale="log")
    g.set_axis_labels("optimizer step", "global gradient norm (log)")
    g.figure.suptitle(title, y=1.02)
    return g.figure


def clip_fraction_bars(summaries: pd.DataFrame):
    """Mean share clipped per step of each method setting, one panel per optimizer (horizontal bars in the
    method's colour, so that long labels stay readable); the share at which clipping becomes normalisation
    (``NORMALISES``, 0.9) is marked."""
    col, order = hue_and_order(summaries)
    colors = label_colors(summaries)
    optimizers = [o for o in ("sgd", "momentum", "rmsprop", "adam") if o in set(summaries["optimizer"])]
    optimizers += sorted(set(summaries["optimizer"]) - set(optimizers))
    fig, axes = plt.subplots(
        1, len(optimizers), figsize=(3.2 * len(optimizers) + 3.0, 0.3 * len(order) + 1.6), sharey=True, squeeze=False
    )
    means = summaries.groupby(["optimizer", col])["clip_fraction"].mean()
    for ax, opt in zip(axes[0], optimizers, strict=True):
        values = [means.get((opt, level), np.nan) for level in order]
        ax.barh(range(len(order)), np.nan_to_num(values), color=[colors[level] for level in order])
        ax.axvline(NORMALISES, color="black", lw=0.8, ls=":")
        ax.set(xlim=(0, 1.05), title=opt, xlabel="mean share clipped")
        ax.set_yticks(range(len(order)), order)
    axes[0][0].invert_yaxis()  # shared: once for all panels, so the list reads top-down in the study's order
    axes[0][0].set_ylabel("clipping method (setting)")
    fig.suptitle(
        "How often each method clipped (mean over learning rates and seeds; value: of elements, agc: of units; "
        f"dotted: {NORMALISES:.0%}, past which clipping is normalisation)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


#: A method that clips more than this share of steps normalises the gradient.
NORMALISES = outcomes.NORMALISES
#: The adding problem's reference scores (test MSE): the constant predictor (1/6), a model that finds one of the
#: two values (1/12), solved (0.01).
ADDING_LINES = ((1 / 6, "constant predictor 0.167"), (1 / 12, "finds one value 0.083"), (0.01, "solved 0.01"))


def recurrent_outcomes(summaries: pd.DataFrame, title: str | None = None):
    """The adding problem's final test MSE, one panel per method setting (so every point sits at the rate it ran
    at), rates on a log axis: every run that did not diverge as a dot (a triangle at the top edge when it ended
    above MSE 1, the axis's top), the median over them joined across rates,
    every diverged run as a red × above the axis's top (its MSE, up to 1e37, is not drawn), and the three reference
    lines. No interval: the protocol draws none from fewer than 5 seeds, and a median needs none."""
    s = outcomes.add_outcomes(summaries)
    hue, order = hue_and_order(s)
    colors = label_colors(s)
    cols = min(3, len(order))
    rows = math.ceil(len(order) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.5 * rows + 0.8), squeeze=False, sharey=True)
    for ax, level in zip(axes.flat, order):
        _recurrent_panel(ax, s[s[hue] == level], level, colors[level])
    for y, text in ADDING_LINES:
        axes.flat[0].text(axes.flat[0].get_xlim()[0], y * 1.08, f" {text}", fontsize=7.5, va="bottom")
    for ax in list(axes.flat)[len(order) :]:
        ax.set_visible(False)
    fig.suptitle(
        title
        or f"Adding problem: final test MSE per run (median over runs that did not diverge; ▲: above MSE 1, drawn at "
        f"the top; red ×: diverged runs, their count beside; {seeds_note(s)})",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def _recurrent_panel(ax, sub: pd.DataFrame, level: str, color, top: float = 1.0) -> None:
    """One method setting's panel of ``recurrent_outcomes``."""
    kept = sub[sub["outcome"] != "diverged"]
    inside, above = kept[kept["final_test_mse"] <= top], kept[kept["final_test_mse"] > top]
    ax.scatter(inside["learning_rate"], inside["final_test_mse"], s=16, color=color, alpha=0.7, lw=0, zorder=3)
    if len(above):  # did not diverge, but ended above the axis: a triangle at its top
        ax.scatter(above["learning_rate"], [top] * len(above), marker="^", s=30, color=color, zorder=3, clip_on=False)
    med = kept.groupby("learning_rate")["final_test_mse"].median()
    ax.plot(med.index, med.clip(upper=top).to_numpy(), color=color, lw=1.8, marker="o", ms=5, zorder=3)
    counts = sub[sub["outcome"] == "diverged"].groupby("learning_rate").size()
    ax.scatter(counts.index, [top * 1.4] * len(counts), marker="x", s=40, color=FAILED_COLOR, lw=1.5, zorder=4,
               clip_on=False)  # fmt: skip
    for rate, k in counts.items():
        ax.annotate(f"{k}", (rate, top * 1.4), textcoords="offset points", xytext=(5, -3), fontsize=8,
                    color=FAILED_COLOR, annotation_clip=False)  # fmt: skip
    for y, _text in ADDING_LINES:
        ax.axhline(y, color="black", lw=0.7, ls="--" if y > 0.05 else ":")
    ax.set(xscale="log", yscale="log", ylim=(1e-3, top))
    ax.set_title(textwrap.fill(level, 42), fontsize=9, pad=16)
    rates = sorted(sub["learning_rate"].unique())
    ax.set_xticks(rates, [f"{r:g}" for r in rates])
    ax.minorticks_off()
    ax.set_xlabel("learning rate (runs at the rates they ran at)")
    ax.set_ylabel("final test MSE (log)")
