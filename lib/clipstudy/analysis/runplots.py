"""The figures of one run (the run notebook's): matplotlib only, so that a run's notebook does not pay for
seaborn and SciPy, which the report's figures (``plots``) need.

Each figure is laid out by fixed margins (in inches, so they hold at any figure width) instead of
``tight_layout``, and measured once before it is returned (``laid_out``): a notebook's inline backend
redraws every stale figure after its cell and then renders it again, and a figure already laid out is
rendered once. Together with the run notebook's ``bbox_inches=None`` (no cropping pass), this makes a
figure cost one draw instead of four (``make bench``'s breakdown counts them in ``notebook_rest``).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib import ticker

#: Margins around the axes, in inches: room for tick labels and an axis label (left, bottom), the title
#: and a figure title above the panels (top), and between panels for the second panel's labels.
MARGINS_IN = {"left": 0.8, "right": 0.2, "bottom": 0.55, "top": 0.4, "suptitle": 0.3, "between": 0.8}


class PlainLogFormatter(ticker.LogFormatter):
    """Log-axis tick labels as plain numbers (0.4, 1, 20, 1e-05), which fit the fixed margins (matplotlib's
    default, 4×10⁻¹, is twice as wide); the minor ticks are labelled, as by default, where the axis spans
    few decades."""

    def _num_to_string(self, x, vmin, vmax):
        return f"{x:g}"


def laid_out(fig):
    """``fig`` measured now (text extents, tick positions) without rendering, so it is not stale: an inline
    backend renders it once, instead of drawing it after the cell and again to show it."""
    fig.draw_without_rendering()
    return fig


def _adjust(fig, suptitle: bool = False) -> None:
    width, height = fig.get_size_inches()
    m = MARGINS_IN
    top = m["top"] + (m["suptitle"] if suptitle else 0.0)
    columns = len(fig.axes)
    panel = (width - m["left"] - m["right"] - (columns - 1) * m["between"]) / columns
    fig.subplots_adjust(
        left=m["left"] / width,
        right=1 - m["right"] / width,
        bottom=m["bottom"] / height,
        top=1 - top / height,
        wspace=m["between"] / panel if columns > 1 else 0.2,
    )


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
    _adjust(fig, suptitle=True)
    return laid_out(fig)


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
    ax.yaxis.set_major_formatter(PlainLogFormatter())
    ax.yaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))
    ax.set(xlabel="optimizer step", ylabel="global L2 norm of the gradient (log)", title=title)
    ax.legend(loc="upper right", fontsize="small")
    ax.grid(alpha=0.3, which="both")
    _adjust(fig)
    return laid_out(fig)
