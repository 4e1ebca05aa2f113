"""A validation-free serving path for the linear text pipelines we ship, checked against scikit-learn.

Profiling /review showed that for one review, over half of the pipeline's time
went to scikit-learn's per-call input validation (check_array, run once per
step, each probing the input for dataframe types), not to arithmetic
(benchmarks/results/profile-review-before.md). For the step types below, the
same arithmetic is applied here with scikit-learn's own fitted attributes and
its own sparse kernels, and nothing else. `compile_pipeline` only returns a
function after it reproduced scikit-learn's output on sample texts; any other
pipeline keeps the ordinary scikit-learn path.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.sparse as sp
from scipy.special import expit
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.preprocessing import Normalizer
from sklearn.svm import LinearSVC
from sklearn.utils.sparsefuncs_fast import inplace_csr_row_normalize_l1, inplace_csr_row_normalize_l2

from app.preprocessing.text import LogCountRatioScaler

ROW_NORMALIZERS = {"l2": inplace_csr_row_normalize_l2, "l1": inplace_csr_row_normalize_l1}
# (decision scores, probabilities or None) from a CSR feature matrix
Scorer = Callable[[sp.csr_matrix], tuple[np.ndarray, np.ndarray | None]]


def _as_float(X: sp.csr_matrix) -> sp.csr_matrix:
    """X in float32 or float64, as scikit-learn's validation leaves it (others become float64).

    The matrices passed along are fresh for every call, so steps may change them in place.
    """
    return X if X.dtype in (np.float32, np.float64) else X.astype(np.float64)


def _step_function(step) -> Callable[[sp.csr_matrix], sp.csr_matrix] | None:
    """The in-place transform of one supported pipeline step, or None."""
    if isinstance(step, LogCountRatioScaler):
        return step.transform  # our own O(non-zeros) code, no validation in it
    if isinstance(step, Normalizer) and step.norm in ROW_NORMALIZERS:
        normalize = ROW_NORMALIZERS[step.norm]

        def row_normalize(X):
            X = _as_float(X)
            normalize(X)
            return X
        return row_normalize
    if isinstance(step, TfidfTransformer) and step.norm in (None, *ROW_NORMALIZERS):
        def tfidf(X):
            X = _as_float(X)
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


def compile_pipeline(estimator, vectorizer, samples: list[str]) -> Scorer | None:
    """A scorer equal to the estimator on `samples` (labels identical, values within 1e-9), or None."""
    steps = [s for _, s in estimator.steps] if hasattr(estimator, "steps") else [estimator]
    transforms = [_step_function(step) for step in steps[:-1]]
    classify = _classifier_function(steps[-1])
    if classify is None or any(t is None for t in transforms):
        return None

    def scorer(X):
        for transform in transforms:
            X = transform(X)
        return classify(X)

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
