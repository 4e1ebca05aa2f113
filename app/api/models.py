"""Every registered model with no per-model code: GET /models, GET /models/NAME, POST /models/NAME/predict,
GET /models/NAME/monitoring, POST /models/NAME/feedback."""
from __future__ import annotations

import datetime as dt

from flask import Blueprint, current_app, request

from app.admission import admitted
from app.models.batching import Admission
from app.api import registry
from app.api.inputs import request_fields
from app.auth import client_label
from app.codecs.instances import instances_to_inputs
from app.database import aware
from app.db import get_engine
from app.errors import BadRequest, Conflict, NotFound, ServiceUnavailable, UnsupportedMediaType
from app.endpoints import uses_database

bp = Blueprint("models", __name__, url_prefix="/models")


@bp.get("")
def list_models():
    """Every servable model: its versions and aliases, and the default version's description.
    ---
    get:
      summary: List the models
      tags: [models]
      responses:
        200:
          description: models
          content:
            application/json:
              schema:
                type: object
                properties:
                  models: {type: array, items: {$ref: "#/components/schemas/ModelDescription"}}
                  refused: {type: object, additionalProperties: {type: string}}
    """
    reg = registry()
    models = [{**reg.get(name).describe(), **versions_of(name)} for name in reg.names()]
    return {"models": models, "refused": reg.refused}


def versions_of(name: str) -> dict:
    """A model's servable versions, its aliases and the version a request without one gets."""
    reg = registry()
    return {"versions": reg.versions(name), "aliases": reg.aliases.get(name, {}),
            "default_version": reg.default_version(name)}


@bp.get("/<name>")
@bp.get("/<name>/versions/<version>")
def describe_model(name: str, version: str | None = None):
    """One model (version): inputs, outputs, labels, metrics.
    ---
    get:
      summary: Describe a model
      tags: [models]
      responses:
        200:
          description: the model
          content: {application/json: {schema: {$ref: "#/components/schemas/ModelDescription"}}}
    """
    model = registry().get(name, version)
    return {**model.describe(), **versions_of(model.name)}


@bp.post("/<name>/predict")
@bp.post("/<name>/versions/<version>/predict")
@admitted(lambda kwargs: kwargs["name"])
def predict(admission: Admission, name: str, version: str | None = None):
    """Predictions for {"instances": [...]}: one per item (a text, a list of numbers, or {"b64": file}).
    ---
    post:
      summary: Predict with any model (plain JSON)
      tags: [models]
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [instances]
              properties:
                instances:
                  type: array
                  minItems: 1
                  items: {description: "a text, a list of numbers, {\\"b64\\": \\"...\\"}, or an object keyed by input name"}
      responses:
        200:
          description: one prediction per instance
          content:
            application/json:
              schema:
                type: object
                required: [predictions, model]
                properties:
                  predictions: {type: array, items: {type: object, additionalProperties: true}}
                  model: {$ref: "#/components/schemas/ModelRef"}
    """
    runner = registry().runner(name, version)
    model = runner.model
    if request.mimetype != "application/json":
        raise UnsupportedMediaType('send application/json: {"instances": [...]}')
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or "instances" not in body:
        raise BadRequest('body must be a JSON object {"instances": [...]}')
    rows = runner.serve(instances_to_inputs(model, body["instances"]), protocol="rest", admission=admission).rows
    return {"predictions": rows, "model": model.reference()}


@bp.get("/<name>/monitoring")
@bp.get("/<name>/versions/<version>/monitoring")
@uses_database
def monitoring(name: str, version: str | None = None):
    """How the model (version) does in production: requests, latency, drift, live accuracy.
    ---
    get:
      summary: Monitoring of a model in production
      description: The last `last` logged requests (default 1,000), or those since `since`; drift is the population
        stability index of each input feature and of the predictions against the version's reference profile
        (drifted above 0.2); accuracy joins user feedback with the logged answers.
      tags: [models]
      parameters:
        - {in: query, name: last, schema: {type: integer, minimum: 1, maximum: 100000}}
        - {in: query, name: since, schema: {type: string, format: date-time}}
      responses:
        200:
          description: the monitoring summary
          content: {application/json: {schema: {type: object, additionalProperties: true}}}
    """
    from app.monitoring.report import monitoring_report

    log = prediction_log()
    model = registry().get(name, version)
    last, since = request.args.get("last"), request.args.get("since")
    if last is not None and not (last.isdigit() and 1 <= int(last) <= 100_000):
        raise BadRequest("'last' must be a whole number from 1 to 100000")
    try:
        moment = aware(dt.datetime.fromisoformat(since)) if since else None
    except ValueError:
        raise BadRequest("'since' must be an ISO 8601 time, e.g. 2026-12-01T00:00:00+00:00") from None
    return monitoring_report(log, model, int(last) if last else None, moment)


def prediction_log():
    """The app's prediction log; 503 when it is off."""
    log = current_app.extensions.get("prediction_log")
    if log is None:
        raise ServiceUnavailable("the prediction log is off (MODELSERVE_MONITOR=false)")
    return log


@bp.post("/<name>/feedback")
@uses_database
def feedback(name: str):
    """The true label of an earlier answer, named by the request id it came with (its X-Request-ID header;
    a job's id for a job's answer) and its item in that request (default 0).
    ---
    post:
      summary: Send the true label of an answer (live accuracy)
      description: Joined with the logged answer, this gives each version's accuracy on real traffic
        (GET /models/NAME/monitoring). One label per answer; the same again is a 200, another label a 409.
      tags: [models]
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [request_id, label]
              properties:
                request_id: {type: string, description: "the X-Request-ID of the answer's response, or the job id"}
                item: {type: integer, minimum: 0, default: 0, description: the item's place in that request}
                label: {type: string, description: the true label}
      responses:
        201:
          description: stored
          content: {application/json: {schema: {$ref: "#/components/schemas/AnswerFeedback"}}}
        200:
          description: the same label was stored for this answer before; not stored again
          content: {application/json: {schema: {$ref: "#/components/schemas/AnswerFeedback"}}}
    """
    from app.monitoring.feedback import AnswerLabelledOtherwise, logged_answer, store_feedback

    log = prediction_log()
    model = registry().get(name)
    fields = request_fields()
    request_id, item, label = fields.get("request_id"), fields.get("item", 0), fields.get("label")
    if not isinstance(request_id, str) or not 1 <= len(request_id) <= 128:
        raise BadRequest("field 'request_id' must be the request id of an answer (1 to 128 characters)")
    if isinstance(item, str) and item.isdigit():
        item = int(item)
    if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item < 1_000_000:
        raise BadRequest("field 'item' must be a whole number from 0 (the item's place in its request)")
    if not model.labels:
        raise BadRequest(f"model {name!r} answers no labels: its answers cannot be labelled")
    if label not in model.labels:
        raise BadRequest(f"field 'label' must be one of {list(model.labels)}")
    answered = logged_answer(log.sink, name, request_id, item)
    if answered is None and log.unwritten():  # answered a moment ago: its record may still be queued
        log.flush(1.0)
        answered = logged_answer(log.sink, name, request_id, item)
    if answered is None:
        raise NotFound(f"no logged answer of {name!r} to item {item} of request {request_id!r} (answers are "
                       "logged a second or two after they are given, and only those the sample rate keeps)")
    try:
        row_id, created = store_feedback(get_engine(), name, request_id, item, label, client_label())
    except AnswerLabelledOtherwise as exc:
        raise Conflict(str(exc)) from None
    body = {"id": row_id, "stored": created, "request_id": request_id, "item": item, "label": label,
            "answered": {**answered, "correct": answered["label"] == label}}
    return body, 201 if created else 200
