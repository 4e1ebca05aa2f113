"""The scikit-learn trio on the shared hashed IMDb features: logistic regression, linear SVC, decision tree.

Run through the CLI: ``flask train trio --data ../shared/data``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier
from tqdm import tqdm

from app.training.review import base_manifest, load_hashed_imdb, measure, publish_text_model


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
        "IMDb sentiment: hashed word 1-2-grams, sublinear TF-IDF, L2 logistic regression (liblinear).",
        lambda seed: Pipeline([("tfidf", TfidfTransformer(sublinear_tf=True)),
                               ("clf", LogisticRegression(solver="liblinear", random_state=seed))]),
        {"clf__C": [3.0, 10.0, 30.0]},
    ),
    TrioMember(
        "linear_svc",
        "IMDb sentiment: hashed word 1-2-grams, sublinear TF-IDF, linear SVM. No probabilities: reports its decision score.",
        lambda seed: Pipeline([("tfidf", TfidfTransformer(sublinear_tf=True)),
                               ("clf", LinearSVC(random_state=seed))]),
        {"clf__C": [0.1, 0.3, 1.0]},
        has_probabilities=False,
    ),
    TrioMember(
        "decision_tree",
        "IMDb sentiment: hashed binary word 1-2-grams, CART decision tree (an interpretable but weak baseline).",
        lambda seed: Pipeline([("clf", DecisionTreeClassifier(random_state=seed, min_samples_leaf=5))]),
        {"clf__max_depth": [20, 40]},
    ),
]


def train_trio(data_dir: Path, model_dir: Path, seed: int = 0, only: set[str] | None = None) -> list[Path]:
    """Train each member (settings by 3-fold CV on the train split), measure on the test split, publish."""
    stopwords, x_train, y_train, x_test, y_test = load_hashed_imdb(data_dir)
    written = []
    for member in tqdm([m for m in TRIO if not only or m.name in only], desc="trio", unit="model"):
        search = GridSearchCV(member.build(seed), member.grid, cv=StratifiedKFold(3, shuffle=True, random_state=seed),
                              scoring="accuracy", n_jobs=1, refit=True)
        search.fit(x_train, y_train)
        metrics, curves = measure(search.best_estimator_, x_test, y_test)
        manifest = base_manifest(member.name, 0, member.description, member.has_probabilities)
        manifest["metrics"] = metrics
        manifest["training"] = {
            "data": "IMDb official train split (25,000 reviews)",
            "seed": seed,
            "hyperparameters": {k.removeprefix("clf__"): v for k, v in search.best_params_.items()},
            "model_selection": {
                "method": "3-fold stratified cross-validation on the train split",
                "cv_accuracy": {str(p): round(float(s), 5) for p, s in
                                zip(search.cv_results_["params"], search.cv_results_["mean_test_score"])},
            },
        }
        written.append(publish_text_model(model_dir, manifest, search.best_estimator_, stopwords, curves))
    return written
