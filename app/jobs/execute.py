"""Running one job's payload through a model (the built-in worker), and checking it at submission."""
from __future__ import annotations

from app.codecs.instances import instances_to_inputs
from app.codecs.strict_json import strict_loads
from app.errors import APIError, BadRequest
from app.models.base import Model
from app.models.runner import Runner


class JobInputError(ValueError):
    """The payload cannot be used by the model; retrying will not help."""


def takes_raw_bytes(model: Model) -> bool:
    """Whether a job payload is the model's one input itself (a text or a file)."""
    return len(model.inputs) == 1 and model.inputs[0].datatype == "BYTES"


def job_inputs(model: Model, payload: bytes) -> tuple[dict, bool]:
    """(inputs, several): a text/file payload is one item; other models take JSON, one
    instance or {"instances": [...]}."""
    if takes_raw_bytes(model):
        return {model.inputs[0].name: [payload]}, False
    try:
        document = strict_loads(payload)  # bounded nesting: "[" * 5000 is a 400, not a RecursionError
    except ValueError:
        raise BadRequest(f"model {model.name!r} takes a JSON payload: one instance, or {{\"instances\": [...]}}") from None
    if isinstance(document, dict) and "instances" in document:
        return instances_to_inputs(model, document["instances"]), True
    return instances_to_inputs(model, [document]), False


def validate_payload(model: Model, payload: bytes) -> None:
    """Apply the model's input checks to a job payload (the same 4xx as a direct request)."""
    model.decode(job_inputs(model, payload)[0])


def execute(runner: Runner, payload: bytes, explain: bool = True) -> dict:
    """The JSON result of one job: the prediction(s), the model, and an explanation where the runtime has one.
    Not logged here: the server logs the answer when the worker posts it."""
    model = runner.model
    try:
        inputs, several = job_inputs(model, payload)
        rows = runner.serve(inputs, explain=explain).rows
    except APIError as exc:
        if exc.status >= 500:  # the model could not answer now (a Python model's timeout): worth a retry
            raise
        raise JobInputError(exc.message) from exc  # the payload itself: retrying will not help
    reference = model.reference()
    return {"predictions": rows, "model": reference} if several else {**rows[0], "model": reference}
