"""Property-based fuzzing of every documented operation (schemathesis, from /openapi.json).

Checks: no 5xx for any generated input, responses match their documented
schemas and content types. The battery runs against both job stores (SQLite and
PostgreSQL: some bad inputs only fail on one of them), with the worker token
presented, so that generated requests reach the worker endpoints' own checks.
"""
import shutil
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance

from app import create_app
from tests.conftest import POSTGRES_URL, SAVED_MODELS

TOKEN = "fuzz-worker-token"
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def fuzz_app(database_url: str):
    """The app under fuzzing: a copy of the committed models (the repository's unload may change its
    folder), any job model accepted, short long polls."""
    models = Path(tempfile.mkdtemp()) / "saved_models"
    shutil.copytree(SAVED_MODELS, models, ignore=shutil.ignore_patterns(".staging-*"))
    # Long polls are capped at 1 s: a generated `wait` must not stall the run for 20 s per case.
    app = create_app({"TESTING": True, "DATABASE_URL": database_url, "MODEL_DIR": str(models),
                      "JOB_MAX_WAIT_SECONDS": 1, "WORKER_TOKEN": TOKEN, "WORKER_MODELS": "*"})
    app.extensions["model_registry"].load_all()
    return app


SQLITE = schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app(f"sqlite:///{Path(tempfile.mkdtemp()) / 'fuzz.db'}"))
POSTGRES = schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app(POSTGRES_URL))


@SQLITE.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_survives_generated_input_sqlite(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)


@POSTGRES.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_survives_generated_input_postgresql(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)
