"""Figures of the study as a whole: the headline (every claim's primary effect with its verdict in force) and the
cost of each clipping method per step."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from clipstudy.analysis.plots import METHOD_ORDER, MIN_INTERVAL_N
from clipstudy.palette import METHOD_COLORS


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
