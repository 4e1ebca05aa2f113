"""Evaluation figures saved beside a model (matplotlib, training-only dependency).

One panel per file, sized for the model page: PANEL inches at DPI, shown at
DISPLAY_DPI pixels per inch (half their pixel size, so they stay sharp on
high-density screens), which the page reads back from each PNG's pHYs chunk.
Side-by-side panels wrap on a narrow screen instead of shrinking to unreadable.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np

PANEL = (3.15, 2.7)  # inches: two side by side in the 44rem page column, one on a phone
DPI = 200           # pixels per inch stored in the PNG
FONT_SIZE = 9


def _pyplot():
    """matplotlib.pyplot with a file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": FONT_SIZE})
    return plt


def _title(ax, title: str) -> None:
    """A title wrapped to the panel's width."""
    ax.set_title(textwrap.fill(title, 32), fontsize=FONT_SIZE)


def _save(fig, path: Path) -> None:
    """Write one panel as a PNG (its dpi recorded in the file) and release the figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    fig.clf()
    _pyplot().close(fig)


def save_confusion_matrix(path: Path, title: str, labels: list[str], confusion: np.ndarray) -> None:
    """Counts of true (rows) against predicted (columns) labels."""
    fig, ax = _pyplot().subplots(figsize=PANEL)
    ax.imshow(confusion, cmap="Blues")
    for (i, j), count in np.ndenumerate(confusion):
        color = "white" if count > confusion.max() / 2 else "black"
        ax.text(j, i, f"{count:,}", ha="center", va="center", color=color, fontsize=FONT_SIZE + 2)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    _title(ax, title)
    _save(fig, path)


def save_roc_curve(path: Path, title: str, fpr: np.ndarray, tpr: np.ndarray, auc: float) -> None:
    """ROC curve with its area."""
    fig, ax = _pyplot().subplots(figsize=PANEL)
    ax.plot(fpr, tpr, label=f"AUC = {auc:.4f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    _title(ax, title)
    ax.legend(loc="lower right")
    _save(fig, path)


def save_evaluation_plots(directory: Path, title: str, labels: list[str], confusion: np.ndarray,
                          fpr: np.ndarray, tpr: np.ndarray, auc: float) -> None:
    """confusion_matrix.png and roc_curve.png in ``directory``."""
    save_confusion_matrix(Path(directory) / "confusion_matrix.png", title, labels, confusion)
    save_roc_curve(Path(directory) / "roc_curve.png", f"ROC curve: {title}", fpr, tpr, auc)


def save_training_curves(directory: Path, history: dict[str, list[float]], title: str) -> None:
    """training_<metric>.png per metric (loss, accuracy, auc): train and validation per epoch."""
    plt = _pyplot()
    for metric in (m for m in ("loss", "accuracy", "auc") if m in history):
        fig, ax = plt.subplots(figsize=PANEL)
        ax.plot(history[metric], label="train")
        if f"val_{metric}" in history:
            ax.plot(history[f"val_{metric}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        _title(ax, f"{title}: {metric}")
        ax.legend()
        _save(fig, Path(directory) / f"training_{metric}.png")


def save_bar_chart(path: Path, title: str, names: list[str], values: list[float], xlabel: str,
                   overall: float | None = None) -> None:
    """Horizontal bars, one per name (per-patient accuracy and the like), in the given order. The axis starts
    just below the lowest bar (said in its label), so that differences between bars show; ``overall`` is
    drawn as a dashed line."""
    height = max(PANEL[1], 0.14 * len(names) + 1.0)
    fig, ax = _pyplot().subplots(figsize=(PANEL[0], height))
    ax.barh(range(len(names)), values, color="#0b5cad")
    low = max(0.0, math.floor((min(values) - 0.05) * 20) / 20) if values else 0.0
    ax.set_xlim(low, max(1.0, max(values, default=1.0)))
    if overall is not None:
        ax.axvline(overall, color="#9a4d00", linestyle="--", linewidth=1, label=f"all patients: {overall:.3f}")
        ax.legend(loc="lower left", fontsize=FONT_SIZE - 2)
    ax.set_yticks(range(len(names)), names, fontsize=FONT_SIZE - 3)
    ax.invert_yaxis()
    ax.set_xlabel(f"{xlabel}\n(the axis starts at {low:.2f})" if low > 0 else xlabel)
    _title(ax, title)
    _save(fig, path)
