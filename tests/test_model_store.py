"""The shared model store (app/models/store.py) through a file:// store: publishing, the verified cache,
aliases and unloads reaching another instance, refusals, outages. The same code against an S3 server
is in test_model_store_s3.py."""
from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest

from app import create_app
from app.models.registry import StoreWatcher
from tests.conftest import SAVED_MODELS, committed_version

MODEL = "decision_tree"  # the smallest committed model: quick to copy and load
VERSION = committed_version(MODEL)
TEXT = {"review": "A wonderful, moving film with a brilliant cast.", "model": MODEL}


def instance(tmp_path: Path, store_url: str, label: str, **settings):
    """An app (one instance) with its own cache and database, an empty local model folder, and the store."""
    (tmp_path / f"{label}-empty").mkdir(exist_ok=True)
    return create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / f'{label}.db'}",
                       "MODEL_DIR": str(tmp_path / f"{label}-empty"), "MODEL_STORE": store_url,
                       "MODEL_CACHE": str(tmp_path / f"{label}-cache"), "MODELS": MODEL, **settings})


def add_version(source: Path, name: str, version: str, change=None) -> Path:
    """A copy of a committed version as another version number of a local folder (same artifacts)."""
    target = source / name / version
    shutil.copytree(SAVED_MODELS / MODEL / VERSION, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest.update(name=name, version=int(version))
    if change:
        change(target, manifest)
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


@pytest.fixture
def store(tmp_path):
    """A file:// store holding the decision tree as versions 1 and 2 (published with `flask models publish`)."""
    local = tmp_path / "published"
    add_version(local, MODEL, "1")
    add_version(local, MODEL, "2")
    root = tmp_path / "store"
    root.mkdir()
    url = root.as_uri()
    app = instance(tmp_path, url, "publisher")
    result = app.test_cli_runner().invoke(args=["models", "publish", str(local)])
    assert result.exit_code == 0, result.output
    assert "decision_tree v1: published" in result.output and "decision_tree v2: published" in result.output
    return root


def served_version(client) -> str:
    """The version a request without one gets."""
    response = client.post("/predict", data=TEXT)
    assert response.status_code == 200, response.get_json()
    return str(response.get_json()["model"]["version"])


def test_an_instance_with_no_local_models_serves_from_the_store(tmp_path, store):
    app = instance(tmp_path, store.as_uri(), "a")
    registry = app.extensions["model_registry"]
    registry.load_all()
    assert registry.versions(MODEL) == ["2"]  # the newest; older versions only when an alias names them
    assert served_version(app.test_client()) == "2"
    ready = app.test_client().get("/health/ready").get_json()
    assert ready["model_store"] == "ok" and ready["ready"] is True
    cached = list(Path(tmp_path / "a-cache").glob(f"*/{MODEL}/2/manifest.json"))
    assert len(cached) == 1


def test_promote_rollback_unload_and_load_reach_another_instance(tmp_path, store):
    a, b = instance(tmp_path, store.as_uri(), "a"), instance(tmp_path, store.as_uri(), "b")
    for app in (a, b):
        app.extensions["model_registry"].load_all()
    watcher = StoreWatcher(b.extensions["model_registry"], 10)
    assert watcher.poll() is False  # nothing changed: no reload

    result = a.test_cli_runner().invoke(args=["models", "promote", MODEL, "1"])
    assert result.exit_code == 0, result.output
    assert "every running worker picks it up within MODEL_POLL_SECONDS" in result.output
    assert json.loads((store / MODEL / "aliases.json").read_text())["aliases"] == {"production": "1"}
    assert watcher.poll() is True
    assert served_version(b.test_client()) == "1"
    assert b.extensions["model_registry"].versions(MODEL) == ["1", "2"]

    assert a.test_cli_runner().invoke(args=["models", "rollback", MODEL]).exit_code != 0  # nothing before v1
    assert a.test_cli_runner().invoke(args=["models", "promote", MODEL, "2"]).exit_code == 0
    assert a.test_cli_runner().invoke(args=["models", "rollback", MODEL]).exit_code == 0
    watcher.poll()
    assert served_version(b.test_client()) == "1"

    token = {"Authorization": f"Bearer {a.extensions['worker_token']}"}
    assert a.test_client().post(f"/v2/repository/models/{MODEL}/unload", headers=token).status_code == 200
    assert (store / MODEL / "UNLOADED").exists()
    assert a.test_client().post("/predict", data=TEXT).status_code == 404
    watcher.poll()
    assert b.test_client().post("/predict", data=TEXT).status_code == 404
    assert a.test_client().post(f"/v2/repository/models/{MODEL}/load", headers=token).status_code == 200
    watcher.poll()
    assert served_version(b.test_client()) == "1"


def wine_model(path: Path) -> Path:
    """A small scikit-learn pipeline saved with skops, as a user would bring it."""
    import skops.io as sio
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_wine(return_X_y=True)
    sio.dump(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y), path)
    return path


def test_a_version_added_with_the_cli_goes_to_the_store_and_another_instance_serves_it(tmp_path, store):
    app = instance(tmp_path, store.as_uri(), "a", MODELS="")
    other = instance(tmp_path, store.as_uri(), "b", MODELS="")
    other.extensions["model_registry"].load_all()
    result = app.test_cli_runner().invoke(args=["models", "add", "wine", str(wine_model(tmp_path / "wine.skops"))])
    assert result.exit_code == 0, result.output
    assert "added wine version 1" in result.output and "every running worker picks it up" in result.output
    assert (store / "wine" / "1" / "manifest.json").exists()
    assert not any((tmp_path / "a-empty").iterdir())  # nothing written to the local folder
    assert StoreWatcher(other.extensions["model_registry"], 10).poll() is True
    assert other.extensions["model_registry"].versions("wine") == ["1"]
    again = app.test_cli_runner().invoke(args=["models", "add", "wine", str(tmp_path / "wine.skops")])
    assert again.exit_code == 0 and "added wine version 2" in again.output


def tamper(target: Path, manifest: dict) -> None:
    """Flip one byte of the first artifact (the manifest keeps the original hash)."""
    artifact = target / next(iter(manifest["artifacts"]))
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))


def drop_artifacts(target: Path, manifest: dict) -> None:
    """A manifest that lists no artifacts."""
    manifest["artifacts"] = {}


def escape_cache(target: Path, manifest: dict) -> None:
    """An artifact name that would write outside the cache."""
    manifest["artifacts"] = {"../../../escaped.skops": next(iter(manifest["artifacts"].values()))}


@pytest.mark.parametrize("change, reason", [(tamper, "sha256 mismatch"), (drop_artifacts, "lists no artifacts"),
                                            (escape_cache, "not a plain relative file name")])
def test_a_bad_version_in_the_store_is_refused_and_the_previous_one_serves(tmp_path, store, change, reason):
    add_version(store, MODEL, "3", change)
    app = instance(tmp_path, store.as_uri(), "a")
    registry = app.extensions["model_registry"]
    registry.load_all()
    assert reason in registry.refused[f"{MODEL}/3"]
    assert served_version(app.test_client()) == "2"
    assert not (tmp_path / "escaped.skops").exists() and not list(tmp_path.rglob("escaped.skops"))
    listing = app.test_cli_runner().invoke(args=["models", "list"])
    assert listing.exit_code == 1 and re.search(rf"{MODEL}\s+v3\s+REFUSED", listing.output), listing.output
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert f'modelserve_model_store_refusals_total{{model="{MODEL}",version="3"}}' in metrics


def test_a_version_being_uploaded_is_neither_served_nor_refused(tmp_path, store):
    target = add_version(store, MODEL, "3")
    (target / "manifest.json").unlink()  # artifacts are there, the manifest (uploaded last) is not yet
    app = instance(tmp_path, store.as_uri(), "a")
    registry = app.extensions["model_registry"]
    registry.load_all()
    assert registry.versions(MODEL) == ["2"] and f"{MODEL}/3" not in registry.refused
    add_version(tmp_path / "later", MODEL, "3")
    shutil.copy(tmp_path / "later" / MODEL / "3" / "manifest.json", target / "manifest.json")
    assert StoreWatcher(registry, 10).poll() is True
    assert registry.versions(MODEL) == ["3"]


def test_a_store_outage_keeps_the_cache_serving_and_recovers_by_itself(tmp_path, store, caplog):
    app = instance(tmp_path, store.as_uri(), "a")
    registry = app.extensions["model_registry"]
    registry.load_all()
    watcher = StoreWatcher(registry, 10)
    store.rename(tmp_path / "store-away")  # the store's location answers nothing
    logger = logging.getLogger("app.models.registry")
    logger.addHandler(caplog.handler)  # the app's JSON logging does not propagate to pytest's handler
    try:
        for _ in range(3):
            watcher.poll()
    finally:
        logger.removeHandler(caplog.handler)
    client = app.test_client()
    assert served_version(client) == "2"
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.get_json()["model_store"] == "unavailable"
    assert "modelserve_model_store_up 0.0" in client.get("/metrics").get_data(as_text=True)
    assert sum("model store" in r.message and "unavailable" in r.message for r in caplog.records) == 1
    (tmp_path / "store-away").rename(store)
    watcher.poll()
    assert client.get("/health/ready").get_json()["model_store"] == "ok"
    assert "modelserve_model_store_up 1.0" in client.get("/metrics").get_data(as_text=True)


def test_at_start_an_outage_serves_a_warm_cache_and_an_empty_cache_is_not_ready(tmp_path, store):
    instance(tmp_path, store.as_uri(), "warm").extensions["model_registry"].load_all()
    store.rename(tmp_path / "store-away")
    warm = instance(tmp_path, store.as_uri(), "warm")
    warm.extensions["model_registry"].load_all()
    assert served_version(warm.test_client()) == "2"
    cold = instance(tmp_path, store.as_uri(), "cold")
    cold.extensions["model_registry"].load_all()
    response = cold.test_client().get("/health/ready")
    assert response.status_code == 503
    assert response.get_json()["model_store"] == "unavailable"
    assert "no such bucket or folder" in response.get_json()["model_store_problem"]
    (tmp_path / "store-away").rename(store)
    StoreWatcher(cold.extensions["model_registry"], 10).poll()
    assert cold.test_client().get("/health/ready").status_code == 200


def test_versions_no_alias_names_are_evicted_from_the_cache(tmp_path, store):
    app = instance(tmp_path, store.as_uri(), "a")
    registry = app.extensions["model_registry"]
    assert app.test_cli_runner().invoke(args=["models", "promote", MODEL, "1"]).exit_code == 0
    registry.load_all()
    assert registry.versions(MODEL) == ["1", "2"]
    assert app.test_cli_runner().invoke(args=["models", "promote", MODEL, "2"]).exit_code == 0
    registry.load_all()
    assert registry.versions(MODEL) == ["2"]
    assert [p.parent.name for p in (tmp_path / "a-cache").glob(f"*/{MODEL}/*/manifest.json")] == ["2"]


def test_the_cache_size_limit_refuses_a_version_that_does_not_fit(tmp_path, store):
    app = instance(tmp_path, store.as_uri(), "a", MODEL_CACHE_MAX_BYTES=1000)
    registry = app.extensions["model_registry"]
    registry.load_all()
    assert "model cache is full" in registry.refused[f"{MODEL}/2"]
    assert app.test_client().get("/health/ready").status_code == 503


@pytest.mark.parametrize("name", [".", "..", "...", "-rf", "_x", ".hidden"])
def test_model_names_that_are_paths_or_options_are_refused_before_anything_is_written(tmp_path, name):
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}", "MODEL_DIR": str(model_dir)})
    result = app.test_cli_runner().invoke(args=["models", "add", "--", name, str(wine_model(tmp_path / "w.skops"))])
    assert result.exit_code != 0 and "must be 1-64 letters" in result.output
    assert not any(tmp_path.rglob("manifest.json")) and not any(model_dir.iterdir())


def test_the_deployment_guide_s_store_commands_run_as_printed(tmp_path):
    from tests.conftest import run_try_it_block

    store = Path("/tmp/modelserve-store")
    shutil.rmtree(store, ignore_errors=True)
    try:
        done = run_try_it_block("deployment.md")
        assert "review_sentiment v" in done.stdout and "published to file:///tmp/modelserve-store" in done.stdout
        assert re.search(r"review_sentiment\s+v\d+\s+ok .*production", done.stdout), done.stdout
        assert (store / "review_sentiment" / "aliases.json").exists()
    finally:
        shutil.rmtree(store, ignore_errors=True)


def test_online_learning_publishes_and_promotes_in_the_store(tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    url = root.as_uri()
    old = committed_version("review_sentiment")
    new = str(int(old) + 1)
    publisher = instance(tmp_path, url, "publisher", MODELS="review_sentiment")
    assert publisher.test_cli_runner().invoke(args=["models", "publish", str(SAVED_MODELS),
                                                    "--model", "review_sentiment"]).exit_code == 0
    app = instance(tmp_path, url, "learner", MODELS="review_sentiment")
    client = app.test_client()
    review = "An uneven film, though I keep thinking about it."
    for user in range(30):
        assert client.post("/review/feedback", data={"review": review, "label": "negative"},
                           environ_base={"REMOTE_ADDR": f"10.0.0.{user}"}).status_code == 201
    learned = app.test_cli_runner().invoke(args=["feedback", "learn", "--data", str(tmp_path / "no-data"), "--promote"])
    assert learned.exit_code == 0, learned.output
    assert (root / "review_sentiment" / new / "manifest.json").exists()
    assert json.loads((root / "review_sentiment" / "aliases.json").read_text())["aliases"]["production"] == new
    other = instance(tmp_path, url, "other", MODELS="review_sentiment")
    other.extensions["model_registry"].load_all()
    answer = other.test_client().post("/review", data={"review": review}).get_json()
    assert answer["model"]["version"] == new


def test_the_watcher_of_a_local_folder_reloads_only_when_it_changed(tmp_path):
    local = tmp_path / "models"
    add_version(local, MODEL, "1")
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}", "MODEL_DIR": str(local)})
    registry = app.extensions["model_registry"]
    registry.load_all()
    watcher = StoreWatcher(registry, 10)
    assert watcher.poll() is False and watcher.poll() is False
    add_version(local, MODEL, "2")
    assert watcher.poll() is True and registry.versions(MODEL) == ["1", "2"]
    assert watcher.poll() is False
    app.extensions["model_registry"].store.request_reload()  # `flask models reload`
    assert watcher.poll() is True and watcher.poll() is False
