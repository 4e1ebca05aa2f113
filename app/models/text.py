"""The shipped review models: this project's hashing tokenizer in front of a fitted scikit-learn estimator."""
from __future__ import annotations

import numpy as np
import sklearn

from app.models.fast_linear import compile_pipeline
from app.models.base import Manifest
from app.models.sklearn import SklearnModel
from app.preprocessing.text import build_vectorizer, load_stopwords

STOPWORDS_FILE = "stopwords.pkl"
ESTIMATOR_FILE = "estimator.joblib"
# Texts on which the fast path (app/models/fast_linear.py) must reproduce scikit-learn before it is used.
PARITY_SAMPLES = [
    "A warm-up review: a fine film :)", "Dreadful. The worst two hours I have spent in a cinema.",
    "<br />Not bad, not great; the second half drags but the cast is superb!", "meh", "10/10 would watch again",
    "I expected nothing and was still let down: wooden acting, no plot, awful sound.",
]


class SklearnTextModel(SklearnModel):
    """HashingVectorizer (built from code + manifest settings) -> fitted sklearn estimator.

    The sklearn runtime with this project's review tokenizer (HTML strip, emoticons,
    stopword list) in front; the vectorizer is rebuilt from the manifest's settings,
    so only the fitted steps are stored.
    """

    @classmethod
    def estimator_file(cls, manifest: Manifest) -> str:
        """Always estimator.joblib beside the stopword list."""
        return ESTIMATOR_FILE

    def _load(self) -> None:
        """Read the stopword pickle (safely) and the estimator; build the vectorizer."""
        self.stopwords = load_stopwords(self.manifest.artifact_path(STOPWORDS_FILE))
        self.vectorizer = build_vectorizer(self.stopwords, self.manifest.config["vectorizer"])
        self.estimator = self.read_estimator()
        self._classes = list(self.estimator.classes_)
        self._check_classes()
        self._fast = compile_pipeline(self.estimator, self.vectorizer, PARITY_SAMPLES)

    def predict(self, batch: dict) -> dict:
        """Label each text; add probabilities or, failing those, the decision score."""
        # The features come from our own vectorizer (finite by construction) and the estimator's
        # parameters were validated when it was fitted: skipping both checks saves a good part of
        # a one-review prediction (measured in benchmarks/results/profile-review-before.md).
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            features = self.vectorizer.transform(self.features(batch))
            if self._fast is None:
                return self.predict_features(features)
            scores, proba = self._fast(features)
        if proba is not None:
            return {"label": self.labels_at(np.argmax(proba, axis=1)), "probabilities": proba}
        # Binary decision score: > 0 means the second class.
        return {"label": self.labels_at(scores > 0), "decision_score": scores}

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
