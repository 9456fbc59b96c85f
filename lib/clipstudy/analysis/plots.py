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
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory
from PIL import Image  # matplotlib's own dependency

from clipstudy.analysis import outcomes
from clipstudy.analysis.runplots import norm_trace, run_curves  # noqa: F401 - one run's figures
from clipstudy.analysis.stats import paired_effect
from clipstudy.clipping import METHODS
from clipstudy.fileio import atomic_target
from clipstudy.tasks.detection.figures import draw_detections  # noqa: F401 - the report draws its samples

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


#: One colour per clipping method in every figure of the report (several settings of one method: shades of it).
#: Red is no method's: it marks a failed run (``FAILED_COLOR``) and the injected bad batches.
METHOD_COLORS = {
    "none": "#7f7f7f",
    "value": "#8c564b",
    "norm": "#e377c2",
    "global_norm": "#1f77b4",
    "agc": "#bcbd22",
    "autoclip": "#ff7f0e",
    "zclip": "#2ca02c",
    "adagc": "#9467bd",
    "quantile": "#17becf",
}
FAILED_COLOR = "#d62728"
_SPARE_COLORS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")  # methods added later


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
    spare = iter(_SPARE_COLORS * 4)
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
    return frame["settings_key"].map(lambda k: json.loads(k).get("epochs", np.nan) if isinstance(k, str) else np.nan)


def _condition(frame: pd.DataFrame, parts: list[str]) -> pd.Series:
    """A panel's condition in words: the given columns, plus the training length when runs of several lengths
    are present (they are never drawn in one panel)."""
    text = pd.Series("", index=frame.index)
    for i, col in enumerate(parts):
        value = frame[col].map(lambda v: f"{v:g}" if isinstance(v, float) else str(v))
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
    g = sns.relplot(
        data=data,
        x="step",
        y="loss",
        hue=hue,
        hue_order=order,
        palette=label_colors(data),
        col="setting",
        col_order=_sorted_conditions(data, "setting", ["optimizer", "learning_rate"]),
        col_wrap=min(3, data["setting"].nunique()),
        kind="line",
        estimator="median",
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
    g = sns.relplot(
        data=long,
        x="step",
        y="value",
        hue="series",
        col=col,
        col_order=order,
        col_wrap=min(4, len(order)),
        kind="line",
        estimator="median",
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
    top = 1.0
    for ax, level in zip(axes.flat, order):
        sub = s[s[hue] == level]
        kept = sub[sub["outcome"] != "diverged"]
        inside, above = kept[kept["final_test_mse"] <= top], kept[kept["final_test_mse"] > top]
        ax.scatter(inside["learning_rate"], inside["final_test_mse"], s=16, color=colors[level], alpha=0.7, lw=0,
                   zorder=3)  # fmt: skip
        if len(above):  # did not diverge, but ended above the axis: a triangle at its top
            ax.scatter(above["learning_rate"], [top] * len(above), marker="^", s=30, color=colors[level], zorder=3,
                       clip_on=False)  # fmt: skip
        med = kept.groupby("learning_rate")["final_test_mse"].median()
        ax.plot(med.index, med.clip(upper=top).to_numpy(), color=colors[level], lw=1.8, marker="o", ms=5, zorder=3)
        gone = sub[sub["outcome"] == "diverged"]
        counts = gone.groupby("learning_rate").size()
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


def digit_grid(x: np.ndarray, y: np.ndarray, per_class: int = 8):
    """``per_class`` sample images of each digit, one row per class."""
    fig, axes = plt.subplots(10, per_class, figsize=(per_class * 0.8, 8.4))
    for digit in range(10):
        idx = np.flatnonzero(y == digit)[:per_class]
        for k, ax in enumerate(axes[digit]):
            ax.imshow(x[idx[k]], cmap="gray_r")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[digit][0].set_ylabel(str(digit), rotation=0, labelpad=10, fontsize=12)
    fig.suptitle("First training images of each class")
    return fig


def class_balance(y_train: np.ndarray, y_test: np.ndarray):
    counts = pd.DataFrame(
        {
            "digit": np.r_[np.arange(10), np.arange(10)],
            "images": np.r_[np.bincount(y_train, minlength=10), np.bincount(y_test, minlength=10)],
            "split": ["train"] * 10 + ["test"] * 10,
        }
    )
    fig, ax = plt.subplots(figsize=(8, 3.2))
    sns.barplot(data=counts, x="digit", y="images", hue="split", ax=ax)
    ax.set(xlabel="digit class", ylabel="number of images", title="Class balance of MNIST")
    fig.tight_layout()
    return fig


def step_weights(steps: pd.DataFrame) -> pd.Series:
    """How many optimizer steps each recorded step stands for: a published bundle thins long step tables (every
    one of the first steps kept, then about every k-th), so a kept row after the first stands for the steps since
    the run's previous kept row. A histogram weighted so estimates the distribution over every step."""
    ordered = steps.sort_values(["run_id", "step"])
    gaps = ordered.groupby("run_id")["step"].diff().fillna(1.0).clip(lower=1.0)
    return gaps.reindex(steps.index)


def norm_distribution(
    steps: pd.DataFrame, thresholds=(0.1, 10.0, 35.0), title: str | None = None, outcome: pd.Series | None = None
):
    """Histograms of the global gradient norm over steps (weighted by ``step_weights``: every step counted once),
    one panel per learning rate, runs that learned apart from those that collapsed or diverged (``outcome``:
    each run's kind, by ``run_id``), both axes logarithmic so that the tail shows, with the thresholds real
    codebases use and the share of the learned runs' steps each would clip."""
    data = steps[np.isfinite(steps["norm_before"]) & (steps["norm_before"] > 0)].copy()
    data["weight"] = step_weights(data)
    kind = data["run_id"].map(outcome) if outcome is not None else pd.Series("learned", index=data.index)
    data["group"] = np.where(kind == "learned", "runs that learned", "runs that stalled or diverged")
    rates = sorted(data["learning_rate"].unique())
    fig, axes = plt.subplots(1, len(rates), figsize=(5.2 * len(rates) + 0.6, 3.9), squeeze=False, sharey=True)
    bins = np.logspace(np.log10(data["norm_before"].min() / 1.5), np.log10(data["norm_before"].max() * 1.5), 70)
    for ax, rate in zip(axes[0], rates, strict=True):
        panel = data[data["learning_rate"] == rate]
        for group, color in (
            ("runs that learned", METHOD_COLORS["none"]),
            ("runs that stalled or diverged", FAILED_COLOR),
        ):
            sub = panel[panel["group"] == group]
            if len(sub):
                runs = sub["run_id"].nunique()
                ax.hist(sub["norm_before"], bins=bins, weights=sub["weight"], histtype="step", lw=1.6, color=color,
                        label=f"{group} ({runs})")  # fmt: skip
        learned = panel[panel["group"] == "runs that learned"]
        for k, t in enumerate(thresholds):
            share = (
                float(learned.loc[learned["norm_before"] > t, "weight"].sum() / learned["weight"].sum())
                if len(learned)
                else math.nan
            )
            ax.axvline(t, color=("#1f77b4", "#2ca02c", "#9467bd")[k % 3], ls="--", lw=1,
                       label=f"{t:g}: clips {100 * share:.3g}% of the learned runs' steps")  # fmt: skip
        ax.set(xscale="log", yscale="log", title=f"Adam lr={rate:g} (max norm {panel['norm_before'].max():,.0f})",
               xlabel="global gradient norm before clipping (log)")  # fmt: skip
        ax.legend(fontsize=7.5, loc="upper right")
    axes[0][0].set_ylabel("optimizer steps (log)")
    fig.suptitle(title or "Gradient norms of the unclipped runs against common thresholds", fontsize=11)
    fig.tight_layout()
    return fig


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


def overhead_bars(ratios: pd.DataFrame, targets: dict | None = None, title: str | None = None):
    """Per-step time of each method relative to ``none`` (1.0 = no overhead), bars in the methods' colours, the
    spread over the bench's rounds (min to max of each round's ratio) where it was recorded, the targets drawn."""
    fig, ax = plt.subplots(figsize=(8.5, 3.4))
    order = [m for m in METHOD_ORDER if m in set(ratios["method"])]
    rows = ratios.set_index("method").loc[order]
    ax.bar(range(len(order)), rows["ratio"], color=[METHOD_COLORS.get(m, "#555555") for m in order])
    if {"low", "high"} <= set(rows.columns) and rows["low"].notna().any():
        spread = np.vstack([rows["ratio"] - rows["low"], rows["high"] - rows["ratio"]]).clip(min=0)
        ax.errorbar(range(len(order)), rows["ratio"], yerr=np.nan_to_num(spread), fmt="none", ecolor="black",
                    capsize=4, lw=1, gid="spread")  # fmt: skip
    ax.axhline(1.0, color="k", lw=0.8)
    for method, target in (targets or {}).items():
        if method in order:
            i = order.index(method)
            ax.plot([i - 0.4, i + 0.4], [target, target], color="black", lw=2, ls="--")
    rounds = int(rows["rounds"].max()) if "rounds" in rows and rows["rounds"].notna().any() else 0
    ax.set_xticks(range(len(order)), order)
    ax.set(
        xlabel="clipping method",
        ylabel="median step time / none",
        title=title or "Cost of clipping per optimizer step (dashed: target)",
    )
    if rounds:
        ax.text(0.99, 0.97, f"whiskers: min to max over {rounds} interleaved rounds", transform=ax.transAxes,
                ha="right", va="top", fontsize=8)  # fmt: skip
    for i, value in enumerate(rows["ratio"]):  # the bars start at 0; their values are written on them
        ax.text(i, value / 2, f"{value:.2f}", ha="center", va="center", fontsize=10, color="white")
    top = float(np.nanmax([rows["ratio"].max(), rows["high"].max() if "high" in rows else np.nan]))
    ax.set_ylim(0, max(1.2, top * 1.12))
    fig.tight_layout()
    return fig


STAGE_STYLE = {
    "stage 1 (exploratory)": ("#4c72b0", "o"),
    "stage 2 (confirmatory)": ("#dd8452", "s"),
    "stage 3 (confirmatory)": ("#55a868", "D"),
}


#: The headline's panels: metrics on one scale share a panel (and so its x axis), with the side that favours
#: clipping (+1: right, -1: left).
FOREST_FAMILIES = (
    ("accuracy", "Δ test accuracy or its area under the curve (clipped − reference)", +1),
    ("AP", "Δ COCO AP or AP50 (clipped − unclipped)", +1),
    ("failure rate", "Δ failure, divergence or collapse rate (clipped − unclipped)", -1),
)


def forest_family(metric: str) -> str:
    """The panel a headline row's metric belongs to."""
    failures = ("failure", "divergence", "collapse")
    return "failure rate" if any(w in metric for w in failures) else "AP" if "AP" in metric else "accuracy"


def forest(rows: pd.DataFrame, title: str = "Every claim's primary effect, with the verdict in force"):
    """The headline figure: one row per primary effect (``claims.headline``), grouped in one panel per metric
    scale (one x axis each, 0 at the same place for every row of a panel), the side that favours clipping marked,
    the 95% interval and p only from ``MIN_INTERVAL_N`` seeds, the margin of no meaningful effect shaded, and at
    the right the claim's verdict in force (``verdict``) with n and p."""
    rows = rows.assign(family=[forest_family(m) for m in rows["metric"]]) if len(rows) else rows
    families = [f for f in FOREST_FAMILIES if len(rows) and (rows["family"] == f[0]).any()] or [FOREST_FAMILIES[0]]
    heights = [max(int((rows["family"] == f[0]).sum()) if len(rows) else 1, 1) for f in families]
    fig, axes = plt.subplots(
        len(families), 1, figsize=(11, 0.42 * sum(heights) + 1.15 * len(families) + 0.6), squeeze=False,
        gridspec_kw={"height_ratios": [h + 1.6 for h in heights]},
    )  # fmt: skip
    for ax, (family, label, favours) in zip(axes[:, 0], families, strict=True):
        sub = rows[rows["family"] == family] if len(rows) else rows
        _forest_panel(ax, sub, label, favours)
    shown = set(rows["stage"]) if len(rows) and "stage" in rows else set(STAGE_STYLE)
    handles = [
        plt.Line2D([], [], color=c, marker=m, lw=2, label=stage)
        for stage, (c, m) in STAGE_STYLE.items()
        if stage in shown
    ] + [plt.Rectangle((0, 0), 1, 1, color="#cccccc", label="margin of no meaningful effect")]
    fig.legend(handles=handles, loc="upper center", ncol=3, fontsize=9, frameon=False, bbox_to_anchor=(0.5, 0.995))
    fig.suptitle(title, y=1.03, fontsize=12)
    fig.tight_layout(h_pad=1.2, rect=(0, 0, 0.60, 0.96))
    return fig


def _forest_panel(ax, sub: pd.DataFrame, label: str, favours: int) -> None:
    values = [0.0]
    for r in sub.itertuples():
        values += [r.effect, r.margin, -r.margin]
        if r.n >= MIN_INTERVAL_N:
            values += [r.low, r.high]
    finite = [v for v in values if np.isfinite(v)]
    lo, hi = min(finite), max(finite)
    pad = 0.12 * (hi - lo) if hi > lo else 0.01
    ax.set_xlim(lo - pad, hi + pad)
    ax.axvline(0, color="black", lw=0.8)
    for y, r in enumerate(sub.itertuples()):
        color, marker = STAGE_STYLE.get(r.stage, ("black", "o"))
        if np.isfinite(r.margin):
            ax.fill_betweenx([y - 0.4, y + 0.4], -r.margin, r.margin, color="#cccccc", alpha=0.6, lw=0)
        has_interval = r.n >= MIN_INTERVAL_N and np.isfinite(r.low) and np.isfinite(r.high)
        if np.isfinite(r.effect):
            if has_interval:
                ax.plot([r.low, r.high], [y, y], color=color, lw=2.2, gid="interval")
            ax.plot([r.effect], [y], marker=marker, color=color, ms=7, gid="effect")
        else:
            ax.text(0, y, " no paired runs yet", fontsize=9, color=color, style="italic", va="center")
        if r.n >= MIN_INTERVAL_N and np.isfinite(r.p):
            stat = f"n={r.n}, p={r.p:.2g}"
        else:
            stat = f"n={r.n}" + (f", no p or interval (n < {MIN_INTERVAL_N})" if r.n else "")
        answer = f" · {r.answer}" if isinstance(getattr(r, "answer", None), str) and r.answer else ""
        # in the figure's right margin (tight_layout leaves it free), at the row's height
        where = blended_transform_factory(ax.figure.transFigure, ax.transData)
        ax.figure.text(0.615, y, f"{r.verdict}{answer}  ({stat})", transform=where, fontsize=8.5, va="center",
                       gid="verdict")  # fmt: skip
    ax.set_yticks(range(len(sub)), list(sub["row"]), fontsize=9)
    ax.set_ylim(len(sub) - 0.5, -0.5)
    ax.tick_params(axis="x", labelsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=7, steps=[1, 2, 2.5, 5, 10]))
    ax.set_xlabel(label, fontsize=9, labelpad=2)
    arrow = "favours clipping →" if favours > 0 else "← favours clipping"
    ax.text(1.0 if favours > 0 else 0.0, 1.02, arrow, transform=ax.transAxes, fontsize=9, color="#2b7a3d",
            ha="right" if favours > 0 else "left", va="bottom", gid="favours")  # fmt: skip
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
