"""Plots written into run directories: training curves and a confusion matrix (matplotlib, Agg)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from fluxnet.files import writes_here


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curves(history: Mapping[str, Sequence[float]], path: str, best_epoch: int | None = None) -> None:
    """One panel per quantity (loss, each metric): train and validation against epochs, with the best
    checkpoint's epoch (1-based) marked."""
    plt = pyplot()
    names = [k for k in history if not k.startswith("val_") and k != "learning_rate"]
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        epochs = np.arange(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], label="validation")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best (epoch {best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.legend()
    fig.tight_layout()
    if writes_here():  # process 0 of a multi-process job
        fig.savefig(path, dpi=100)
    plt.close(fig)


def confusion_matrix_plot(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str], path: str,
                          title: str = "") -> np.ndarray:
    """Counts of (true, predicted) class pairs as a heat map with a colour bar; returns the matrix."""
    plt = pyplot()
    n = len(class_names)
    matrix = np.zeros((n, n), np.int64)
    np.add.at(matrix, (np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()), 1)
    fig, ax = plt.subplots(figsize=(0.5 * n + 3, 0.5 * n + 2.5))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="examples")
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set_title(f"{title}{': ' if title else ''}accuracy {accuracy:.4f}, {matrix.sum()} examples")
    ax.set_xticks(range(n), class_names, rotation=90)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                color="white" if count > matrix.max() / 2 else "black")
    fig.tight_layout()
    if writes_here():  # process 0 of a multi-process job
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return matrix
