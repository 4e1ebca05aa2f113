"""The scikit-learn trio on the shared hashed IMDb features: logistic regression, linear SVC, decision tree.

Run through the CLI: ``flask train trio --data ../shared/data``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier
from tqdm import tqdm

from app.preprocessing.text import SeenFeatures
from app.training.review import base_manifest, cv_table, grid_search, load_hashed_imdb, measure, publish_text_model


@dataclass(frozen=True)
class TrioMember:
    """One model of the trio: how to build it and which settings to search."""

    name: str
    description: str
    build: Callable[[int], Pipeline]
    grid: dict
    has_probabilities: bool = True


TRIO = [
    TrioMember(
        "logistic_regression",
        "IMDb sentiment: hashed word 1-3-grams, sublinear TF-IDF, L2 logistic regression (liblinear).",
        lambda seed: Pipeline([("seen", SeenFeatures()), ("tfidf", TfidfTransformer(sublinear_tf=True)),
                               ("clf", LogisticRegression(solver="liblinear", random_state=seed))]),
        {"seen__min_df": [2, 3, 4], "clf__C": [300.0, 1000.0, 3000.0, 10000.0]},
    ),
    TrioMember(
        "linear_svc",
        "IMDb sentiment: hashed word 1-3-grams, sublinear TF-IDF, linear SVM. No probabilities: reports its decision score.",
        lambda seed: Pipeline([("seen", SeenFeatures()), ("tfidf", TfidfTransformer(sublinear_tf=True)),
                               ("clf", LinearSVC(random_state=seed))]),
        {"seen__min_df": [2, 3, 4], "clf__C": [1.0, 3.0, 10.0, 30.0]},
        has_probabilities=False,
    ),
    TrioMember(
        "decision_tree",
        "IMDb sentiment: hashed binary word 1-3-grams, CART decision tree (an interpretable but weak baseline).",
        lambda seed: Pipeline([("seen", SeenFeatures(min_df=2)),
                               ("clf", DecisionTreeClassifier(random_state=seed, min_samples_leaf=5))]),
        {"clf__max_depth": [10, 20, 40]},
    ),
]


def float32_weights(pipeline: Pipeline) -> Pipeline:
    """Store a linear classifier's weights as float32 (measured after the cast): half the memory and file."""
    classifier = pipeline[-1]
    if getattr(classifier, "coef_", None) is not None and classifier.coef_.dtype == np.float64:
        classifier.coef_ = classifier.coef_.astype(np.float32)
    return pipeline


def train_trio(data_dir: Path, model_dir: Path, seed: int = 0, only: set[str] | None = None) -> list[Path]:
    """Train each member (settings by 3-fold CV on the train split), measure on the test split, publish."""
    stopwords, x_train, y_train, x_test, y_test = load_hashed_imdb(data_dir)
    written = []
    for member in tqdm([m for m in TRIO if not only or m.name in only], desc="trio", unit="model"):
        search = grid_search(member.build(seed), member.grid, x_train, y_train, seed, folds=3)
        model = float32_weights(search.best_estimator_)
        metrics, curves = measure(model, x_test, y_test)
        manifest = base_manifest(member.name, 0, member.description, member.has_probabilities)
        manifest["metrics"] = metrics
        manifest["training"] = {
            "data": "IMDb official train split (25,000 reviews)",
            "seed": seed,
            "hyperparameters": {k.split("__")[-1]: v for k, v in search.best_params_.items()},
            "model_selection": {
                "method": "3-fold stratified cross-validation on the train split",
                "cv_accuracy": cv_table(search),
            },
        }
        written.append(publish_text_model(model_dir, manifest, model, stopwords, curves, data_dir))
    return written
