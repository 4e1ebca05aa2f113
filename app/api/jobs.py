"""Asynchronous jobs: clients submit and poll; remote workers lease, heartbeat and post results."""
from __future__ import annotations

import base64
import json
import re

from flask import Blueprint, Response, current_app, request, url_for

from app.api import registry
from app.api.inputs import checked_text, content_type_field, idempotency_key, optional_json_object, request_fields
from app.auth import api_keys, client_label
from app.codecs.base64_text import decode_base64
from app.errors import APIError, BadRequest, Conflict, ModelNotFound, ModelNotReady, NotFound, Unprocessable
from app.jobs.execute import validate_payload
from app.jobs.store import FINISHED, IdempotencyConflict, JobNotFound, LeaseConflict, QueueLimitReached, QueueLimits
from app.models.base import MODEL_NAME
from app.endpoints import for_workers, uses_database

bp = Blueprint("jobs", __name__, url_prefix="/jobs")

JOB_ID = re.compile(r"[0-9a-f]{32}")  # job ids (app/ids.py) and lease ids (uuid4().hex)


def store():
    """The app's job store."""
    return current_app.extensions["job_store"]


class QueueFull(APIError):
    """Too much is waiting in the queue: 429 for one client's share, 503 for the whole queue."""

    def __init__(self, message: str, status: int, retry_after: int = 30):
        """A refusal with Retry-After."""
        super().__init__(message, status=status, retry_after=retry_after)


def fetch_job(job_id: str) -> dict:
    """The job, or a 404 (an id that cannot be one is not looked up)."""
    try:
        if not JOB_ID.fullmatch(job_id):
            raise JobNotFound(job_id)
        return store().get(job_id)
    except JobNotFound:
        raise NotFound(f"no job {job_id[:64]!r}") from None


def load_job(job_id: str) -> dict:
    """The caller's job, or a 404 (with API keys on, another key's job is not found either)."""
    job = fetch_job(job_id)
    if api_keys() and job["client"] != client_label():
        raise NotFound(f"no job {job_id!r}")
    return job


def queue_limits() -> QueueLimits:
    """The queue's bounds, from the settings."""
    settings = current_app.settings
    return QueueLimits(settings.max_queued_jobs_per_client, settings.max_queued_job_bytes_per_client,
                       settings.max_queued_jobs, settings.max_queued_job_bytes)


def check_model_known(model_name: str) -> None:
    """Jobs name a model of this server, the compat model, or one of WORKER_MODELS ("*": any)."""
    allowed = current_app.settings.worker_models
    if "*" in allowed or model_name in allowed or model_name == current_app.settings.compat_model:
        return
    if model_name not in registry().names():
        raise ModelNotFound(f"no model {model_name!r} on this server (a model only remote workers serve must be "
                            "listed in MODELSERVE_WORKER_MODELS)")


def enqueue(model: str, payload: bytes, content_type: str, source: str = "api") -> tuple[dict, bool]:
    """Queue a job within the bounds, once per Idempotency-Key; returns (job, created)."""
    client = client_label()
    key = idempotency_key(client)
    try:
        return store().submit_once(model, payload, content_type, source, client, key, queue_limits())
    except QueueLimitReached as exc:
        raise QueueFull(str(exc), 503 if exc.whole else 429) from None
    except IdempotencyConflict:
        raise Unprocessable("this Idempotency-Key was already used for a different request") from None


def job_view(job: dict) -> dict:
    """Public JSON of a job; a JSON result is inlined, any other result is linked."""
    body = {
        "id": job["id"], "model": job["model"], "status": job["status"], "attempts": job["attempts"],
        "max_attempts": job["max_attempts"], "created_at": job["created_at"].isoformat(),
        "updated_at": job["updated_at"].isoformat(),
        "finished_at": job["finished_at"].isoformat() if job["finished_at"] else None,
        "links": {"self": url_for("jobs.get_job", job_id=job["id"])},
    }
    if job["status"] == "succeeded" and job["result"] is not None:
        if is_json_type(job["result_content_type"]):
            body["result"] = json_result(job["result"])
        body["result_content_type"] = job["result_content_type"]
        body["links"]["result"] = url_for("jobs.get_result", job_id=job["id"])
    if job["error"] and job["status"] in ("failed", "queued", "expired"):
        body["error"] = job["error"]
    if job["status"] == "running":
        # Handed to a worker that has not acknowledged it yet (started_at null), or running on it since then.
        body["worker"] = job["worker"]
        body["started_at"] = job["started_at"].isoformat() if job["started_at"] else None
    return body


def is_json_type(content_type: str | None) -> bool:
    """application/json, with or without parameters, or any +json type."""
    essence = (content_type or "").split(";")[0].strip().lower()
    return essence == "application/json" or essence.endswith("+json")


def json_result(raw: bytes):
    """A stored JSON result, parsed strictly (UTF-8, no NaN or Infinity); ValueError when it is not."""
    return current_app.json.loads(raw)


def result_from_body(body: dict) -> tuple[bytes, str]:
    """(result bytes, content type) from a worker's post, checked so that every later read works."""
    if "result_base64" in body:
        result = decode_base64(body["result_base64"], "'result_base64'")
        content_type = content_type_field(body.get("content_type") or "application/octet-stream")
        if is_json_type(content_type):
            try:
                json_result(result)
            except ValueError:
                raise BadRequest(f"the result is labelled {content_type} but is not JSON (UTF-8, finite "
                                 "numbers only)") from None
        return result, content_type
    if "result" in body:  # already parsed strictly by the request's JSON loader
        return json.dumps(body["result"], allow_nan=False).encode("utf-8"), "application/json"
    raise BadRequest("send 'result' (JSON) or 'result_base64' (+ 'content_type')")


def payload_from_request() -> tuple[str, bytes, str]:
    """(model, payload bytes, content type) from multipart, JSON or a raw body with ?model=."""
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        fields = request_fields()  # refuses text fields that are not UTF-8
        model = fields.get("model", "")
        upload = request.files.get("payload") or request.files.get("image")
        if upload is not None:
            return model, upload.read(), content_type_field(upload.mimetype or "application/octet-stream",
                                                            "the file part's Content-Type")
        if "text" in fields:
            return model, fields["text"].encode("utf-8"), "text/plain; charset=utf-8"
        raise BadRequest("multipart job needs a file field 'payload' (or 'image') or a field 'text'")
    if mimetype == "application/json":
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise BadRequest("JSON body must be an object with 'model' and 'text' or 'payload_base64'")
        model = body.get("model", "")
        if isinstance(body.get("text"), str):
            return model, checked_text(body["text"], "field 'text'").encode("utf-8"), "text/plain; charset=utf-8"
        if isinstance(body.get("payload_base64"), str):
            data = decode_base64(body["payload_base64"], "'payload_base64'")
            return model, data, content_type_field(body.get("content_type") or "application/octet-stream")
        if "instances" in body:  # rows for a model that takes numbers: run as one batch
            return model, json.dumps({"instances": body["instances"]}).encode(), "application/json"
        raise BadRequest("JSON job needs 'text', 'instances' or 'payload_base64'")
    declared = request.headers.get("Content-Type") or "application/octet-stream"
    return request.args.get("model", ""), request.get_data(), content_type_field(declared, "Content-Type")


def check_payload(model_name: str, payload: bytes) -> None:
    """A job for a model this server has is checked now, as a direct request would be (same 4xx).

    Jobs for models only remote workers know are queued as they are.
    """
    try:
        model = registry().get(model_name)
    except (ModelNotFound, ModelNotReady):
        return
    validate_payload(model, payload)


@bp.post("")
@uses_database
def submit_job():
    """Queue a job; answers 202 with its id and where to poll.
    ---
    post:
      summary: Submit an asynchronous job
      tags: [jobs]
      parameters:
        - {in: query, name: model, required: false, schema: {type: string}, description: model name for a raw body}
      requestBody:
        required: true
        content:
          multipart/form-data:
            schema:
              type: object
              required: [model]
              properties: {model: {type: string}, payload: {type: string, format: binary}, image: {type: string, format: binary}, text: {type: string}}
          application/json:
            schema:
              type: object
              required: [model]
              properties: {model: {type: string}, text: {type: string}, instances: {type: array, items: {}}, payload_base64: {type: string}, content_type: {type: string}}
          application/octet-stream: {schema: {type: string, format: binary}}
      responses:
        202:
          description: queued
          headers: {Location: {schema: {type: string}}}
          content: {application/json: {schema: {$ref: "#/components/schemas/Job"}}}
    """
    model, payload, content_type = payload_from_request()
    if not isinstance(model, str) or not MODEL_NAME.fullmatch(model):
        raise BadRequest("field 'model' must name a model (letters, digits, '_', '.', '-')")
    check_model_known(model)
    check_payload(model, payload)  # a model of this server's judges the payload (an empty text: 422)
    if not payload:
        raise BadRequest("the job payload is empty")
    job, created = enqueue(model, payload, content_type)
    headers = {"Location": url_for("jobs.get_job", job_id=job["id"])}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return job_view(job), 202, headers


@bp.get("/<job_id>")
@uses_database
def get_job(job_id: str):
    """Status of a job, with its result once it succeeded.
    ---
    get:
      summary: Poll a job
      tags: [jobs]
      responses:
        200:
          description: the job
          content: {application/json: {schema: {$ref: "#/components/schemas/Job"}}}
    """
    return job_view(load_job(job_id))


@bp.get("/<job_id>/result")
@uses_database
def get_result(job_id: str):
    """The raw result bytes of a succeeded job, with their content type.
    ---
    get:
      summary: Download a job's result
      tags: [jobs]
      responses:
        200:
          description: the result as the worker posted it, with the content type it gave (JSON for the built-in workers)
          content:
            application/json: {schema: {description: any JSON value}}
            application/octet-stream: {schema: {type: string, format: binary}}
    """
    job = load_job(job_id)
    if job["status"] != "succeeded":
        raise Conflict(f"job {job_id} has no result (status {job['status']})", status_of_job=job["status"])
    # A download, never a page: a worker's bytes must not run as HTML or script in a browser.
    return Response(job["result"], content_type=job["result_content_type"] or "application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{job_id}-result"'})


@bp.delete("/<job_id>")
@uses_database
def cancel_job(job_id: str):
    """Cancel a queued or running job.
    ---
    delete:
      summary: Cancel a job
      tags: [jobs]
      responses:
        200:
          description: canceled
          content: {application/json: {schema: {$ref: "#/components/schemas/Job"}}}
    """
    job = load_job(job_id)
    if job["status"] in FINISHED or job["status"] == "expired":
        raise Conflict(f"job {job_id} is already {job['status']}")
    return job_view(store().cancel(job_id))


def lease_id_of(body: dict) -> str:
    """The lease id a worker quotes."""
    lease_id = body.get("lease_id")
    if not isinstance(lease_id, str) or not JOB_ID.fullmatch(lease_id):
        raise BadRequest("field 'lease_id' is required: the id the lease answer gave")
    return lease_id


@bp.post("/lease")
@for_workers
@uses_database
def lease_job():
    """Give the oldest queued job to a worker (long-polls up to `wait` seconds); 204 when none.
    ---
    post:
      summary: Lease the next job (worker)
      tags: [workers]
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties:
                worker: {type: string}
                models: {type: array, items: {type: string}}
                wait: {type: number, minimum: 0}
      responses:
        200:
          description: a job and its lease
          content:
            application/json:
              schema:
                type: object
                properties:
                  lease_id: {type: string}
                  lease_expires_at: {type: string}
                  job: {type: object, additionalProperties: true}
        204: {description: no job within the wait}
    """
    body = optional_json_object()
    wait = body.get("wait", 0)
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait < float("inf"):
        raise BadRequest("'wait' must be a non-negative number of seconds")
    models = body.get("models")
    if models is not None and (not isinstance(models, list) or
                               not all(isinstance(m, str) and MODEL_NAME.fullmatch(m) for m in models)):
        raise BadRequest("'models' must be a list of model names (letters, digits, '_', '.', '-')")
    worker = body.get("worker") or request.remote_addr or "worker"
    if not isinstance(worker, str):
        raise BadRequest("'worker' must be a string")
    worker = checked_text(worker, "'worker'")[:128]
    lease = store().lease(worker, models, min(float(wait), current_app.settings.job_max_wait_seconds))
    if lease is None:
        return Response(status=204)
    job = lease.job
    return {
        "lease_id": lease.lease_id,
        "lease_expires_at": lease.expires_at.isoformat(),
        "job": {"id": job["id"], "model": job["model"], "content_type": job["content_type"],
                "payload_base64": base64.b64encode(job["payload"]).decode("ascii"), "attempt": job["attempts"],
                "max_attempts": job["max_attempts"]},
    }


def under_lease(job_id: str, operation, *args):
    """Run a store operation that quotes a lease: 404 for an unknown job, 409 for a stale lease."""
    fetch_job(job_id)
    try:
        return operation(job_id, *args)
    except LeaseConflict as exc:
        raise Conflict(str(exc)) from None


@bp.post("/<job_id>/heartbeat")
@for_workers
@uses_database
def heartbeat(job_id: str):
    """Extend the lease of a running job.
    ---
    post:
      summary: Renew a lease (worker)
      tags: [workers]
      requestBody:
        required: true
        content: {application/json: {schema: {type: object, required: [lease_id], properties: {lease_id: {type: string}}}}}
      responses:
        200:
          description: renewed
          content: {application/json: {schema: {type: object, properties: {lease_expires_at: {type: string}}}}}
    """
    lease_id = lease_id_of(optional_json_object())
    expires = under_lease(job_id, store().heartbeat, lease_id)
    return {"lease_expires_at": expires.isoformat()}


@bp.post("/<job_id>/result")
@for_workers
@uses_database
def post_result(job_id: str):
    """Record a job's result; a repeat from the same lease is accepted, a stale lease gets 409.
    ---
    post:
      summary: Post a result (worker)
      tags: [workers]
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [lease_id]
              properties:
                lease_id: {type: string}
                result: {description: any JSON value}
                result_base64: {type: string}
                content_type: {type: string}
      responses:
        200:
          description: recorded (recorded=false when it repeats an earlier post)
          content: {application/json: {schema: {type: object, properties: {recorded: {type: boolean}, job: {$ref: "#/components/schemas/Job"}}}}}
    """
    body = optional_json_object()
    lease_id = lease_id_of(body)
    result, content_type = result_from_body(body)
    job, recorded = under_lease(job_id, store().complete, lease_id, result, content_type)
    if recorded:
        log_answer(job)
    return {"recorded": recorded, "job": job_view(job)}


def log_answer(job: dict) -> None:
    """A succeeded job's answer into the prediction log (protocol "job", its request id the job's id), when
    the result names the served model version that gave it, as the built-in worker's results do."""
    prediction_log = current_app.extensions.get("prediction_log")
    if prediction_log is None or not is_json_type(job["result_content_type"]) or job["payload"] is None:
        return
    try:
        result = json_result(job["result"])
        named = result["model"]
        model = registry().get(named["name"], str(named["version"]))
        rows = result["predictions"] if "predictions" in result else [result]
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            return
    except (APIError, KeyError, TypeError, ValueError):
        return  # a worker of its own, answering in its own shape: nothing the log could read
    seconds = (job["finished_at"] - (job["started_at"] or job["created_at"])).total_seconds()
    prediction_log.record_job(model, job["payload"], rows, seconds, job["id"], job["client"])


@bp.post("/<job_id>/failure")
@for_workers
@uses_database
def post_failure(job_id: str):
    """Report that a job failed; it is retried while attempts remain unless retry is false.
    ---
    post:
      summary: Post a failure (worker)
      tags: [workers]
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [lease_id, error]
              properties: {lease_id: {type: string}, error: {type: string}, retry: {type: boolean}}
      responses:
        200:
          description: recorded
          content: {application/json: {schema: {type: object, properties: {recorded: {type: boolean}, job: {$ref: "#/components/schemas/Job"}}}}}
    """
    body = optional_json_object()
    lease_id = lease_id_of(body)
    reason = body.get("error")
    if not isinstance(reason, str) or not reason.strip():
        raise BadRequest("field 'error' (a message) is required")
    checked_text(reason, "'error'")
    job, recorded = under_lease(job_id, store().fail, lease_id, reason[:2000], bool(body.get("retry", True)))
    return {"recorded": recorded, "job": job_view(job)}
