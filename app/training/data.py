"""Readers for the training data sets (paths come from --data or MODELSERVE_DATA_DIR)."""
from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np


def read_imdb_split(imdb_dir: Path, split: str) -> tuple[list[str], np.ndarray]:
    """Texts and 0/1 labels of the IMDb 'train' or 'test' split (label 1 = positive)."""
    path = Path(imdb_dir) / f"{split}.csv.gz"
    texts, labels = [], []
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            texts.append(row["text"])
            labels.append(int(row["label"]))
    return texts, np.asarray(labels, dtype=np.int64)
