"""Does an image look like a thin-smear cell crop? A cheap check before an answer is trusted.

The cell network answers every image with a label and a confident-looking probability, a
photo or random noise included. This check measures a few properties of the image as the
network sees it (the padded, resized array) that every cell crop of the training data
shares: a black margin around one stained cell, its colour, how smooth it is. It scores an
image by its Mahalanobis distance from the training cells' features; images farther than
the threshold (a high quantile of the training cells' own distances, its false-alarm rate
measured on patients it was not fitted on: `flask train malaria-cell-check`) get a warning.
It never changes the answer.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

FEATURES = ("margin", "red", "green", "blue", "spread", "roughness", "saturation")
# Channels below this (0..1) count as the black margin the crops were padded with.
DARK = 0.04


def cell_features(images: np.ndarray) -> np.ndarray:
    """(N, 7) features of (N, H, W, 3) images in [0, 1]: the dark margin's share, the mean colour of the rest,
    its brightness spread, its roughness (mean step between neighbours) and its mean saturation."""
    x = np.asarray(images, dtype=np.float32)
    top = x.max(axis=3)
    lit = top > DARK
    count = np.maximum(lit.sum(axis=(1, 2)), 1).astype(np.float32)
    margin = 1.0 - lit.mean(axis=(1, 2))
    colour = (x * lit[..., None]).sum(axis=(1, 2)) / count[:, None]
    grey = x.mean(axis=3)
    mean_grey = (grey * lit).sum(axis=(1, 2)) / count
    spread = np.sqrt((((grey - mean_grey[:, None, None]) ** 2) * lit).sum(axis=(1, 2)) / count)
    across = np.abs(np.diff(grey, axis=2)) * (lit[:, :, 1:] & lit[:, :, :-1])
    down = np.abs(np.diff(grey, axis=1)) * (lit[:, 1:, :] & lit[:, :-1, :])
    pairs = np.maximum((lit[:, :, 1:] & lit[:, :, :-1]).sum(axis=(1, 2)) + (lit[:, 1:, :] & lit[:, :-1, :]).sum(axis=(1, 2)), 1)
    roughness = (across.sum(axis=(1, 2)) + down.sum(axis=(1, 2))) / pairs
    saturation = (((top - x.min(axis=3)) / np.maximum(top, 1e-6)) * lit).sum(axis=(1, 2)) / count
    return np.column_stack([margin, colour, spread, roughness, saturation]).astype(np.float64)


@dataclass
class CellCheck:
    """The training cells' feature mean and inverse covariance, and the distance beyond which an image is
    not cell-like."""

    mean: list[float]
    inverse_covariance: list[list[float]]
    threshold: float
    quantile: float
    features: tuple[str, ...] = FEATURES

    @classmethod
    def fit(cls, features: np.ndarray, quantile: float) -> "CellCheck":
        """Fitted on cells' features; the threshold is the ``quantile`` of their own distances."""
        mean = features.mean(axis=0)
        inverse = np.linalg.pinv(np.cov(features, rowvar=False))
        check = cls(mean.tolist(), inverse.tolist(), 0.0, quantile)
        check.threshold = float(np.quantile(check.distances(features), quantile))
        return check

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row of features from the cells'."""
        centred = np.asarray(features, dtype=np.float64) - np.asarray(self.mean)
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", centred, np.asarray(self.inverse_covariance), centred), 0))

    def unlike(self, images: np.ndarray) -> np.ndarray:
        """Whether each image is farther from the cells than the threshold."""
        return self.distances(cell_features(images)) > self.threshold

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({**asdict(self), "features": list(self.features)}, indent=1) + "\n")

    @classmethod
    def read(cls, path: Path) -> "CellCheck":
        data = json.loads(Path(path).read_text())
        if tuple(data.get("features", ())) != FEATURES:
            raise ValueError(f"{path}: a cell check of features {data.get('features')}, this server computes {FEATURES}")
        return cls(data["mean"], data["inverse_covariance"], float(data["threshold"]), float(data["quantile"]))
