"""scikit-learn text classifiers over the shared HashingVectorizer."""
from __future__ import annotations

import joblib
import numpy as np
import sklearn

from app.models.base import Model
from app.models.fast_linear import compile_pipeline
from app.preprocessing.text import build_vectorizer, load_stopwords

STOPWORDS_FILE = "stopwords.pkl"
ESTIMATOR_FILE = "estimator.joblib"
# Texts on which the fast linear path must reproduce scikit-learn before it is used.
PARITY_SAMPLES = [
    "A warm-up review: a fine film :)", "Dreadful. The worst two hours I have spent in a cinema.",
    "<br />Not bad, not great; the second half drags but the cast is superb!", "meh", "10/10 would watch again",
    "I expected nothing and was still let down: wooden acting, no plot, awful sound.",
]


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
        self._fast = compile_pipeline(self.estimator, self.vectorizer, PARITY_SAMPLES)

    def warm_up(self) -> None:
        """Run one short review through the whole path."""
        self.predict(PARITY_SAMPLES[:1])

    @property
    def has_probabilities(self) -> bool:
        """Whether the estimator reports calibrated class probabilities."""
        return hasattr(self.estimator, "predict_proba")

    def predict(self, batch: list[str]) -> list[dict]:
        """Label each text; add probabilities or, failing those, the decision score."""
        # The features come from our own vectorizer (finite by construction) and the estimator's
        # parameters were validated when it was fitted: skipping both checks saves about a third
        # of a one-review prediction (1.19 -> 0.85 ms, benchmarks/results/profile-review-before.md).
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            return self._predict(batch)

    def _predict(self, batch: list[str]) -> list[dict]:
        """predict() without the configuration context."""
        features = self.vectorizer.transform(batch)
        if self._fast is not None:
            scores, proba = self._fast(features)
        elif self.has_probabilities:
            scores, proba = None, np.asarray(self.estimator.predict_proba(features), dtype=float)
        else:
            scores, proba = np.asarray(self.estimator.decision_function(features), dtype=float).reshape(len(batch)), None
        if proba is None:
            # Binary decision score: > 0 means the second class.
            return [{"label": self.labels[int(score > 0)], "decision_score": float(score)} for score in scores]
        return [{"label": self.labels[int(np.argmax(row))],
                 "probabilities": {label: float(p) for label, p in zip(self.labels, row)}} for row in proba]

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
