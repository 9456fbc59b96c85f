"""The detector's own figures: canvases with their ground truth and a run's detections, and the gradient norms of
its unclipped runs against the thresholds codebases use."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from clipstudy.palette import FAILED_COLOR, METHOD_COLORS


def draw_detections(
    canvases,
    gt_boxes,
    gt_classes,
    boxes=None,
    scores=None,
    classes=None,
    min_score: float = 0.3,
    columns: int = 4,
    title: str = "Test canvases",
):
    """Canvases with ground-truth boxes (green) and, if given, detections scoring ≥ ``min_score`` (red, class:score)."""
    import matplotlib.pyplot as plt  # deferred: a run that draws nothing never loads it

    n = len(canvases)
    rows = math.ceil(n / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.6 * rows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        ax.imshow(canvases[i], cmap="gray_r", vmin=0, vmax=255)
        for (x0, y0, x1, y1), c in zip(gt_boxes[i], gt_classes[i]):
            ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="tab:green", lw=1.5))
            ax.text(x0, y1 + 3, str(int(c)), color="tab:green", fontsize=8)
        if boxes is not None:
            for (x0, y0, x1, y1), s, c in zip(boxes[i], scores[i], classes[i]):
                if s < min_score:
                    continue
                ax.add_patch(
                    plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="tab:red", lw=1.0, ls="--")
                )
                ax.text(x0, y0 - 1, f"{int(c)}:{s:.2f}", color="tab:red", fontsize=7)
    legend = "green: ground truth" + ("; red dashed: detections (class:score)" if boxes is not None else "")
    fig.suptitle(f"{title} ({legend})")
    fig.tight_layout()
    fig.draw_without_rendering()  # laid out now: a notebook's inline backend then renders it once, not twice
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
    import matplotlib.pyplot as plt  # deferred: a run that draws nothing never loads it

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


#: Q8's arms in the order the figure draws them, each in its colour (red is no arm's: it marks a collapsed run).
ARM_COLORS = {
    "no clipping": METHOD_COLORS["none"],
    "global norm 10": METHOD_COLORS["global_norm"],
    "warm-up": "#393b79",
    "warm-up + global norm 10": "#8c6d31",
}


def warmup_arms(runs: pd.DataFrame, steps: pd.DataFrame, first_steps: int = 1000, title: str | None = None):
    """The unstable detector's arms side by side (``runs``: one row per run with ``arm``, ``warmup_steps``,
    ``seed``, ``outcome`` and ``final_AP``, arms named as in ``ARM_COLORS``; ``steps``: their kept steps). Top:
    each run's training loss over its first ``first_steps`` steps, a collapsed run red, the warm-up's steps shaded.
    Bottom: each seed's final test AP@[.5:.95] per arm, a seed's runs joined, a collapsed run a red ×."""
    import matplotlib.pyplot as plt  # deferred: a run that draws nothing never loads it

    arms = [a for a in ARM_COLORS if a in set(runs["arm"])]
    fig = plt.figure(figsize=(11.5, 7.2))
    grid = fig.add_gridspec(2, len(arms), height_ratios=(1.0, 1.05), hspace=0.55, wspace=0.12)
    early = steps[(steps["step"] <= first_steps) & steps["run_id"].isin(runs["run_id"])]
    top = [fig.add_subplot(grid[0, 0])]
    top += [fig.add_subplot(grid[0, i], sharey=top[0]) for i in range(1, len(arms))]
    for ax, arm in zip(top, arms, strict=True):
        mine = runs[runs["arm"] == arm]
        warmup = int(mine["warmup_steps"].max())
        if warmup:
            ax.axvspan(0, warmup, color="#dddddd", lw=0)
            ax.text(warmup / 2, 0.97, "warm-up", transform=ax.get_xaxis_transform(), ha="center", va="top", fontsize=8)
        for run in mine.sort_values("outcome", ascending=False).itertuples():  # collapsed runs drawn last, on top
            trace = early[early["run_id"] == run.run_id].sort_values("step")
            failed = run.outcome != "learned"
            ax.plot(trace["step"], trace["loss"], lw=0.8, alpha=0.75, color=FAILED_COLOR if failed else ARM_COLORS[arm])
        collapsed = int((mine["outcome"] != "learned").sum())
        ax.set_title(f"{arm}\n{collapsed} of {len(mine)} collapsed", fontsize=9.5)
        ax.set(xlim=(0, first_steps), yscale="log", xlabel="optimizer step")
        ax.set_xticks(range(0, first_steps, 300) if first_steps > 600 else [0, first_steps // 2])
        if ax is not top[0]:
            ax.tick_params(labelleft=False)
    top[0].set_ylabel("training loss (log)")
    bottom = fig.add_subplot(grid[1, :])
    x = {arm: i for i, arm in enumerate(arms)}
    for _, seed in runs.groupby("seed"):
        seed = seed.sort_values("arm", key=lambda a: a.map(x))
        bottom.plot(seed["arm"].map(x), seed["final_AP"], color="#bbbbbb", lw=0.7, zorder=1)
    for arm in arms:
        mine = runs[runs["arm"] == arm]
        ok = mine["outcome"] == "learned"
        bottom.scatter(np.full(int(ok.sum()), x[arm]), mine.loc[ok, "final_AP"], s=22, color=ARM_COLORS[arm],
                       zorder=2, label=None)  # fmt: skip
        bottom.scatter(np.full(int((~ok).sum()), x[arm]), mine.loc[~ok, "final_AP"], s=30, marker="x",
                       color=FAILED_COLOR, zorder=3)  # fmt: skip
    bottom.set_xticks(range(len(arms)), [f"{a}\n({(runs['arm'] == a).sum()} runs)" for a in arms])
    bottom.set(xlim=(-0.5, len(arms) - 0.5), ylim=(-0.03, max(0.8, float(runs["final_AP"].max()) + 0.05)),
               ylabel="final test AP@[.5:.95]")  # fmt: skip
    bottom.set_title("Final test AP per run (grey lines join one seed's runs; red ×: collapsed)", fontsize=9.5)
    fig.suptitle(title or "The detector at Adam 1e-2: the start of training and where it ends, per arm", fontsize=11)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.87, bottom=0.09)
    return fig
