"""The figures of one run (the run notebook's): matplotlib only, so that a run's notebook does not pay for
seaborn and SciPy, which the report's figures (``plots``) need."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd


def run_curves(epochs: pd.DataFrame, metrics, title: str = "Learning curves"):
    """One run's ``metrics`` (columns of its epochs table) against optimizer steps: the losses in one panel,
    every other metric in the other (a task's spec names them: ``TaskSpec.curve_metrics``)."""
    losses = [m for m in metrics if "loss" in m and m in epochs]
    others = [m for m in metrics if "loss" not in m and m in epochs]
    panels = [("loss", losses), ("metric", others)]
    panels = [(label, cols) for label, cols in panels if cols]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (label, cols) in zip(axes[0], panels):
        for col in cols:
            style = "--" if col.startswith("train_") else "-"
            name = col.replace("_", " ") + (" (running mean over the epoch)" if col.startswith("train_") else "")
            ax.plot(epochs["step"], epochs[col], style, marker="o", label=name)
        ax.set(
            xlabel="optimizer step",
            ylabel=" / ".join(c.replace("_", " ") for c in cols),
            title="Loss" if label == "loss" else "Test metrics",
        )
        ax.legend(fontsize="small")
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
