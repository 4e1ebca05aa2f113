"""Settings are typed and checked at start-up: secrets stay strings, unusable values stop the server with a
clear message, gunicorn and the pull worker read the same object, and the docs' table is the settings' own."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from app import create_app
from app.config import PROJECT_ROOT, Settings, SettingsError, load_settings, settings_table


def test_numeric_looking_token_stays_a_string(monkeypatch, tmp_path):
    monkeypatch.setenv("MODELSERVE_WORKER_TOKEN", "12345678")
    monkeypatch.setenv("MODELSERVE_API_KEYS", "null")
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'db'}"})
    assert app.settings.worker_token == "12345678" and app.settings.api_keys == ("null",)
    client = app.test_client()
    assert client.post("/jobs/lease", json={"wait": 0}).status_code == 401  # "null" did not turn auth off
    assert client.post("/jobs/lease", json={"wait": 0}, headers={"Authorization": "Bearer 12345678"}).status_code == 204
    app.extensions["db_engine"].dispose()


@pytest.mark.parametrize("variable, value", [
    ("MODELSERVE_MAX_TEXT_CHARS", "abc"), ("MODELSERVE_MAX_BATCH", "0"), ("MODELSERVE_ONNX_THREADS", "true"),
    ("MODELSERVE_REQUEST_DEADLINE_SECONDS", "-1"), ("MODELSERVE_LOG_FORMAT", "xml"),
    # the settings that used to pass unchecked and fail later, on a request or never
    ("DATABASE_URL", "not a url"), ("MODELSERVE_LOG_LEVEL", "loud"), ("MODELSERVE_RATELIMIT_STORAGE_URI", "ftp://host"),
    ("MODELSERVE_RATELIMIT_DEFAULT", "lots"), ("MODELSERVE_MODEL_DIR", " "), ("MODELSERVE_DATA_DIR", ""),
    ("MODELSERVE_MONITOR_PAYLOADS", "review_sentiment:2"), ("MODELSERVE_MONITOR_SAMPLE_RATE", "1.5"),
    ("MODELSERVE_BATCHING", "[1]"), ("MODELSERVE_MODEL_STORE", "ftp://bucket"), ("MODELSERVE_AUTO_MIGRATE", "maybe"),
    # and gunicorn's, read from the same object
    ("PORT", "http"), ("WEB_CONCURRENCY", "0"), ("GUNICORN_THREADS", "-4"), ("MODELSERVE_PRELOAD", "sometimes")])
def test_unusable_setting_stops_the_start_with_its_name(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable) as refused:
        create_app({"TESTING": True})
    assert len(str(refused.value).split("; ")) == 1  # that setting alone


def test_settings_are_typed_from_the_environment(monkeypatch):
    monkeypatch.setenv("MODELSERVE_MODELS", " review_sentiment, iris_svc,")
    monkeypatch.setenv("MODELSERVE_MONITOR_PAYLOADS", "review_sentiment:0.1,malaria_cell")
    monkeypatch.setenv("MODELSERVE_BATCHING", json.dumps({"review_sentiment": {"max_batch_size": 1}}))
    monkeypatch.setenv("MODELSERVE_OPEN_WORKER_ENDPOINTS", "true")
    monkeypatch.setenv("MODELSERVE_LOG_LEVEL", "debug")
    monkeypatch.setenv("MODELSERVE_DATABASE_URL", "sqlite:///prefixed.db")
    monkeypatch.setenv("DATABASE_URL", "sqlite:///conventional.db")
    settings = load_settings({"MAX_BATCH": 3})
    assert settings.served_model_names() == {"review_sentiment", "iris_svc"}
    assert settings.monitor_payloads == {"review_sentiment": 0.1, "malaria_cell": 1.0}
    assert settings.batching == {"review_sentiment": {"max_batch_size": 1}}
    assert settings.open_worker_endpoints is True and settings.log_level == "DEBUG" and settings.max_batch == 3
    assert settings.database_url == "sqlite:///prefixed.db"  # the prefixed name wins over the platform's
    with pytest.raises(Exception):
        settings.max_batch = 4  # built once: nothing changes it behind the app's back


def test_a_misspelt_override_is_refused():
    with pytest.raises(SettingsError, match="max_bach"):
        load_settings({"MAX_BACH": 3})


def test_every_setting_is_documented_and_the_docs_table_is_generated():
    assert all(info.description for info in Settings.model_fields.values())
    page = (PROJECT_ROOT / "docs" / "configuration.md").read_text()
    assert settings_table() in page, "docs/configuration.md is behind app/config.py: paste `python -m app.config`"
    printed = subprocess.run([sys.executable, "-m", "app.config"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             check=True).stdout
    assert printed == settings_table()


def gunicorn_config(**environment) -> subprocess.CompletedProcess:
    """gunicorn.conf.py read the way gunicorn reads it, in a process of its own (it patches gunicorn)."""
    script = ("import json, runpy; c = runpy.run_path('gunicorn.conf.py'); "
              "print(json.dumps({k: c[k] for k in ('bind', 'workers', 'threads', 'timeout', 'max_requests', "
              "'pidfile', 'accesslog')}))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSERVE_")} | environment
    return subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)


def test_gunicorn_reads_the_same_settings(tmp_path):
    read = gunicorn_config(PORT="9123", HOST="127.0.0.1", WEB_CONCURRENCY="3", GUNICORN_THREADS="7",
                           GUNICORN_TIMEOUT="11", GUNICORN_MAX_REQUESTS="50", GUNICORN_PIDFILE=str(tmp_path / "g.pid"))
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout) == {"bind": "127.0.0.1:9123", "workers": 3, "threads": 7, "timeout": 11,
                                       "max_requests": 50, "pidfile": str(tmp_path / "g.pid"), "accesslog": None}
    refused = gunicorn_config(MODELSERVE_MAX_BATCH="none")
    assert refused.returncode != 0 and "MODELSERVE_MAX_BATCH='none'" in refused.stderr


def test_the_pull_worker_reads_the_same_settings(monkeypatch, tmp_path):
    from app.worker import main

    monkeypatch.setenv("MODELSERVE_ONNX_THREADS", "zero")
    with pytest.raises(SettingsError, match="MODELSERVE_ONNX_THREADS"):
        main(["--server", "http://127.0.0.1:9", "--model-dir", str(tmp_path), "--max-jobs", "0"])


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
