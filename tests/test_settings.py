"""Settings are checked at start-up: secrets stay strings, unusable values stop the server with a clear message."""
from __future__ import annotations

import pytest

from app import create_app
from app.config import SettingsError


def test_numeric_looking_token_stays_a_string(monkeypatch, tmp_path):
    monkeypatch.setenv("MODELSERVE_WORKER_TOKEN", "12345678")
    monkeypatch.setenv("MODELSERVE_API_KEYS", "null")
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'db'}"})
    assert app.config["WORKER_TOKEN"] == "12345678" and app.config["API_KEYS"] == "null"
    client = app.test_client()
    assert client.post("/jobs/lease", json={"wait": 0}).status_code == 401  # "null" did not turn auth off
    assert client.post("/jobs/lease", json={"wait": 0}, headers={"Authorization": "Bearer 12345678"}).status_code == 204
    app.extensions["db_engine"].dispose()


@pytest.mark.parametrize("name, value", [("MAX_TEXT_CHARS", "abc"), ("MAX_BATCH", "0"), ("ONNX_THREADS", "true"),
                                         ("REQUEST_DEADLINE_SECONDS", "-1"), ("LOG_FORMAT", "xml")])
def test_unusable_setting_stops_the_start_with_its_name(monkeypatch, name, value):
    monkeypatch.setenv(f"MODELSERVE_{name}", value)
    with pytest.raises(SettingsError, match=f"MODELSERVE_{name}"):
        create_app({"TESTING": True})


def test_model_name_typo_is_logged(model_dir, caplog):
    import logging

    from app.models.registry import ModelRegistry

    registry = ModelRegistry(model_dir, {"review_sentimnet"})
    log = logging.getLogger("app.models.registry")
    log.addHandler(caplog.handler)
    try:
        registry.load_all()
    finally:
        log.removeHandler(caplog.handler)
    assert "'review_sentimnet' named in the MODELS setting has no version" in caplog.text
