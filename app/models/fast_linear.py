"""A validation-free serving path for the text pipelines we ship, checked against scikit-learn.

Profiling /review showed that for one review, over half of the pipeline's time
went to scikit-learn's per-call input validation (check_array, run once per
step, each probing the input for dataframe types), not to arithmetic
(benchmarks/results/profile-review-before.md). For the step types below, the
same arithmetic is applied here with scikit-learn's own fitted attributes and
its own sparse kernels, and nothing else. `compile_pipeline` only returns a
function after it reproduced scikit-learn's output on sample texts; any other
pipeline keeps the ordinary scikit-learn path.

A decision tree is served from a copy that knows only the features it splits on (a few
hundred of the hashed millions): scikit-learn's sparse-input path allocates two arrays as
long as all the features on every call, which cost more than the tree itself
(benchmarks/results/decision_tree.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp
from scipy.special import expit
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.preprocessing import Normalizer
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils.sparsefuncs_fast import inplace_csr_row_normalize_l1, inplace_csr_row_normalize_l2

from app.preprocessing.text import LogCountRatioScaler, SeenFeatures

ROW_NORMALIZERS = {"l2": inplace_csr_row_normalize_l2, "l1": inplace_csr_row_normalize_l1}
# (decision scores, probabilities or None) from a CSR feature matrix
Scorer = Callable[[sp.csr_matrix], tuple[np.ndarray, np.ndarray | None]]


@dataclass
class Rows:
    """A CSR matrix as its arrays and shape, which the steps below read and replace.

    Each scipy matrix built costs its format checks, as much as a step's arithmetic
    for one review, so the steps pass these along and one matrix is built at the end. The arrays are fresh for every call: steps may change them in place.
    """

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple[int, int]

    def as_float(self) -> "Rows":
        """Values in float32 or float64, as scikit-learn's validation leaves them (others become float64)."""
        if self.data.dtype not in (np.float32, np.float64):
            self.data = self.data.astype(np.float64)
        return self

    def csr(self) -> sp.csr_matrix:
        """The scipy matrix."""
        return sp.csr_matrix((self.data, self.indices, self.indptr), shape=self.shape)


def _step_function(step) -> Callable[[Rows], Rows] | None:
    """The transform of one supported pipeline step, or None."""
    if isinstance(step, SeenFeatures):
        def seen(X):
            X.data, X.indices, X.indptr = step.select(X.data, X.indices, X.indptr)
            X.shape = (X.shape[0], step.n_kept_)
            return X
        return seen
    if isinstance(step, LogCountRatioScaler):
        def scale(X):
            X.data = step.scale(X.data, X.indices)
            return X
        return scale
    if isinstance(step, Normalizer) and step.norm in ROW_NORMALIZERS:
        normalize = ROW_NORMALIZERS[step.norm]

        def row_normalize(X):
            normalize(X.as_float())  # reads only data, indices, indptr and shape
            return X
        return row_normalize
    if isinstance(step, TfidfTransformer) and step.norm in (None, *ROW_NORMALIZERS):
        def tfidf(X):
            X = X.as_float()
            if step.sublinear_tf:
                np.log(X.data, X.data)
                X.data += 1.0
            if step.use_idf:
                X.data *= step.idf_[X.indices]
            if step.norm:
                ROW_NORMALIZERS[step.norm](X)
            return X
        return tfidf
    return None


def _classifier_function(clf) -> Scorer | None:
    """Scores (and probabilities where the model has them) of a binary linear classifier, or None."""
    binary = getattr(clf, "coef_", None) is not None and clf.coef_.shape[0] == 1 and len(clf.classes_) == 2
    if not binary:
        return None
    with_proba = isinstance(clf, LogisticRegression) or (isinstance(clf, SGDClassifier) and clf.loss == "log_loss")
    if not with_proba and not isinstance(clf, (LinearSVC, SGDClassifier)):
        return None

    def score(X):
        # Read coef_ on every call: online learning (partial_fit) updates it in place.
        scores = np.asarray(X @ clf.coef_[0], dtype=np.float64) + clf.intercept_[0]
        if not with_proba:
            return scores, None
        positive = expit(scores)
        return scores, np.column_stack([1.0 - positive, positive])
    return score


def compact_tree(tree):
    """(the feature numbers `tree` splits on, ascending; a copy of `tree` that numbers them 0, 1, ...)."""
    feature = tree.feature
    used = np.unique(feature[feature >= 0])
    cls, (_, n_classes, n_outputs), state = tree.__reduce__()
    nodes = state["nodes"].copy()
    splits = nodes["feature"] >= 0
    nodes["feature"][splits] = np.searchsorted(used, nodes["feature"][splits])
    compact = cls(len(used), n_classes, n_outputs)
    compact.__setstate__({**state, "nodes": nodes})
    return used, compact


def _tree_function(clf) -> Scorer | None:
    """Probabilities (and their difference as the score) of a single-output decision tree that splits
    at least once, or None."""
    if not isinstance(clf, DecisionTreeClassifier) or clf.n_outputs_ != 1:
        return None
    used, tree = compact_tree(clf.tree_)
    if not len(used):
        return None  # a single leaf: nothing to gain
    n_classes = int(clf.n_classes_)

    def score(X):
        # The rows as a dense array of just the used features (absent ones are 0, as in the sparse matrix).
        dense = np.zeros((X.shape[0], len(used)), dtype=np.float32)
        column = np.minimum(np.searchsorted(used, X.indices), len(used) - 1)
        hit = used[column] == X.indices
        row = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
        dense[row[hit], column[hit]] = X.data[hit]
        proba = tree.predict(dense)[:, :n_classes].astype(np.float64)  # what predict_proba does, unvalidated
        total = proba.sum(axis=1, keepdims=True)
        total[total == 0.0] = 1.0
        proba /= total
        return proba[:, -1] - proba[:, 0], proba
    return score


def compile_pipeline(estimator, vectorizer, samples: list[str]) -> Scorer | None:
    """A scorer equal to the estimator on `samples` (labels identical, values within 1e-9), or None."""
    steps = [s for _, s in estimator.steps] if hasattr(estimator, "steps") else [estimator]
    transforms = [_step_function(step) for step in steps[:-1]]
    classify = _classifier_function(steps[-1]) or _tree_function(steps[-1])
    if classify is None or any(t is None for t in transforms):
        return None

    def scorer(X):
        rows = Rows(X.data, X.indices, X.indptr, X.shape)
        for transform in transforms:
            rows = transform(rows)
        return classify(rows.csr())

    features = vectorizer.transform(samples)
    scores, proba = scorer(features.copy())  # the steps work in place
    if proba is not None:
        expected = estimator.predict_proba(features)
        agrees = np.allclose(proba, expected, rtol=0, atol=1e-9)
    else:
        expected = estimator.decision_function(features)
        agrees = np.allclose(scores, expected, rtol=0, atol=1e-9)
    same_labels = np.array_equal(estimator.predict(features), steps[-1].classes_[(scores > 0).astype(int)])
    return scorer if agrees and same_labels else None
