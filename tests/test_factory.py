"""The app factory, configuration sources and the JSON error handler."""
from app import create_app
from tests.conftest import committed_version


def test_defaults_use_embedded_sqlite_and_committed_models():
    app = create_app()
    assert app.settings.database_url.startswith("sqlite:///")
    assert app.settings.model_dir.name == "saved_models"
    assert not app.testing


def test_prefixed_environment_overrides_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("MODELSERVE_MAX_TEXT_CHARS", "123")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    app = create_app()
    assert app.settings.max_text_chars == 123  # typed: an int
    assert app.settings.database_url.endswith("env.db")


def test_test_config_wins_over_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MODELSERVE_MAX_TEXT_CHARS", "123")
    app = create_app({"MAX_TEXT_CHARS": 7, "DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}"})
    assert app.settings.max_text_chars == 7


def test_unknown_url_is_json_404(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert response.is_json and "error" in response.json


def test_wrong_method_is_json_405(client):
    response = client.delete("/review")
    assert response.status_code == 405
    assert response.is_json and "error" in response.json
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "POST"}


def test_unexpected_exception_is_json_500_without_traceback(app):
    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internal detail")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.json == {"error": "internal server error"}
    assert b"secret" not in response.data and b"Traceback" not in response.data


def test_health_endpoints(client):
    assert client.get("/health/live").json == {"live": True}
    client.application.extensions["model_registry"].load_all()
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert f"review_sentiment/{committed_version('review_sentiment')}" in ready.json["models"]


def test_not_ready_before_models_are_loaded(client):
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json["ready"] is False
