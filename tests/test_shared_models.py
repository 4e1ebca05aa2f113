"""Estimators read by gunicorn's master before the fork and taken by the workers (app/models/shared.py)."""
from __future__ import annotations

import json

from app.models import shared
from app.models.base import sha256_of
from app.models.registry import ModelRegistry
from tests.conftest import committed_version


def estimator_path(model_dir, name):
    version = committed_version(name)
    return model_dir / name / version / "estimator.joblib", version


def test_a_worker_takes_the_masters_copy_of_a_verified_file_once(model_dir):
    shared._READ.clear()
    read = shared.preread(model_dir, {"review_sentiment", "malaria_cell"})
    version = committed_version("review_sentiment")
    assert read == [f"review_sentiment/{version}"]  # the ONNX model is not shared: its session is made per worker
    path, _ = estimator_path(model_dir, "review_sentiment")
    pre_read = shared._READ[(str(path.resolve()), sha256_of(path))]
    registry = ModelRegistry(model_dir, {"review_sentiment"})
    registry.load_all()
    assert registry.get("review_sentiment").estimator is pre_read
    assert shared.take(path, sha256_of(path)) is None  # once only: a second model would read its own
    shared._READ.clear()


def test_a_file_that_changed_after_the_master_read_it_is_read_again(model_dir):
    shared._READ.clear()
    path, version = estimator_path(model_dir, "logistic_regression")
    shared.preread(model_dir, {"logistic_regression"})
    original = sha256_of(path)
    assert (str(path.resolve()), original) in shared._READ
    assert shared.take(path, "0" * 64) is None  # another hash: not the bytes the master read
    assert shared.take(path, None) is None
    shared._READ.clear()


def test_files_that_fail_their_hash_are_not_pre_read_and_the_worker_refuses_them(model_dir):
    shared._READ.clear()
    path, version = estimator_path(model_dir, "linear_svc")
    manifest_path = path.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["artifacts"]["estimator.joblib"]["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    assert shared.preread(model_dir, {"linear_svc"}) == []
    registry = ModelRegistry(model_dir, {"linear_svc"})
    registry.load_all()
    assert "sha256 mismatch" in registry.refused[f"linear_svc/{version}"]


def test_identical_transformer_arrays_are_held_once_and_read_only(model_dir):
    import numpy as np

    from app.models.sklearn import load_estimator

    lr_path, _ = estimator_path(model_dir, "logistic_regression")
    svc_path, _ = estimator_path(model_dir, "linear_svc")
    lr, svc = load_estimator(lr_path, []), load_estimator(svc_path, [])
    # Same training data, same min_df: the same kept features and IDF weights, one copy of each.
    assert lr.named_steps["seen"].bits_ is svc.named_steps["seen"].bits_
    assert lr.named_steps["tfidf"].idf_ is svc.named_steps["tfidf"].idf_
    assert not lr.named_steps["tfidf"].idf_.flags.writeable
    with np.testing.assert_raises(ValueError):
        lr.named_steps["tfidf"].idf_[0] = 0.0
    # The final estimators keep their own weights: online learning changes those in place.
    assert lr[-1].coef_ is not svc[-1].coef_ and lr[-1].coef_.flags.writeable
    from app.models.sklearn import read_estimator_file

    alone = read_estimator_file(lr_path, [])  # a private copy, not shared

    np.testing.assert_array_equal(alone.named_steps["tfidf"].idf_, lr.named_steps["tfidf"].idf_)
    texts = ["A fine film.", "Dull and far too long."]
    from app.preprocessing.text import build_vectorizer

    features = build_vectorizer([]).transform(texts)
    np.testing.assert_array_equal(alone.predict_proba(features), lr.predict_proba(features))


def test_the_masters_imports_of_this_package_leave_onnx_runtime_to_the_workers():
    import subprocess
    import sys

    code = ("import importlib, sys; from app import SERVING_MODULES\n"
            "[importlib.import_module(m) for m in SERVING_MODULES]\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('onnxruntime', 'tensorflow')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
