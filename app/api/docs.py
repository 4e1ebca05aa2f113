"""OpenAPI 3 description generated from the routes and their view docstrings, and a docs page.

Each view documents its operations in YAML after a ``---`` line in its
docstring (apispec's convention); this module walks the app's URL map, so a
route without documentation shows up at once (a test checks every route).
Path parameters come from the URL rules themselves.
"""
from __future__ import annotations

from apispec import APISpec, yaml_utils
from apispec_webframeworks.flask import FlaskPlugin
from flask import Blueprint, Flask, current_app, render_template_string, send_from_directory
from swagger_ui_bundle import swagger_ui_path

from app import __version__
from app import auth

from app.api.examples import load_examples
from app.endpoints import WORKER, access_of, is_documented, public, undocumented


bp = Blueprint("docs", __name__)


COMPONENT_SCHEMAS = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "what was wrong, safe to show a user"}},
        "additionalProperties": True,
    },
    "ModelRef": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
        "required": ["name", "version"],
    },
    "ReviewInput": {
        "type": "object",
        "required": ["review"],
        "properties": {"review": {"type": "string", "minLength": 1, "description": "the review text",
                                  "example": "A moving, beautifully acted film. I loved it :)"}},
    },
    "ModelDescription": {"type": "object", "additionalProperties": True},
    "FeedbackInput": {
        "type": "object",
        "required": ["review", "label"],
        "properties": {"review": {"type": "string", "minLength": 1,
                                  "example": "A moving, beautifully acted film. I loved it :)"},
                       "label": {"type": "string", "enum": ["positive", "negative"], "example": "positive"},
                       "version": {"type": "string", "description": "the model version whose answer this corrects "
                                                                   "(default: the version serving now)"}},
    },
    "AnswerFeedback": {
        "type": "object",
        "properties": {"id": {"type": "integer"}, "stored": {"type": "boolean"}, "request_id": {"type": "string"},
                       "item": {"type": "integer"}, "label": {"type": "string"},
                       "answered": {"type": "object", "description": "the logged answer: its version, its label, "
                                                                     "and whether it was correct",
                                    "properties": {"version": {"type": "string"}, "label": {"type": "string"},
                                                   "correct": {"type": "boolean"}}}},
    },
    "PredictInput": {
        "type": "object",
        "required": ["review"],
        "properties": {"review": {"type": "string", "minLength": 1},
                       "model": {"type": "string", "description": "model name; logistic_regression by default"}},
    },
    "Readiness": {
        "type": "object",
        "properties": {"ready": {"type": "boolean"}, "loading": {"type": "boolean"}, "overloaded": {"type": "boolean"},
                       "models": {"type": "array", "items": {"type": "string"}},
                       "refused": {"type": "object", "additionalProperties": {"type": "string"}},
                       "database": {"type": "string", "enum": ["ok", "unavailable", "unknown"],
                                    "description": "what the last request that used the database found"},
                       "model_store": {"type": "string", "enum": ["local", "ok", "unavailable", "unknown"],
                                       "description": "a shared model store: whether it answered the last poll "
                                                      "(models keep serving from the cache while it does not)"},
                       "model_store_problem": {"type": "string"}},
    },
    "Job": {
        "type": "object",
        "properties": {
            "id": {"type": "string"}, "model": {"type": "string"},
            "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "canceled", "expired"]},
            "attempts": {"type": "integer"}, "max_attempts": {"type": "integer"},
            "worker": {"type": "string", "description": "while running: the worker that has it"},
            "started_at": {"type": "string", "nullable": True,
                           "description": "while running: when its worker acknowledged it (null: handed out, not yet "
                                          "acknowledged; it goes back to the queue if the worker never does)"},
            "result": {"description": "the result, when it is JSON"}, "error": {"type": "string"},
            "links": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "additionalProperties": True,
    },
    "V2Tensor": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string", "enum": ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16",
                                                    "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"]},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "parameters": {"type": "object", "additionalProperties": True},
            "data": {"type": "array", "items": {}},
        },
    },
    # Model metadata describes tensors whose size varies with -1 (the protocol's "any size").
    "V2TensorMetadata": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": -1}},
        },
    },
    "V2InferenceRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object", "additionalProperties": True},
            "inputs": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/V2Tensor"}},
            "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"}, "parameters": {"type": "object", "additionalProperties": True}}}},
        },
    },
    "V2InferenceResponse": {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2Tensor"}},
        },
    },
}

ERROR_RESPONSE = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
OVERLOADED_RESPONSE = {
    **ERROR_RESPONSE, "description": "busy: no inference slot free in time (backpressure); retry after Retry-After",
    "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
}
TIMEOUT_HEADER = {"in": "header", "name": "X-Request-Timeout", "required": False,
                  "description": "seconds this request may wait for an inference slot (at most the server's deadline)",
                  "schema": {"type": "number", "exclusiveMinimum": True, "minimum": 0}}


SECURITY_SCHEMES = {
    "workerToken": {"type": "http", "scheme": "bearer",
                    "description": "the worker token (MODELSERVE_WORKER_TOKEN, or the file the server names in its log)"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "one of MODELSERVE_API_KEYS"},
    "apiKeyBearer": {"type": "http", "scheme": "bearer", "description": "one of MODELSERVE_API_KEYS, as a bearer token"},
}


# Tags in the order the docs page lists them: predictions first, operations and pages last.
TAGS = [
    ("review", "Movie-review sentiment (the review_sentiment model) and user feedback"),
    ("classify", "Malaria cell images (the malaria_cell model)"),
    ("predict", "The scikit-learn text models chosen by name"),
    ("models", "Every served model, by name and version, with {\"instances\": [...]}"),
    ("v2", "Open Inference Protocol (KServe V2): health, metadata, inference, statistics, model repository"),
    ("jobs", "Asynchronous jobs: submit, poll, cancel"),
    ("workers", "What pull workers call (worker token)"),
    ("compat", "AzureMLDeploy-compatible task endpoints"),
    ("health", "Liveness, readiness and Prometheus metrics"),
    ("docs", "This description and its interactive page"),
    ("web", "The HTML pages"),
]


def operation_security(app: Flask, endpoint: str) -> list[dict]:
    """The credentials an operation needs on this server: the worker token, an API key, or none."""
    if access_of(endpoint, app) == WORKER:
        return [] if app.settings.open_worker_endpoints and not app.settings.worker_token else [{"workerToken": []}]
    if auth.api_keys(app) and auth.needs_client_key(endpoint, app):
        return [{"apiKey": []}, {"apiKeyBearer": []}]
    return []


def operation_id(rule, method: str, methods: set[str]) -> str:
    """A readable id: the view's name ("review_classify_review"), "_version" for the versioned route of
    the same view ("_all" for its route without a model), and the method when one route takes several."""
    name = rule.endpoint.replace(".", "_")
    if "version" in rule.arguments:
        name += "_version"
    elif not rule.arguments and any(other.endpoint == rule.endpoint and other.arguments
                                    for other in current_app.url_map.iter_rules()):
        name += "_all"  # the same view answers for one model on other routes
    return f"{name}_{method}" if len(methods) > 1 else name


FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def add_examples(operation: dict, example: dict) -> None:
    """Put a recorded request and answer (app/api/openapi_examples.json) into an operation; a flat JSON request
    (fields of text) is the form encodings' example too, so that "Try it out" starts from a working request in
    whichever encoding is shown first."""
    content = operation.get("requestBody", {}).get("content", {})
    request = example["request"]
    if "application/json" in content and request is not None:
        content["application/json"]["example"] = request
        if isinstance(request, dict) and all(isinstance(v, str) for v in request.values()):
            for media in FORM_TYPES:
                if media in content and "example" not in content[media]:
                    content[media]["example"] = request
    responses = operation.get("responses", {})
    answer = responses.get(example["status"], responses.get(str(example["status"]))) or {}
    media = answer.get("content", {}).get(example["content_type"])
    if media is not None:
        media["example"] = example["response"]


def build_spec(app: Flask) -> dict:
    """The OpenAPI document of every route of ``app``."""
    spec = APISpec(
        title="modelserve",
        version=__version__,
        openapi_version="3.0.3",
        info={"description": "Model-serving API: movie-review sentiment, malaria cell classification, "
                             "models by name and the Open Inference Protocol (KServe V2)."},
    )
    for name, schema in COMPONENT_SCHEMAS.items():
        spec.components.schema(name, schema)
    for name, scheme in SECURITY_SCHEMES.items():
        spec.components.security_scheme(name, scheme)
    for name, description in TAGS:
        spec.tag({"name": name, "description": description})
    examples = load_examples()
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not is_documented(rule.endpoint, app):
            continue
        view = app.view_functions[rule.endpoint]
        documented = yaml_utils.load_operations_from_docstring(view.__doc__ or "")
        methods = {m.lower() for m in rule.methods - {"HEAD", "OPTIONS"}}
        operations = {m: dict(op) for m, op in documented.items() if m in methods}
        for method_name, operation in operations.items():
            operation.setdefault("responses", {}).setdefault("default", ERROR_RESPONSE)
            if getattr(view, "admitted", False):  # behind the backpressure gate (app/admission.py)
                operation["responses"].setdefault(503, OVERLOADED_RESPONSE)
                operation["parameters"] = [*operation.get("parameters", []), TIMEOUT_HEADER]
            security = operation_security(app, rule.endpoint)
            if security:
                operation["security"] = security
                operation["responses"].setdefault(401, {**ERROR_RESPONSE, "description": "missing or wrong credentials"})
            operation.setdefault("operationId", operation_id(rule, method_name, methods))
            if operation["operationId"] in examples:
                add_examples(operation, examples[operation["operationId"]])
        parameters = [{"in": "path", "name": arg, "required": True, "schema": {"type": "string"}}
                      for arg in sorted(rule.arguments)]
        spec.path(path=FlaskPlugin.flaskpath2openapi(rule.rule), operations=operations, parameters=parameters)
    return spec.to_dict()


@bp.get("/openapi.json")
@public
def openapi_json():
    """The OpenAPI 3 description of this API.
    ---
    get:
      summary: OpenAPI description
      tags: [docs]
      responses:
        200:
          description: the OpenAPI 3 document
          content:
            application/json:
              schema: {type: object}
    """
    if "openapi" not in current_app.extensions:
        current_app.extensions["openapi"] = build_spec(current_app)
    return current_app.extensions["openapi"]


DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>modelserve API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="{{ url_for('docs.swagger_asset', filename='swagger-ui.css') }}"></head>
<body><p><a href="{{ url_for('web.home') }}">&larr; modelserve home</a></p>
<div id="swagger-ui" data-spec-url="{{ url_for('docs.openapi_json') }}"></div>
<script src="{{ url_for('docs.swagger_asset', filename='swagger-ui-bundle.js') }}"></script>
<script src="{{ url_for('web.static', filename='docs.js') }}"></script>
</body></html>"""


@bp.get("/docs")
@public
def docs_page():
    """Interactive API documentation (Swagger UI, served locally: no CDN).
    ---
    get:
      summary: Interactive API docs
      tags: [docs]
      responses:
        200:
          description: HTML page
          content:
            text/html:
              schema: {type: string}
    """
    return render_template_string(DOCS_PAGE)


@bp.get("/docs/assets/<path:filename>")
@public
@undocumented
def swagger_asset(filename: str):
    """Swagger UI's static files, from the swagger-ui-bundle package."""
    return send_from_directory(swagger_ui_path, filename)
