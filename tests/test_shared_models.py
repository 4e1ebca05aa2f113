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
