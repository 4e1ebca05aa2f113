"""Movie-review sentiment: POST /review, POST /review/feedback."""
from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, url_for

from app.admission import admitted
from app.api import registry
from app.api.inputs import request_fields, string_field
from app.api.predict import sentiment_body
from app.db import get_engine, review_feedback
from app.errors import BadRequest

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
@admitted
def classify_review():
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
    model = registry().get(REVIEW_MODEL)
    return sentiment_body(model, model.run([review])[0])


@bp.post("/feedback")
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
    """
    fields = request_fields()
    review = string_field(fields, "review")
    model = registry().get(REVIEW_MODEL)
    model.decode({model.inputs[0].name: [review]})  # the model's own checks: empty 422, too long 413
    label = fields.get("label")
    if label not in ("positive", "negative"):
        raise BadRequest("field 'label' must be 'positive' or 'negative'")
    with get_engine().begin() as conn:
        row_id = conn.execute(
            sa.insert(review_feedback).values(review=review, label=label, model=REVIEW_MODEL)
        ).inserted_primary_key[0]
    return {"id": row_id, "stored": True, "label": label}, 201
