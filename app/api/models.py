"""Every registered model with no per-model code: GET /models, GET /models/NAME, POST /models/NAME/predict."""
from __future__ import annotations

from flask import Blueprint, request

from app.admission import admitted
from app.api import registry
from app.codecs.instances import instances_to_inputs
from app.errors import BadRequest, UnsupportedMediaType

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
def predict(name: str, version: str | None = None):
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
    model = registry().get(name, version)
    if request.mimetype != "application/json":
        raise UnsupportedMediaType('send application/json: {"instances": [...]}')
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or "instances" not in body:
        raise BadRequest('body must be a JSON object {"instances": [...]}')
    rows = model.postprocess(model.infer(instances_to_inputs(model, body["instances"])))
    return {"predictions": rows, "model": model.reference()}
