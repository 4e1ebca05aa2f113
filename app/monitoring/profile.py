"""What a model's inputs and answers look like, and whether live traffic still looks like it.

Each input item is summarized by a few numbers (``summarize``): a text by its length in characters
and words and the share of its words outside the reference vocabulary; an image, as the network
sees it, by its dark margin, colour, brightness spread, roughness and saturation (the cell check's
features) and its distance from the training cells; a row of numbers by its values. A version's
reference (``Reference``, a hashed artifact beside its manifest) holds each feature's distribution
over held-out data in ten quantile bins, the shares of its labels and the distribution of its
confidence. Drift is the population stability index (PSI) of the live window against it, per
feature and for the predictions; a PSI over 0.2, the usual threshold for a significant shift,
flags the feature, and any flagged feature flags the model.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

REFERENCE_FILE = "reference.json"
THRESHOLD = 0.2
BINS = 10
VOCABULARY_SIZE = 20_000
WORD = re.compile(r"[a-z']+")
# The unknown-word share is taken over a text's first characters only: it costs the request path (through
# the log's writer, which shares the worker's CPU) a few microseconds instead of a tokenization of the text.
SHARE_CHARS = 300
# Where a share is zero in one distribution, it is taken as this (PSI's logarithm needs both sides).
FLOOR = 1e-4


def words(text: str) -> list[str]:
    """Lowercase words of a text (the monitor's own tokens, not the model's)."""
    return WORD.findall(text.lower())


def text_features(texts: Sequence[str], vocabulary: Mapping[str, None] | frozenset[str] | None) -> list[dict[str, float]]:
    """chars, words (spaces + 1) and, with a vocabulary, the share of the words of its first SHARE_CHARS
    characters outside it, per text."""
    rows = []
    for text in texts:
        row = {"chars": float(len(text)), "words": float(text.count(" ") + 1 if text else 0)}
        if vocabulary is not None:
            first = WORD.findall(text[:SHARE_CHARS].lower())
            row["unknown_word_share"] = 1.0 - sum(map(vocabulary.__contains__, first)) / len(first) if first else 0.0
        rows.append(row)
    return rows


def image_features(images: np.ndarray, cell_check=None) -> list[dict[str, float]]:
    """The cell check's seven features per image (as the network sees it) and, with a check, its distance."""
    from app.preprocessing.cell_check import FEATURES, cell_features

    values = cell_features(images)
    rows = [dict(zip(FEATURES, map(float, row))) for row in values]
    if cell_check is not None:
        for row, distance in zip(rows, cell_check.distances(values)):
            row["cell_distance"] = float(distance)
    return rows


def number_features(rows: np.ndarray, limit: int = 32) -> list[dict[str, float]]:
    """The first ``limit`` values of each row, as x0, x1, ..."""
    table = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)[:, :limit]
    return [{f"x{i}": float(v) for i, v in enumerate(row)} for row in table]


def answers(outputs: dict, count: int) -> tuple[list[str | None], list[float | None]]:
    """(label, score) per item: the label, and the probability of the answer (or its decision score)."""
    labels = [None if v is None else str(v) for v in outputs.get("label", [None] * count)]
    for name in ("probabilities", "decision_scores"):
        if name in outputs:
            return labels, np.asarray(outputs[name], dtype=np.float64).reshape(count, -1).max(axis=1).tolist()
    if "decision_score" in outputs:
        return labels, np.asarray(outputs["decision_score"], dtype=np.float64).reshape(-1).tolist()
    scores = [None] * count
    return labels, scores


def answer_columns(rows: Sequence[Mapping]) -> dict[str, list]:
    """Answered rows (a job's result) as the output columns ``answers`` reads: labels, and each row's
    probabilities or decision scores (a {label: value} map or a list), or its single decision score."""
    columns: dict[str, list] = {"label": [row.get("label") for row in rows]}
    for name in ("probabilities", "decision_scores"):
        values = [row.get(name) for row in rows]
        if rows and all(isinstance(v, (dict, list)) and v for v in values):
            columns[name] = [list(v.values()) if isinstance(v, dict) else v for v in values]
            return columns
    if rows and all(isinstance(row.get("decision_score"), (int, float)) for row in rows):
        columns["decision_score"] = [row["decision_score"] for row in rows]
    return columns


@dataclass
class Distribution:
    """A feature's distribution: the inner bin edges (quantiles of the reference) and each bin's share."""

    edges: list[float]
    shares: list[float]

    @classmethod
    def of(cls, values: Sequence[float]) -> "Distribution":
        """Ten quantile bins of ``values`` (fewer where values repeat)."""
        values = np.asarray(values, dtype=np.float64)
        edges = np.unique(np.quantile(values, np.linspace(0, 1, BINS + 1)[1:-1])).tolist() if len(values) else []
        return cls(edges, shares(values, edges).tolist())

    def psi(self, values: Sequence[float]) -> float:
        """Population stability index of ``values`` against this distribution."""
        return psi(np.asarray(self.shares), shares(np.asarray(values, dtype=np.float64), self.edges))


def shares(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """The share of ``values`` in each bin (edges inner, bins closed on the left)."""
    counts = np.bincount(np.searchsorted(np.asarray(edges), values, side="right"), minlength=len(edges) + 1)
    return counts / max(counts.sum(), 1)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """sum((actual - expected) * ln(actual / expected)), zero shares floored."""
    expected, actual = np.maximum(expected, FLOOR), np.maximum(actual, FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def label_psi(reference: dict[str, float], live: dict[str, float]) -> float:
    """PSI of the live label shares against the reference's (labels the reference never gave count too)."""
    names = sorted(set(reference) | set(live))
    return psi(np.array([reference.get(n, 0.0) for n in names]), np.array([live.get(n, 0.0) for n in names]))


def label_shares(labels: Sequence[str | None]) -> dict[str, float]:
    """Each label's share of the answers."""
    known = [label for label in labels if label is not None]
    names, counts = np.unique(np.array(known, dtype=object), return_counts=True) if known else ([], [])
    return {str(n): round(int(c) / len(known), 6) for n, c in zip(names, counts)}


@dataclass
class Reference:
    """A model version's inputs and answers on held-out data."""

    source: str
    examples: int
    features: dict[str, Distribution]
    labels: dict[str, float]
    score: Distribution | None
    vocabulary: Sequence[str] = field(default_factory=list)

    @classmethod
    def build(cls, source: str, feature_rows: list[dict[str, float]], labels: list[str | None],
              scores: list[float | None], vocabulary: list[str] | None = None) -> "Reference":
        """The reference of summarized held-out items and the model's answers to them."""
        names = sorted({name for row in feature_rows for name in row})
        known = [s for s in scores if s is not None]
        return cls(source, len(feature_rows),
                   {n: Distribution.of([row[n] for row in feature_rows if n in row]) for n in names},
                   label_shares(labels), Distribution.of(known) if known else None, vocabulary or [])

    def vocabulary_set(self) -> dict[str, None] | None:
        """The vocabulary for membership tests (None for a model that takes no text), made once. A dict of
        strings, not a set: the garbage collector leaves it alone (a set of 20,000 words would be walked at
        every full collection of the serving process)."""
        if not self.vocabulary:
            return None
        if getattr(self, "_vocabulary_set", None) is None:
            self._vocabulary_set = dict.fromkeys(self.vocabulary)
        return self._vocabulary_set

    def drift(self, feature_rows: list[dict[str, float]], labels: list[str | None], scores: list[float | None],
              threshold: float = THRESHOLD) -> dict[str, Any]:
        """Drift of a live window: per feature and for the predictions, each with its PSI and verdict."""
        features = {}
        for name, distribution in self.features.items():
            values = [row[name] for row in feature_rows if name in row]
            if values:
                statistic = distribution.psi(values)
                features[name] = {"statistic": round(statistic, 4), "drifted": statistic > threshold}
        live = label_shares(labels)
        predictions = {"statistic": round(label_psi(self.labels, live), 4), "live": live, "reference": self.labels}
        known = [s for s in scores if s is not None]
        if self.score is not None and known:
            predictions["confidence_statistic"] = round(self.score.psi(known), 4)
        statistics = [f["statistic"] for f in features.values()] + [predictions["statistic"],
                                                                    predictions.get("confidence_statistic", 0.0)]
        predictions["drifted"] = max(predictions["statistic"], predictions.get("confidence_statistic", 0.0)) > threshold
        return {"drifted": any(f["drifted"] for f in features.values()) or predictions["drifted"],
                "score": round(max(statistics), 4), "threshold": threshold, "statistic": "population stability index",
                "features": features, "predictions": predictions}

    def to_dict(self) -> dict:
        return {"source": self.source, "examples": self.examples,
                "features": {n: {"edges": d.edges, "shares": d.shares} for n, d in self.features.items()},
                "labels": self.labels,
                "score": {"edges": self.score.edges, "shares": self.score.shares} if self.score else None,
                "vocabulary": list(self.vocabulary)}

    def add_to(self, folder: Path) -> None:
        """Save it into a version's folder as one of the manifest's hashed artifacts."""
        from app.models.artifacts import add_artifact

        self.save(folder / REFERENCE_FILE)
        add_artifact(folder, REFERENCE_FILE)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict()) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> "Reference":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        score = data.get("score")
        return cls(data["source"], int(data["examples"]),
                   {n: Distribution(d["edges"], d["shares"]) for n, d in data["features"].items()},
                   data["labels"], Distribution(score["edges"], score["shares"]) if score else None,
                   tuple(data.get("vocabulary") or ()))  # a tuple of strings, which the collector untracks


def top_words(texts: Sequence[str], size: int = VOCABULARY_SIZE) -> list[str]:
    """The ``size`` most frequent words of ``texts`` (the vocabulary unknown words are counted against)."""
    from collections import Counter

    counts = Counter(word for text in texts for word in words(text))
    return [word for word, _ in counts.most_common(size)]
