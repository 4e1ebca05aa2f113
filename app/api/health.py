"""Liveness and readiness."""
from __future__ import annotations

from flask import Blueprint, current_app

bp = Blueprint("health", __name__)


@bp.get("/health/live")
def live():
    """The process answers HTTP.
    ---
    get:
      summary: Liveness
      tags: [health]
      responses:
        200:
          description: alive
          content: {application/json: {schema: {type: object, properties: {live: {type: boolean}}}}}
    """
    return {"live": True}


@bp.get("/health/ready")
def ready():
    """200 once every model is loaded and warmed up; 503 before, or if none could be loaded.
    ---
    get:
      summary: Readiness with the list of loaded and refused models
      tags: [health]
      responses:
        200:
          description: ready
          content: {application/json: {schema: {$ref: "#/components/schemas/Readiness"}}}
        503:
          description: not ready
          content: {application/json: {schema: {$ref: "#/components/schemas/Readiness"}}}
    """
    registry = current_app.extensions["model_registry"]
    models = [f"{m.name}/{m.version}" for m in registry.all_models() if m.ready] if registry.loaded else []
    is_ready = registry.loaded and bool(models)
    body = {"ready": is_ready, "models": models, "refused": registry.refused}
    return body, (200 if is_ready else 503)
