"""Malaria cell classification: POST /classify (multipart field `image`)."""
from __future__ import annotations

from flask import Blueprint, current_app, request

from app.admission import admitted
from app.models.batching import Admission
from app.models.runner import items_of
from app.api import registry
from app.errors import BadRequest, UnsupportedMediaType

bp = Blueprint("classify", __name__, url_prefix="/classify")

CELL_MODEL = "malaria_cell"



def image_from_request() -> bytes:
    """The bytes of the uploaded `image` file (the model decodes and checks them), or a 4xx APIError."""
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaType(
            f"send the image as multipart/form-data with the field 'image' (got {request.mimetype or 'no content type'!r})"
        )
    upload = request.files.get("image")
    if upload is None:
        received = sorted({str(k) for k in (*request.files, *request.form) if k})  # a nameless part has key None
        raise BadRequest("missing file field 'image'", received_fields=received)
    return upload.read()


@bp.get("")
def describe():
    """What the endpoint takes and returns, and the model behind it.
    ---
    get:
      summary: Describe the cell classification endpoint and its model
      tags: [classify]
      responses:
        200:
          description: description
          content: {application/json: {schema: {$ref: "#/components/schemas/ModelDescription"}}}
    """
    model = registry().get(CELL_MODEL)
    return {
        "endpoint": "POST /classify",
        "accepts": "multipart/form-data with a PNG or JPEG file in the field `image`",
        "returns": {"label": " | ".join(model.labels), "probabilities": "{label: 0..1}", "model": "{name, version}",
                    "warning": "only for an image that does not look like a cell crop (the answer is then unreliable)"},
        "limits": {"max_bytes": current_app.settings.max_content_length,
                   "max_pixels": current_app.settings.max_image_pixels},
        "model": model.describe(),
    }


@bp.post("")
@admitted(lambda _: CELL_MODEL)
def classify_cell(admission: Admission):
    """Classify one thin-smear cell crop as Parasitized or Uninfected.
    ---
    post:
      summary: Classify a malaria cell image
      tags: [classify]
      parameters:
        - in: query
          name: explain
          schema: {type: boolean, default: false}
          description: also return an occlusion heat map (PNG, base64) of where the image drives the answer
      requestBody:
        required: true
        content:
          multipart/form-data:
            schema:
              type: object
              required: [image]
              properties: {image: {type: string, format: binary, description: PNG or JPEG file}}
      responses:
        200:
          description: prediction
          content:
            application/json:
              schema:
                type: object
                required: [label, probabilities, model]
                properties:
                  label: {type: string, enum: [Parasitized, Uninfected]}
                  probabilities: {type: object, additionalProperties: {type: number}}
                  warning:
                    type: string
                    description: only when the image does not look like a thin-smear cell crop (the cell-likeness
                      check); the label and probabilities are then not reliable
                  heatmap_png_base64: {type: string, description: "with ?explain=true: the cell with the heat map, PNG"}
                  heatmap_method: {type: string, description: "with ?explain=true: how the heat map was made"}
                  model: {$ref: "#/components/schemas/ModelRef"}
    """
    runner = registry().runner(CELL_MODEL)
    model = runner.model
    explain = request.args.get("explain", "false").lower() in ("1", "true", "yes")
    answer = runner.serve(items_of(model, [image_from_request()]), explain=explain, protocol="rest", admission=admission)
    prediction = answer.rows[0]
    extra = {key: prediction[key] for key in ("warning", "heatmap_png_base64", "heatmap_method") if key in prediction}
    return {"label": prediction["label"], "probabilities": prediction["probabilities"], **extra,
            "model": model.reference()}
