"""The AzureMLDeploy function-app protocol, mapped onto the same durable job store.

Its Ajax page and notebook worker loop work unchanged with only the host
changed. The page posts JSON text with jQuery's default form content type, so
bodies are parsed as JSON whatever the Content-Type says. Payloads and results
travel as base64 text, as in the original.
"""
from __future__ import annotations

import base64

from flask import Blueprint, Response, current_app, request

from app.api.jobs import JOB_ID, Conflict, enqueue, load_job, store
from app.codecs.base64_text import decode_base64
from app.errors import BadRequest, NotFound
from app.jobs.store import JobNotFound, LeaseConflict
from app.endpoints import for_workers, uses_database

bp = Blueprint("compat", __name__, url_prefix="/api")


def json_body() -> dict:
    """The body as a JSON object regardless of Content-Type ({} when empty)."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    try:
        body = current_app.json.loads(raw)
    except ValueError:  # UnicodeDecodeError is one
        raise BadRequest("body must be JSON text") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def plain(text: str, status: int = 200) -> Response:
    """A plain-text answer, as the original functions gave."""
    return Response(text, status=status, mimetype="text/plain")


@bp.post("/predict_v0")
@uses_database
def predict_v0():
    """Queue a task: JSON {"payload": <base64>} (or ?payload=); answers the task id as text.
    ---
    post:
      summary: AzureMLDeploy compatibility, submit a task
      tags: [compat]
      parameters:
        - {in: query, name: payload, required: false, schema: {type: string}, description: base64 payload}
      requestBody:
        content:
          application/json: {schema: {type: object, properties: {payload: {type: string}}}}
          application/x-www-form-urlencoded: {schema: {type: string, description: JSON text sent with jQuery's default content type}}
      responses:
        200:
          description: the task id
          content: {text/plain: {schema: {type: string}}}
    """
    payload = request.args.get("payload")
    if payload is None:
        payload = json_body().get("payload")
    if payload is None:
        raise BadRequest("send {\"payload\": \"<base64>\"} as the body or ?payload=<base64>")
    data = decode_base64(payload, "'payload'")
    if not data:
        raise BadRequest("the payload is empty")
    job, _ = enqueue(current_app.settings.compat_model, data, "application/octet-stream", source="compat")
    return plain(job["id"])


@bp.post("/getnexttask_v0")
@for_workers
@uses_database
def get_next_task_v0():
    """Lease the next compat task: answers "<task_id>|<base64 payload>", or empty text when none.
    ---
    post:
      summary: AzureMLDeploy compatibility, take the next task (worker)
      tags: [compat]
      responses:
        200:
          description: "'<task_id>|<base64 payload>', or empty when the queue is empty"
          content: {text/plain: {schema: {type: string}}}
    """
    # The original protocol has no heartbeat to acknowledge a lease with: it starts at once.
    lease = store().lease("compat-worker", [current_app.settings.compat_model], 0, acknowledged=True)
    if lease is None:
        return plain("")
    payload = base64.b64encode(lease.job["payload"]).decode("ascii")
    # The original protocol has no lease id, so the task id handed to the worker carries it
    # ("<job id>.<lease id>"); the worker quotes it back unchanged (see put_task_result_v0).
    return plain(f"{lease.job['id']}.{lease.lease_id}|{payload}")


@bp.post("/puttaskresult_v0")
@for_workers
@uses_database
def put_task_result_v0():
    """Store a task's result: JSON {"task_id": ..., "result": <base64>}; answers the task id.
    ---
    post:
      summary: AzureMLDeploy compatibility, post a result (worker)
      tags: [compat]
      requestBody:
        content:
          application/json: {schema: {type: object, required: [task_id, result], properties: {task_id: {type: string}, result: {type: string}}}}
      responses:
        200:
          description: the task id
          content: {text/plain: {schema: {type: string}}}
    """
    body = json_body()
    task_id = body.get("task_id")
    if not isinstance(task_id, str):
        raise BadRequest("'task_id' is required")
    result = decode_base64(body.get("result"), "'result'")
    job_id, _, lease_id = task_id.partition(".")
    try:
        job = store().get(job_id) if JOB_ID.fullmatch(job_id) else None
    except JobNotFound:
        job = None
    if job is None or job["model"] != current_app.settings.compat_model:
        raise NotFound(f"no compat task {task_id[:80]!r}")
    if not JOB_ID.fullmatch(lease_id):
        raise Conflict(f"task {job_id} is bound to the worker that took it: quote the task id that "
                       "getnexttask_v0 handed out ('<job id>.<lease id>')")
    try:
        store().complete(job_id, lease_id, result, "application/octet-stream")
    except LeaseConflict as exc:
        raise Conflict(str(exc)) from None
    return plain(task_id)


@bp.post("/getresult_v0")
@uses_database
def get_result_v0():
    """A task's result as base64 text (empty while it is not done).
    ---
    post:
      summary: AzureMLDeploy compatibility, fetch a result
      tags: [compat]
      requestBody:
        content:
          application/json: {schema: {type: object, required: [task_id], properties: {task_id: {type: string}}}}
      responses:
        200:
          description: base64 result, or empty text while the task is queued or running
          content: {text/plain: {schema: {type: string}}}
    """
    task_id = json_body().get("task_id") or request.args.get("task_id")
    if not isinstance(task_id, str):
        raise BadRequest("'task_id' is required")
    try:
        job = load_job(task_id.partition(".")[0])
    except NotFound:
        raise BadRequest(f"unknown task_id {task_id[:80]!r}") from None
    if job["status"] != "succeeded":
        return plain("")
    return plain(base64.b64encode(job["result"]).decode("ascii"))
