"""Figures of the data itself: sample digits and the class balance of MNIST's splits."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns


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
