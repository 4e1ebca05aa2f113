"""Asynchronous jobs: clients submit and poll; remote workers lease, heartbeat and post results."""
from __future__ import annotations

import base64
import binascii
import json
import re

from flask import Blueprint, Response, current_app, request, url_for

from app.api import registry
from app.auth import require_client, require_worker
from app.errors import APIError, BadRequest, ModelNotFound, ModelNotReady, NotFound
from app.jobs.execute import validate_payload
from app.jobs.store import FINISHED, JobNotFound, LeaseConflict

bp = Blueprint("jobs", __name__, url_prefix="/jobs")

MODEL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Conflict(APIError):
    """The request conflicts with the job's state (stale lease, finished job)."""

    status = 409


def store():
    """The app's job store."""
    return current_app.extensions["job_store"]


def load_job(job_id: str) -> dict:
    """The job, or a 404."""
    try:
        return store().get(job_id)
    except JobNotFound:
        raise NotFound(f"no job {job_id!r}") from None


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
        if job["result_content_type"] == "application/json":
            body["result"] = json.loads(job["result"])
        body["result_content_type"] = job["result_content_type"]
        body["links"]["result"] = url_for("jobs.get_result", job_id=job["id"])
    if job["error"] and job["status"] in ("failed", "queued"):
        body["error"] = job["error"]
    return body


def payload_from_request() -> tuple[str, bytes, str]:
    """(model, payload bytes, content type) from multipart, JSON or a raw body with ?model=."""
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        model = request.form.get("model", "")
        upload = request.files.get("payload") or request.files.get("image")
        if upload is not None:
            return model, upload.read(), upload.mimetype or "application/octet-stream"
        if "text" in request.form:
            return model, request.form["text"].encode("utf-8"), "text/plain; charset=utf-8"
        raise BadRequest("multipart job needs a file field 'payload' (or 'image') or a field 'text'")
    if mimetype == "application/json":
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise BadRequest("JSON body must be an object with 'model' and 'text' or 'payload_base64'")
        model = body.get("model", "")
        if isinstance(body.get("text"), str):
            return model, body["text"].encode("utf-8"), "text/plain; charset=utf-8"
        if isinstance(body.get("payload_base64"), str):
            try:
                data = base64.b64decode(body["payload_base64"], validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest("'payload_base64' is not valid base64") from None
            return model, data, str(body.get("content_type") or "application/octet-stream")
        if "instances" in body:  # rows for a model that takes numbers: run as one batch
            return model, json.dumps({"instances": body["instances"]}).encode(), "application/json"
        raise BadRequest("JSON job needs 'text', 'instances' or 'payload_base64'")
    return request.args.get("model", ""), request.get_data(), mimetype or "application/octet-stream"


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
    require_client()
    model, payload, content_type = payload_from_request()
    if not isinstance(model, str) or not MODEL_NAME.match(model):
        raise BadRequest("field 'model' must name a model (letters, digits, '_', '.', '-')")
    check_payload(model, payload)  # a model of this server's judges the payload (an empty text: 422)
    if not payload:
        raise BadRequest("the job payload is empty")
    job = store().submit(model, payload, content_type)
    return job_view(job), 202, {"Location": url_for("jobs.get_job", job_id=job["id"])}


@bp.get("/<job_id>")
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
    require_client()
    return job_view(load_job(job_id))


@bp.get("/<job_id>/result")
def get_result(job_id: str):
    """The raw result bytes of a succeeded job, with their content type.
    ---
    get:
      summary: Download a job's result
      tags: [jobs]
      responses:
        200:
          description: the result as the worker posted it
          content: {application/octet-stream: {schema: {type: string, format: binary}}}
    """
    require_client()
    job = load_job(job_id)
    if job["status"] != "succeeded":
        raise Conflict(f"job {job_id} has no result (status {job['status']})", status_of_job=job["status"])
    return Response(job["result"], mimetype=job["result_content_type"] or "application/octet-stream")


@bp.delete("/<job_id>")
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
    require_client()
    job = load_job(job_id)
    if job["status"] in FINISHED or job["status"] == "expired":
        raise Conflict(f"job {job_id} is already {job['status']}")
    return job_view(store().cancel(job_id))


def worker_body() -> dict:
    """The JSON object a worker sends."""
    body = request.get_json(silent=True) if request.content_length else {}
    if not isinstance(body, dict):
        raise BadRequest("send a JSON object")
    return body


def lease_id_of(body: dict) -> str:
    """The lease id a worker quotes."""
    lease_id = body.get("lease_id")
    if not isinstance(lease_id, str) or not lease_id:
        raise BadRequest("field 'lease_id' is required")
    return lease_id


@bp.post("/lease")
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
    require_worker()
    body = worker_body()
    wait = body.get("wait", 0)
    if not isinstance(wait, (int, float)) or wait < 0:
        raise BadRequest("'wait' must be a non-negative number of seconds")
    models = body.get("models")
    if models is not None and (not isinstance(models, list) or not all(isinstance(m, str) for m in models)):
        raise BadRequest("'models' must be a list of model names")
    worker = str(body.get("worker") or request.remote_addr or "worker")[:128]
    lease = store().lease(worker, models, min(float(wait), current_app.config["JOB_MAX_WAIT_SECONDS"]))
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
    load_job(job_id)
    try:
        return operation(job_id, *args)
    except LeaseConflict as exc:
        raise Conflict(str(exc)) from None


@bp.post("/<job_id>/heartbeat")
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
    require_worker()
    lease_id = lease_id_of(worker_body())
    expires = under_lease(job_id, store().heartbeat, lease_id)
    return {"lease_expires_at": expires.isoformat()}


@bp.post("/<job_id>/result")
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
    require_worker()
    body = worker_body()
    lease_id = lease_id_of(body)
    if "result_base64" in body:
        try:
            result = base64.b64decode(str(body["result_base64"]), validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("'result_base64' is not valid base64") from None
        content_type = str(body.get("content_type") or "application/octet-stream")
    elif "result" in body:
        result, content_type = json.dumps(body["result"]).encode("utf-8"), "application/json"
    else:
        raise BadRequest("send 'result' (JSON) or 'result_base64' (+ 'content_type')")
    job, recorded = under_lease(job_id, store().complete, lease_id, result, content_type)
    return {"recorded": recorded, "job": job_view(job)}


@bp.post("/<job_id>/failure")
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
    require_worker()
    body = worker_body()
    lease_id = lease_id_of(body)
    reason = body.get("error")
    if not isinstance(reason, str) or not reason.strip():
        raise BadRequest("field 'error' (a message) is required")
    job, recorded = under_lease(job_id, store().fail, lease_id, reason[:2000], bool(body.get("retry", True)))
    return {"recorded": recorded, "job": job_view(job)}
