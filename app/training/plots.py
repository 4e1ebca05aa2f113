"""Evaluation figures saved beside a model (matplotlib, training-only dependency)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    """matplotlib.pyplot with a file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_evaluation_plot(path: Path, title: str, labels: list[str], confusion: np.ndarray,
                         fpr: np.ndarray | None = None, tpr: np.ndarray | None = None,
                         auc: float | None = None) -> None:
    """Confusion matrix (and ROC curve when given) as one PNG."""
    plt = _pyplot()
    panels = 2 if fpr is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.5))
    axes = np.atleast_1d(axes)
    ax = axes[0]
    ax.imshow(confusion, cmap="Blues")
    for (i, j), count in np.ndenumerate(confusion):
        color = "white" if count > confusion.max() / 2 else "black"
        ax.text(j, i, f"{count:,}", ha="center", va="center", color=color, fontsize=12)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix")
    if fpr is not None:
        ax = axes[1]
        ax.plot(fpr, tpr, label=f"AUC = {auc:.4f}")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title("ROC curve")
        ax.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_training_curves(path: Path, history: dict[str, list[float]], title: str) -> None:
    """Loss and accuracy per epoch (train and validation) as one PNG."""
    plt = _pyplot()
    metrics = [m for m in ("loss", "accuracy", "auc") if m in history]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4))
    for ax, metric in zip(np.atleast_1d(axes), metrics):
        ax.plot(history[metric], label="train")
        if f"val_{metric}" in history:
            ax.plot(history[f"val_{metric}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
