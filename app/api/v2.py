"""Open Inference Protocol (KServe V2) REST endpoints for every registered model."""
from __future__ import annotations

import json

from flask import Blueprint, Response, request

from app import __version__
from app.admission import admitted
from app.models.batching import Admission
from app.api import registry
from app.api.health import readiness
from app.api.inputs import optional_json_object
from app.codecs.adapters import inputs_from_tensors, output_tensors
from app.codecs.v2 import HEADER_LENGTH, ProtocolError, TooManyElements, decode_request, encode_response
from app.errors import BadRequest, ModelNotFound, PayloadTooLarge, ServiceUnavailable
from app.models.base import MODEL_NAME
from app.models.store import UNLOADED_FILE, StoreUnavailable
from app.endpoints import for_workers, public

bp = Blueprint("v2", __name__, url_prefix="/v2")

SERVER_NAME = "modelserve"
SERVER_VERSION = __version__
EXTENSIONS = ["binary_tensor_data", "statistics", "model_repository"]



@bp.get("")
def server_metadata():
    """Server name, version and the protocol extensions it supports.
    ---
    get:
      summary: V2 server metadata
      tags: [v2]
      responses:
        200:
          description: metadata
          content:
            application/json:
              schema:
                type: object
                required: [name, version, extensions]
                properties: {name: {type: string}, version: {type: string}, extensions: {type: array, items: {type: string}}}
    """
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}


@bp.get("/health/live")
@public
def server_live():
    """200 while the process answers.
    ---
    get:
      summary: V2 server liveness
      tags: [v2]
      responses:
        200:
          description: live
          content: {application/json: {schema: {type: object, properties: {live: {type: boolean}}}}}
    """
    return {"live": True}


@bp.get("/health/ready")
@public
def server_ready():
    """200 when the server can take inference traffic (the rule of /health/ready); 503 otherwise.
    ---
    get:
      summary: V2 server readiness
      tags: [v2]
      responses:
        200:
          description: ready
          content: {application/json: {schema: {type: object, properties: {ready: {type: boolean}}}}}
        503:
          description: not ready
          content: {application/json: {schema: {type: object, properties: {ready: {type: boolean}}}}}
    """
    ready = readiness()["ready"]
    return {"ready": ready}, (200 if ready else 503)


@bp.get("/models/<name>")
@bp.get("/models/<name>/versions/<version>")
def model_metadata(name: str, version: str | None = None):
    """Name, versions, platform, inputs and outputs of a model.
    ---
    get:
      summary: V2 model metadata
      tags: [v2]
      responses:
        200:
          description: metadata
          content:
            application/json:
              schema:
                type: object
                required: [name, platform, inputs, outputs]
                properties:
                  name: {type: string}
                  versions: {type: array, items: {type: string}}
                  platform: {type: string}
                  inputs: {type: array, items: {$ref: "#/components/schemas/V2TensorMetadata"}}
                  outputs: {type: array, items: {$ref: "#/components/schemas/V2TensorMetadata"}}
    """
    model = registry().get(name, version)
    return {
        "name": model.name,
        "versions": registry().versions(model.name),
        "platform": model.platform,
        "inputs": [_tensor_metadata(t) for t in model.inputs],
        "outputs": [_tensor_metadata(t) for t in model.outputs],
        "parameters": {"labels": ",".join(model.labels), "task": model.manifest.task},
    }


def _tensor_metadata(spec) -> dict:
    """name, datatype, shape of one tensor description."""
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


@bp.get("/models/<name>/ready")
@bp.get("/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None = None):
    """200 with ready=true when the model (version) can serve.
    ---
    get:
      summary: V2 model readiness
      tags: [v2]
      responses:
        200:
          description: ready
          content: {application/json: {schema: {type: object, properties: {name: {type: string}, ready: {type: boolean}}}}}
    """
    model = registry().get(name, version)
    return {"name": model.name, "ready": model.ready}


@bp.get("/models/stats")
@bp.get("/models/<name>/stats")
@bp.get("/models/<name>/versions/<version>/stats")
def model_statistics(name: str | None = None, version: str | None = None):
    """Inference statistics per model version, every worker together (Triton's statistics extension).
    ---
    get:
      summary: V2 model statistics
      tags: [v2]
      responses:
        200:
          description: statistics
          content:
            application/json:
              schema:
                type: object
                required: [model_stats]
                properties: {model_stats: {type: array, items: {type: object, additionalProperties: true}}}
    """
    from app.metrics import inference_statistics, metric_samples

    reg = registry()
    if name is None:
        chosen = [(m.name, m.version) for m in reg.all_models()]
    elif version is None:
        reg.get(name)  # 404 for an unknown model
        chosen = [(name, v) for v in reg.versions(name)]
    else:
        chosen = [(name, reg.get(name, version).version)]
    samples = metric_samples()
    return {"model_stats": [inference_statistics(n, v, samples) for n, v in sorted(chosen)]}


@bp.post("/repository/index")
def repository_index():
    """Every model version in the model folder with its state (model repository extension).
    ---
    post:
      summary: V2 model repository index
      tags: [v2]
      requestBody:
        content: {application/json: {schema: {type: object, properties: {ready: {type: boolean}}}}}
      responses:
        200:
          description: the index
          content:
            application/json:
              schema:
                type: array
                items:
                  type: object
                  properties: {name: {type: string}, version: {type: string}, state: {type: string}, reason: {type: string}}
    """
    body = optional_json_object()
    if not isinstance(body.get("ready", False), bool):
        raise BadRequest("'ready' must be true or false")
    reg = registry()
    reg.ensure_loaded()
    entries = [{"name": m.name, "version": m.version, "state": "READY", "reason": ""} for m in reg.all_models()]
    entries += [{"name": key.split("/")[0], "version": key.split("/")[1], "state": "UNAVAILABLE", "reason": reason}
                for key, reason in reg.refused.items()]
    entries += [{"name": name, "state": "UNAVAILABLE", "reason": "unloaded"} for name in sorted(reg.unloaded)]
    if body.get("ready"):
        entries = [e for e in entries if e["state"] == "READY"]
    return Response(json.dumps(sorted(entries, key=lambda e: (e["name"], e.get("version", "")))),
                    mimetype="application/json")


def change_repository(name: str, unloaded: bool) -> dict:
    """Mark a model (un)loaded in the model store; this worker reloads at once, every other worker and
    instance within MODEL_POLL_SECONDS, each loading what changed beside what it serves."""
    reg = registry()
    store = reg.store
    try:
        if not MODEL_NAME.fullmatch(name) or not store.versions(name):
            raise ModelNotFound(f"no model {name!r} in the model store")
        if unloaded:
            store.write_text(f"{name}/{UNLOADED_FILE}", "unloaded through POST /v2/repository/models/NAME/unload\n")
        else:
            store.delete(f"{name}/{UNLOADED_FILE}")
    except StoreUnavailable as exc:
        raise ServiceUnavailable(f"the model store is unavailable: {exc}", retry_after=10) from exc
    reg.load_all()
    return {"name": name, "state": "UNAVAILABLE" if unloaded else "READY",
            "note": "reloaded; other workers and instances follow within MODEL_POLL_SECONDS"}


@bp.post("/repository/models/<name>/load", endpoint="repository_load")
@bp.post("/repository/models/<name>/unload", endpoint="repository_unload")
@for_workers
def repository_change(name: str):
    """Take a model out of service (unload) or serve it again (load): model repository extension, worker token.
    ---
    post:
      summary: V2 repository, load or unload a model
      tags: [v2]
      responses:
        200: {description: done, content: {application/json: {schema: {type: object, additionalProperties: true}}}}
    """
    return change_repository(name, unloaded=request.endpoint == "v2.repository_unload")


@bp.post("/models/<name>/infer")
@bp.post("/models/<name>/versions/<version>/infer")
@admitted(lambda kwargs: kwargs["name"])
def model_infer(admission: Admission, name: str, version: str | None = None):
    """Run inference; JSON or binary tensor data in, the same out.
    ---
    post:
      summary: V2 inference (JSON, or JSON header plus binary tensor data)
      tags: [v2]
      parameters:
        - in: header
          name: Inference-Header-Content-Length
          required: false
          schema: {type: integer, minimum: 1}
          description: length of the JSON header when binary tensor data follows it
      requestBody:
        required: true
        content:
          application/json: {schema: {$ref: "#/components/schemas/V2InferenceRequest"}}
          application/octet-stream: {schema: {type: string, format: binary}}
      responses:
        200:
          description: outputs (binary ones follow the JSON header)
          content:
            application/json: {schema: {$ref: "#/components/schemas/V2InferenceResponse"}}
            application/octet-stream: {schema: {type: string, format: binary}}
    """
    runner = registry().runner(name, version)
    model = runner.model
    try:
        # A BYTES element is one item (a text, an image): no more of them than a request's batch.
        infer = decode_request(request.get_data(cache=False), request.headers.get(HEADER_LENGTH), model.limits.max_batch)
        inputs = inputs_from_tensors(infer.inputs)
    except TooManyElements as exc:
        raise PayloadTooLarge(str(exc)) from exc
    except ProtocolError as exc:
        raise BadRequest(str(exc)) from exc
    outputs = output_tensors(model, runner.serve(inputs, protocol="v2", admission=admission).outputs)
    if infer.requested_outputs is not None:
        known = {t.name: t for t in outputs}
        unknown = [n for n in infer.requested_outputs if n not in known]
        if unknown:
            raise BadRequest(f"unknown output(s) {unknown}; model {model.name!r} has {sorted(known)}")
        outputs = [known[n] for n in infer.requested_outputs]
    body, headers = encode_response(model.name, model.version, infer, outputs)
    return Response(body, status=200, headers=headers)
