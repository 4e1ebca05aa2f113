"""Text models chosen by name: GET /predict lists them, POST /predict runs one."""
from __future__ import annotations

from flask import Blueprint, current_app

from app.admission import admitted
from app.api.inputs import request_fields, string_field
from app.errors import BadRequest, ModelNotFound
from app.models.batching import Admission
from app.models.runner import items_of

bp = Blueprint("predict", __name__, url_prefix="/predict")

DEFAULT_MODEL = "logistic_regression"
NO_PROBABILITY_NOTE = ("this model has no probabilities; decision_score is its signed distance from the "
                       "separating hyperplane (> 0 means positive), not a calibrated probability")


def text_models() -> dict:
    """The runner of the default version of every loaded text-classification model, by name."""
    registry = current_app.extensions["model_registry"]
    runners = {}
    for name in registry.names():
        runner = registry.runner(name)
        if runner.model.manifest.task == "text-classification":
            runners[name] = runner
    return runners


def requested_model() -> str:
    """The model the request names in its `model` field (the default when it names none)."""
    name = request_fields().get("model") or DEFAULT_MODEL
    if not isinstance(name, str):
        raise BadRequest("field 'model' must be a string")
    return name


@bp.get("")
def welcome():
    """A welcome message and the models that can be named.
    ---
    get:
      summary: List the text models that POST /predict can use
      tags: [predict]
      responses:
        200:
          description: welcome and models
          content:
            application/json:
              schema:
                type: object
                properties:
                  message: {type: string}
                  default_model: {type: string}
                  models: {type: array, items: {type: object, additionalProperties: true}}
    """
    models = text_models()
    return {
        "message": "Welcome! POST a review as JSON {\"review\": \"...\", \"model\": \"<name>\"} to get its sentiment.",
        "default_model": DEFAULT_MODEL,
        "models": [
            {"name": m.name, "version": m.version, "description": m.manifest.description,
             "test_accuracy": m.manifest.metrics.get("accuracy"),
             "reports": "probability_positive" if "probabilities" in m.output_names else "decision_score"}
            for m in (runner.model for runner in models.values())
        ],
    }


@bp.post("")
@admitted(lambda _: requested_model())
def predict(admission: Admission):
    """Sentiment of `review` by the model named in `model` (logistic regression by default).
    ---
    post:
      summary: Sentiment by a named model
      tags: [predict]
      requestBody:
        required: true
        content:
          application/json: {schema: {$ref: "#/components/schemas/PredictInput"}}
          application/x-www-form-urlencoded: {schema: {$ref: "#/components/schemas/PredictInput"}}
      responses:
        200:
          description: prediction (probability_positive, or decision_score and a note)
          content:
            application/json:
              schema:
                type: object
                required: [label, model]
                properties:
                  label: {type: string, enum: [positive, negative]}
                  model: {$ref: "#/components/schemas/ModelRef"}
                  probability_positive: {type: number}
                  decision_score: {type: number}
                  note: {type: string}
    """
    review = string_field(request_fields(), "review")
    name = requested_model()
    models = text_models()
    if name not in models:
        raise ModelNotFound(f"unknown model {name!r}", available=sorted(models))
    runner = models[name]
    answer = runner.serve(items_of(runner.model, [review]), protocol="rest", admission=admission)
    return sentiment_body(runner.model, answer.rows[0])


def sentiment_body(model, prediction: dict) -> dict:
    """label plus probability_positive, or the decision score and a note (never an invented probability)."""
    body = {"label": prediction["label"], "model": model.reference()}
    if "probabilities" in prediction:
        body["probability_positive"] = prediction["probabilities"]["positive"]
    else:
        body["decision_score"] = prediction["decision_score"]
        body["note"] = NO_PROBABILITY_NOTE
    return body
