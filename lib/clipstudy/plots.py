"""Figures of a single run and of a whole profile. Every figure has a title and labelled axes."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

METHOD_ORDER = ["none", "value", "norm", "global_norm", "agc", "autoclip", "zclip"]


def method_order(present) -> list[str]:
    present = list(dict.fromkeys(present))
    return [m for m in METHOD_ORDER if m in present] + sorted(m for m in present if m not in METHOD_ORDER)


def save_figure(fig, directory: str | Path, name: str) -> list[Path]:
    """Save ``fig`` as PNG and SVG under ``directory`` (each to a temporary name, then renamed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for ext in ("png", "svg"):
        target = directory / f"{name}.{ext}"
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=f".{ext}", dir=directory)
        os.close(fd)
        try:
            fig.savefig(tmp, format=ext, dpi=120, bbox_inches="tight")
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(target)
    return written


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


def norm_trace(steps: pd.DataFrame, title: str = "Gradient norm"):
    """Global gradient norm before and after clipping per step, with the threshold in force."""
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.plot(steps["step"], steps["norm_before"], lw=0.8, label="before clipping")
    ax.plot(steps["step"], steps["norm_after"], lw=0.8, label="after clipping")
    if steps["threshold"].notna().any():
        ax.plot(steps["step"], steps["threshold"], "k--", lw=1.0, label="threshold in force")
    clipped = steps[steps["clipped"] > 0]
    if len(clipped):
        ax.scatter(clipped["step"], clipped["norm_before"], s=8, color="C3", zorder=3, label="clipped step")
    ax.set_yscale("log")
    ax.set(xlabel="optimizer step", ylabel="global L2 norm of the gradient (log)", title=title)
    ax.legend(loc="upper right", fontsize="small")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def curves_with_ci(epochs: pd.DataFrame, metric: str = "test_accuracy", title: str | None = None):
    """Mean ``metric`` per method against steps, one panel per optimizer and learning rate,
    with a 95% confidence band over seeds."""
    data = epochs.copy()
    data["setting"] = data["optimizer"] + ", lr=" + data["learning_rate"].map(lambda v: f"{v:g}")
    order = method_order(data["method"])
    g = sns.relplot(data=data, x="step", y=metric, hue="method", hue_order=order, col="setting",
                    col_wrap=min(3, data["setting"].nunique()), kind="line", errorbar=("ci", 95),
                    marker="o", height=3.0, aspect=1.3, facet_kws={"sharey": False})
    g.set_axis_labels("optimizer step", metric.replace("_", " "))
    g.figure.suptitle(title or f"{metric.replace('_', ' ')} over training (mean, 95% CI over seeds)", y=1.02)
    return g.figure


def final_metric_points(summaries: pd.DataFrame, metric: str = "final_test_accuracy"):
    """Final ``metric`` per method at each learning rate, per optimizer, with 95% intervals over seeds."""
    order = method_order(summaries["method"])
    g = sns.catplot(data=summaries, x="learning_rate", y=metric, hue="method", hue_order=order, col="optimizer",
                    kind="point", errorbar=("ci", 95), dodge=0.4, height=3.4, aspect=1.3, sharex=False)
    g.set_axis_labels("learning rate", metric.replace("_", " "))
    g.figure.suptitle(f"{metric.replace('_', ' ')} per method (mean, 95% CI over seeds; diverged runs count as NaN)", y=1.03)
    return g.figure


def norms_by_method(steps: pd.DataFrame, title: str):
    """Per method, the median over seeds of the norm before and after clipping, and the threshold."""
    order = method_order(steps["method"])
    long = steps.melt(id_vars=["method", "step"], value_vars=["norm_before", "norm_after", "threshold"],
                      var_name="series", value_name="value").dropna()
    g = sns.relplot(data=long, x="step", y="value", hue="series", col="method", col_order=order,
                    col_wrap=min(4, len(order)), kind="line", estimator="median", errorbar=None,
                    height=2.6, aspect=1.3, lw=0.8)
    g.set(yscale="log")
    g.set_axis_labels("optimizer step", "global gradient norm (log)")
    g.figure.suptitle(title, y=1.02)
    return g.figure


def clip_fraction_bars(summaries: pd.DataFrame):
    order = method_order(summaries["method"])
    fig, ax = plt.subplots(figsize=(8, 3.4))
    sns.barplot(data=summaries, x="method", y="clip_fraction", hue="optimizer", order=order, errorbar=("ci", 95), ax=ax)
    ax.set(xlabel="clipping method", ylabel="mean clip fraction per step",
           title="How often each method clipped (value: share of elements; agc: share of units)")
    ax.set_ylim(0, 1.05)
    fig.tight_layout()
    return fig


def divergence_map(summaries: pd.DataFrame):
    """Share of seeds that diverged, per method and learning rate, one panel per optimizer."""
    optimizers = sorted(summaries["optimizer"].unique())
    order = method_order(summaries["method"])
    fig, axes = plt.subplots(1, len(optimizers), figsize=(4.6 * len(optimizers), 3.6), squeeze=False)
    for ax, opt in zip(axes[0], optimizers):
        sub = summaries[summaries["optimizer"] == opt]
        table = sub.pivot_table(index="method", columns="learning_rate", values="diverged", aggfunc="mean")
        table = table.reindex([m for m in order if m in table.index]).astype(float)
        sns.heatmap(table, vmin=0, vmax=1, cmap="Reds", annot=True, fmt=".2f", cbar=ax is axes[0][-1], ax=ax,
                    cbar_kws={"label": "share of seeds diverged"})
        ax.set(title=f"{opt}", xlabel="learning rate", ylabel="clipping method")
        ax.set_xticklabels([f"{float(t.get_text()):g}" for t in ax.get_xticklabels()])
    fig.suptitle("Which runs diverged")
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
    counts = pd.DataFrame({"digit": np.r_[np.arange(10), np.arange(10)],
                           "images": np.r_[np.bincount(y_train, minlength=10), np.bincount(y_test, minlength=10)],
                           "split": ["train"] * 10 + ["test"] * 10})
    fig, ax = plt.subplots(figsize=(8, 3.2))
    sns.barplot(data=counts, x="digit", y="images", hue="split", ax=ax)
    ax.set(xlabel="digit class", ylabel="number of images", title="Class balance of MNIST")
    fig.tight_layout()
    return fig
