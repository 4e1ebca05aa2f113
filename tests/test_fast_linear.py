"""The validation-free path (linear models, decision trees) gives scikit-learn's answers, on real held-out reviews."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from app.models.base import Manifest
from app.models.fast_linear import compile_pipeline
from app.models.runner import Runner
from app.models.text import PARITY_SAMPLES, SklearnTextModel
from app.training.data import read_imdb_split
from tests.conftest import SAVED_MODELS, committed_version


def answer(model, text: str) -> dict:
    """The model's plain answer to one text, served the one way models are called."""
    return Runner(model).serve({"review": [text]}).rows[0]


def load(name: str) -> SklearnTextModel:
    model = SklearnTextModel(Manifest.read(SAVED_MODELS / name / committed_version(name) / "manifest.json"))
    model.load()
    return model


@pytest.mark.parametrize("name", ["review_sentiment", "logistic_regression", "linear_svc", "decision_tree"])
def test_fast_path_matches_sklearn_on_held_out_reviews(name, shared_data):
    model = load(name)
    assert model._fast is not None, "the shipped pipelines must get the fast path"
    texts, _ = read_imdb_split(shared_data / "imdb", "test")
    texts = list(texts[:3000])
    features = model.vectorizer.transform(texts)
    scores, proba = model._fast(features.copy())
    classifier = model.estimator.steps[-1][1]
    assert np.array_equal(classifier.classes_[(scores > 0).astype(int)], model.estimator.predict(features))
    if proba is not None:
        assert np.abs(proba - model.estimator.predict_proba(features)).max() <= 1e-9
    else:
        assert np.abs(scores - model.estimator.decision_function(features)).max() <= 1e-9
    one_by_one = [answer(model, text)["label"] for text in texts[:200]]
    assert one_by_one == [p["label"] for p in model.postprocess(model.predict({"review": texts[:200]}))]


def test_compact_tree_numbers_only_the_split_features():
    from sklearn.tree import DecisionTreeClassifier

    from app.models.fast_linear import compact_tree

    rng = np.random.default_rng(0)
    X = (rng.random((300, 50)) < 0.2).astype(np.float32)
    y = X[:, 7] + X[:, 31] * 2 > 1
    tree = DecisionTreeClassifier(max_depth=4, random_state=0).fit(X, y)
    used, compact = compact_tree(tree.tree_)
    assert set(used) == set(tree.tree_.feature[tree.tree_.feature >= 0]) and compact.n_features == len(used)
    assert np.array_equal(compact.predict(np.ascontiguousarray(X[:, used])), tree.tree_.predict(X))


def test_other_pipelines_keep_the_sklearn_path():
    review = load("review_sentiment")
    scaled = Pipeline([("scale", StandardScaler(with_mean=False)), ("clf", review.estimator.steps[-1][1])])
    scaled.steps[0][1].fit(review.vectorizer.transform(PARITY_SAMPLES))
    assert compile_pipeline(scaled, review.vectorizer, PARITY_SAMPLES) is None  # unknown step type


def test_fast_path_follows_online_learning():
    model = load("review_sentiment")
    text = "An odd, slow film that I somehow enjoyed."
    before = answer(model, text)["probabilities"]["positive"]
    model.learn([text] * 20, ["negative"] * 20)
    after = answer(model, text)["probabilities"]["positive"]
    assert after < before
    features = model.vectorizer.transform([text])
    assert abs(model.estimator.predict_proba(features)[0, 1] - after) <= 1e-9
