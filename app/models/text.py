"""scikit-learn text classifiers over the shared HashingVectorizer."""
from __future__ import annotations

import joblib
import numpy as np

from app.models.base import Model
from app.preprocessing.text import build_vectorizer, load_stopwords

STOPWORDS_FILE = "stopwords.pkl"
ESTIMATOR_FILE = "estimator.joblib"


class SklearnTextModel(Model):
    """HashingVectorizer (built from code + manifest settings) -> fitted sklearn estimator.

    The estimator is whatever follows the hashing step (a Pipeline or a bare
    classifier). Classifiers with ``predict_proba`` report probabilities;
    those without (linear SVC) report their decision score and say so.
    """

    def _load(self) -> None:
        """Read the stopword pickle (safely) and the estimator; build the vectorizer."""
        directory = self.manifest.directory
        self.stopwords = load_stopwords(directory / STOPWORDS_FILE)
        settings = self.manifest.data["preprocessing"]["vectorizer"]
        self.vectorizer = build_vectorizer(self.stopwords, settings)
        self.estimator = joblib.load(directory / ESTIMATOR_FILE)
        self._classes = list(self.estimator.classes_)
        if len(self._classes) != len(self.labels):
            raise ValueError(f"estimator has {len(self._classes)} classes, manifest lists {len(self.labels)} labels")

    def warm_up(self) -> None:
        """Run one short review through the whole path."""
        self.predict(["A warm-up review: a fine film :)"])

    @property
    def has_probabilities(self) -> bool:
        """Whether the estimator reports calibrated class probabilities."""
        return hasattr(self.estimator, "predict_proba")

    def predict(self, batch: list[str]) -> list[dict]:
        """Label each text; add probabilities or, failing those, the decision score."""
        features = self.vectorizer.transform(batch)
        if self.has_probabilities:
            proba = np.asarray(self.estimator.predict_proba(features), dtype=float)
            return [
                {
                    "label": self.labels[int(np.argmax(row))],
                    "probabilities": {label: float(p) for label, p in zip(self.labels, row)},
                }
                for row in proba
            ]
        scores = np.asarray(self.estimator.decision_function(features), dtype=float).reshape(len(batch))
        # Binary decision_function: > 0 means the second class.
        return [
            {"label": self.labels[int(score > 0)], "decision_score": float(score)}
            for score in scores
        ]

    def learn(self, texts: list[str], labels: list[str]) -> None:
        """Update the classifier in place with partial_fit (online learning)."""
        classifier = self.estimator[-1] if hasattr(self.estimator, "steps") else self.estimator
        if not hasattr(classifier, "partial_fit"):
            raise TypeError(f"{type(classifier).__name__} cannot learn online (no partial_fit)")
        features = self.vectorizer.transform(texts)
        if hasattr(self.estimator, "steps"):
            for _, step in self.estimator.steps[:-1]:
                features = step.transform(features)
        y = np.array([self._classes[self.labels.index(label)] for label in labels])
        classifier.partial_fit(features, y, classes=np.array(self._classes))
