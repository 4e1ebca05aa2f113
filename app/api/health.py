"""Liveness and readiness."""
from __future__ import annotations

from flask import Blueprint, current_app

from app.auth import api_keys, client_id
from app.endpoints import public

bp = Blueprint("health", __name__)


@bp.get("/health/live")
@public
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
@public
def ready():
    """200 when this worker can serve at all; 503 while loading or with no model (shedding is only reported).
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
    body = readiness()
    status = 200 if body["ready"] else 503
    if api_keys() and client_id() is None:  # which models serve, and why others are refused, is for key holders
        return {key: body[key] for key in ("ready", "loading", "overloaded")}, status
    return body, status


def readiness() -> dict:
    """The one readiness rule, shared by /health/ready and /v2/health/ready.

    Ready means: models have been loaded (and warmed up) and at least one of them can
    serve. Shedding load is reported ("overloaded") but does not make the worker unready:
    a spike would otherwise take every pod out of a Kubernetes Service at once, and the
    load would land on whatever is left; requests are shed one by one instead, with 503
    and Retry-After (app/admission.py). A refused model version is listed
    but does not make the server unready: the others still serve, and the refusal is
    visible here, in the log and in that model's own /v2/models/<name>/ready. The
    database's state is what the last request that used it found.
    """
    registry = current_app.extensions["model_registry"]
    models = [f"{m.name}/{m.version}" for m in registry.all_models() if m.ready] if registry.loaded else []
    overloaded = current_app.extensions["admission_gate"].overloaded
    # The database and the model store are reported, not required: inference never touches either,
    # so an outage must not take a worker that has its models out of the load balancer.
    body = {"ready": registry.loaded and bool(models), "loading": not registry.loaded,
            "overloaded": overloaded, "models": models, "refused": registry.refused,
            "database": current_app.extensions["db_state"], "model_store": registry.store.state}
    if registry.store.problem:
        body["model_store_problem"] = registry.store.problem
    return body
