"""Movie-review sentiment: POST /review, POST /review/feedback."""
from __future__ import annotations

from flask import Blueprint, url_for

from app.admission import admitted
from app.models.batching import Admission
from app.models.runner import items_of
from app.api import registry
from app.api.inputs import checked_text, idempotency_key, request_fields, string_field
from app.api.predict import sentiment_body
from app.auth import client_label
from app.errors import BadRequest, Unprocessable
from app.feedback import KeyReused, feedback_store
from app.endpoints import uses_database

bp = Blueprint("review", __name__, url_prefix="/review")

REVIEW_MODEL = "review_sentiment"



@bp.get("")
def describe():
    """What the endpoint takes and returns, and the model behind it.
    ---
    get:
      summary: Describe the review endpoint and its model
      tags: [review]
      responses:
        200:
          description: description
          content: {application/json: {schema: {$ref: "#/components/schemas/ModelDescription"}}}
    """
    model = registry().get(REVIEW_MODEL)
    return {
        "endpoint": "POST /review",
        "accepts": "form field `review`, or JSON {\"review\": \"...\"}",
        "returns": {"label": "positive | negative", "probability_positive": "0..1 (or decision_score and a note "
                    "for a model without probabilities)", "model": "{name, version}"},
        "feedback": f"POST {url_for('review.feedback')} with `review` and `label` (positive | negative)",
        "model": model.describe(),
    }


@bp.post("")
@admitted(lambda _: REVIEW_MODEL)
def classify_review(admission: Admission):
    """Predict the sentiment of one review.
    ---
    post:
      summary: Sentiment of one movie review
      tags: [review]
      requestBody:
        required: true
        content:
          application/x-www-form-urlencoded: {schema: {$ref: "#/components/schemas/ReviewInput"}}
          multipart/form-data: {schema: {$ref: "#/components/schemas/ReviewInput"}}
          application/json: {schema: {$ref: "#/components/schemas/ReviewInput"}}
      responses:
        200:
          description: prediction
          content:
            application/json:
              schema:
                type: object
                required: [label, model]
                properties:
                  label: {type: string, enum: [positive, negative]}
                  probability_positive: {type: number, minimum: 0, maximum: 1}
                  decision_score: {type: number}
                  note: {type: string}
                  model: {$ref: "#/components/schemas/ModelRef"}
    """
    review = string_field(request_fields(), "review")
    runner = registry().runner(REVIEW_MODEL)
    answer = runner.serve(items_of(runner.model, [review]), protocol="rest", admission=admission)
    return sentiment_body(runner.model, answer.rows[0])


@bp.post("/feedback")
@uses_database
def feedback():
    """Store a review with its correct label, for `flask feedback learn`.
    ---
    post:
      summary: Store the correct label of a review (online learning)
      tags: [review]
      requestBody:
        required: true
        content:
          application/x-www-form-urlencoded: {schema: {$ref: "#/components/schemas/FeedbackInput"}}
          multipart/form-data: {schema: {$ref: "#/components/schemas/FeedbackInput"}}
          application/json: {schema: {$ref: "#/components/schemas/FeedbackInput"}}
      responses:
        201:
          description: stored
          content:
            application/json:
              schema:
                type: object
                properties: {id: {type: integer}, stored: {type: boolean}, label: {type: string}}
        200:
          description: the same feedback (or Idempotency-Key) from this client was stored before; not stored again
          content:
            application/json:
              schema:
                type: object
                properties: {id: {type: integer}, stored: {type: boolean}, duplicate: {type: boolean}, label: {type: string}}
    """
    fields = request_fields()
    review = checked_text(string_field(fields, "review"), "field 'review'")
    model = registry().get(REVIEW_MODEL)
    model.decode({model.inputs[0].name: [review]})  # the model's own checks: empty 422, too long 413
    label = fields.get("label")
    if label not in ("positive", "negative"):
        raise BadRequest("field 'label' must be 'positive' or 'negative'")
    answered_by = fields.get("version") or model.version
    if not isinstance(answered_by, str) or answered_by not in registry().versions(REVIEW_MODEL):
        raise BadRequest(f"field 'version' must be a version of {REVIEW_MODEL}: {registry().versions(REVIEW_MODEL)}")
    row_id, created = store_feedback(review, label, answered_by)
    if not created:
        return {"id": row_id, "stored": False, "duplicate": True, "label": label}, 200
    return {"id": row_id, "stored": True, "label": label}, 201


def store_feedback(review: str, label: str, answered_by: str) -> tuple[int, bool]:
    """Store one feedback row once (a client's repeat gives the earlier row's id); returns (id, created)."""
    client = client_label()
    try:
        return feedback_store().store(REVIEW_MODEL, review, label, answered_by, client, idempotency_key(client))
    except KeyReused as exc:
        raise Unprocessable(str(exc)) from None
