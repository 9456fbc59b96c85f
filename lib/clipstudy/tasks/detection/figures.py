"""The detector's own figures: canvases with their ground truth and a run's detections."""

from __future__ import annotations

import math


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
