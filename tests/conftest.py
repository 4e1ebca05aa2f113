"""Shared fixtures: app, client, runner, the real data folder, a private model folder."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app import create_app
from app.config import PROJECT_ROOT

SAVED_MODELS = PROJECT_ROOT / "saved_models"
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture
def app(tmp_path):
    """An app on a fresh SQLite file, serving the committed models."""
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'test.db'}"})
    yield app
    app.extensions["db_engine"].dispose()


@pytest.fixture
def client(app):
    """A test client for the app."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """A runner for the app's `flask` CLI commands."""
    return app.test_cli_runner()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data sets; the tests that use them must not silently pass without them."""
    if not (SHARED_DATA / "imdb" / "test.csv.gz").exists():
        pytest.fail(f"real data not found at {SHARED_DATA}; the test suite needs ../shared/data")
    return SHARED_DATA


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A private copy of saved_models/ that a test may change."""
    target = tmp_path / "saved_models"
    shutil.copytree(SAVED_MODELS, target, ignore=shutil.ignore_patterns(".staging-*"))
    return target


@pytest.fixture
def app_with_model_dir(tmp_path, model_dir):
    """An app serving from the private model folder."""
    app = create_app({
        "TESTING": True,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'test.db'}",
        "MODEL_DIR": str(model_dir),
    })
    yield app
    app.extensions["db_engine"].dispose()
