"""Property-based fuzzing of every documented operation (schemathesis, from /openapi.json).

Checks: no 5xx for any generated input, responses match their documented
schemas and content types.
"""
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance

from app import create_app
from tests.conftest import SAVED_MODELS

DB = Path(tempfile.mkdtemp()) / "fuzz.db"
# Long polls are capped at 1 s: a generated `wait` must not stall the run for 20 s per case.
APP = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{DB}", "MODEL_DIR": str(SAVED_MODELS),
                  "JOB_MAX_WAIT_SECONDS": 1})
APP.extensions["model_registry"].load_all()
schema = schemathesis.openapi.from_wsgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_survives_generated_input(case):
    case.call_and_validate(checks=[not_a_server_error, response_schema_conformance, content_type_conformance])
