"""The model registry: discovery, hash verification, versions, errors."""
import json
import logging
import shutil

import pytest

from app.errors import ModelNotFound, ModelNotReady
from app.models.registry import ModelRegistry
from tests.conftest import committed_version

NAME = "review_sentiment"
V = committed_version(NAME)
NEXT = str(int(V) + 1)


def test_loads_committed_model_and_verifies_it(model_dir):
    registry = ModelRegistry(model_dir)
    registry.load_all()
    model = registry.get(NAME)
    assert model.ready and model.version == V
    assert registry.refused == {}
    assert model.manifest.metrics["accuracy"] >= 0.90


def test_tampered_artifact_is_refused_with_log_line(model_dir, caplog):
    estimator = model_dir / NAME / V / "estimator.joblib"
    data = bytearray(estimator.read_bytes())
    data[len(data) // 2] ^= 0xFF
    estimator.write_bytes(bytes(data))
    registry = ModelRegistry(model_dir)
    with caplog.at_level(logging.ERROR, logger="app.models.registry"):
        registry.load_all()
    assert "sha256 mismatch for estimator.joblib" in caplog.text
    assert f"refusing model {NAME}/{V}" in caplog.text
    with pytest.raises(ModelNotReady) as err:
        registry.get(NAME)
    assert err.value.status == 503


def test_missing_artifact_is_refused(model_dir):
    (model_dir / NAME / V / "stopwords.pkl").unlink()
    registry = ModelRegistry(model_dir)
    registry.load_all()
    assert "stopwords.pkl is missing" in registry.refused[f"{NAME}/{V}"]


def test_artifact_path_outside_model_folder_is_refused(model_dir):
    manifest_path = model_dir / NAME / V / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["artifacts"]["../../escape"] = {"sha256": "0" * 64, "bytes": 0}
    manifest_path.write_text(json.dumps(manifest))
    registry = ModelRegistry(model_dir)
    registry.load_all()
    assert "outside the model directory" in registry.refused[f"{NAME}/{V}"]


def test_manifest_that_disagrees_with_its_folder_is_ignored(model_dir):
    shutil.copytree(model_dir / NAME / V, model_dir / NAME / "7")
    registry = ModelRegistry(model_dir)
    registry.load_all()
    assert registry.versions(NAME) == [V]


def add_next_version(model_dir) -> None:
    """A copy of the committed version as version NEXT."""
    shutil.copytree(model_dir / NAME / V, model_dir / NAME / NEXT)
    manifest_path = model_dir / NAME / NEXT / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["version"] = int(NEXT)
    manifest_path.write_text(json.dumps(manifest))


def test_newest_version_is_default_and_old_ones_stay_reachable(model_dir):
    add_next_version(model_dir)
    registry = ModelRegistry(model_dir)
    registry.load_all()
    assert registry.get(NAME).version == NEXT
    assert registry.get(NAME, V).version == V
    with pytest.raises(ModelNotFound):
        registry.get(NAME, str(int(NEXT) + 1))


def test_unknown_model_is_404_listing_valid_names(model_dir):
    registry = ModelRegistry(model_dir)
    with pytest.raises(ModelNotFound) as err:
        registry.get("no_such_model")
    assert err.value.status == 404
    assert NAME in err.value.extra["available"]


def test_only_setting_limits_what_is_loaded(model_dir):
    registry = ModelRegistry(model_dir, only={"something_else"})
    registry.load_all()
    assert registry.names() == []


@pytest.mark.parametrize("production, default", [(V, V), (None, NEXT), ("99", NEXT)])
def test_the_server_and_batch_scoring_take_the_same_default_version(model_dir, production, default):
    """The production alias when it can be served, else the newest: also when the alias names a version that
    is not there (batch scoring used to refuse then, while the server served the newest)."""
    from app.batch.core import find_manifest

    add_next_version(model_dir)
    if production:
        (model_dir / NAME / "aliases.json").write_text(json.dumps({"aliases": {"production": production}}))
    registry = ModelRegistry(model_dir)
    registry.load_all()
    assert registry.get(NAME).version == find_manifest(model_dir, NAME).version == default
