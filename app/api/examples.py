"""Examples in the OpenAPI description: real requests and the answers this server gave them.

`python -m app.api.examples` runs the script below against an in-process app serving the
committed models (a temporary database and model folder, a worker token) and writes
``openapi_examples.json`` beside this file; build_spec() puts each operation's request and
answer into the description, so the docs page's "Try it out" starts from a request that works.
A test runs the script again and checks every operation still answers with the same status
and the same fields, so the examples cannot drift from the server.
"""
from __future__ import annotations

import base64
import io
import json
import shutil
import tempfile
from pathlib import Path

EXAMPLES_FILE = Path(__file__).with_name("openapi_examples.json")
TOKEN = "example-worker-token"
REVIEW = "A moving, beautifully acted film. I loved it :)"
ANSWERED_REQUEST = "7d3c0e9a2b1f4c5d8e6f0a1b2c3d4e5f"  # the request id an answer's feedback names
# Operations whose answers are not JSON or plain text (pages, images, metrics, this description).
NO_EXAMPLE = {"web_home", "web_classify_page", "web_jobs_page", "web_models_page", "web_model_plot_version", "web_example_cell",
              "web_review_page", "docs_docs_page", "docs_openapi_json", "metrics"}


def cell_png() -> bytes:
    """A small synthetic cell: a pink disc on black with a dark dot (stands in for an upload)."""
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (96, 96))
    draw = ImageDraw.Draw(image)
    draw.ellipse((8, 8, 88, 88), fill=(205, 150, 170))
    draw.ellipse((40, 36, 54, 50), fill=(90, 40, 110))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def calls(versions: dict[str, str]):
    """(operationId, method, path, request options) in the order they run; later calls use earlier answers."""
    review_v, logistic_v = versions["review_sentiment"], versions["logistic_regression"]
    worker = {"Authorization": f"Bearer {TOKEN}"}
    yield "health_live", "GET", "/health/live", {}
    yield "health_ready", "GET", "/health/ready", {}
    yield "review_describe", "GET", "/review", {}
    yield "review_classify_review", "POST", "/review", {"json": {"review": REVIEW}}
    yield "review_feedback", "POST", "/review/feedback", {"json": {"review": REVIEW, "label": "positive"}}
    yield "classify_describe", "GET", "/classify", {}
    yield "classify_classify_cell", "POST", "/classify", {"files": {"image": ("cell.png", cell_png())}}
    yield "predict_welcome", "GET", "/predict", {}
    yield "predict_predict", "POST", "/predict", {"json": {"review": "Dull, slow and far too long.", "model": "linear_svc"}}
    yield "models_list_models", "GET", "/models", {}
    yield "models_describe_model", "GET", "/models/review_sentiment", {}
    yield "models_describe_model_version", "GET", f"/models/review_sentiment/versions/{review_v}", {}
    yield "models_predict", "POST", "/models/logistic_regression/predict", {"json": {"instances": ["Great cast, great story."]}}
    yield "models_predict_version", "POST", f"/models/logistic_regression/versions/{logistic_v}/predict", {
        "json": {"instances": ["Great cast, great story.", "A waste of two hours."]},
        "headers": {"X-Request-ID": ANSWERED_REQUEST}}
    yield "models_feedback", "POST", "/models/logistic_regression/feedback", {
        "json": {"request_id": ANSWERED_REQUEST, "item": 1, "label": "negative"}}
    yield "models_monitoring", "GET", "/models/logistic_regression/monitoring?last=100", {}
    yield "models_monitoring_version", "GET", f"/models/logistic_regression/versions/{logistic_v}/monitoring", {}
    infer = {"json": {"inputs": [{"name": "review", "datatype": "BYTES", "shape": [1], "data": [REVIEW]}]}}
    yield "v2_server_metadata", "GET", "/v2", {}
    yield "v2_server_live", "GET", "/v2/health/live", {}
    yield "v2_server_ready", "GET", "/v2/health/ready", {}
    yield "v2_model_metadata", "GET", "/v2/models/review_sentiment", {}
    yield "v2_model_ready", "GET", "/v2/models/review_sentiment/ready", {}
    yield "v2_model_infer", "POST", "/v2/models/review_sentiment/infer", infer
    yield "v2_model_metadata_version", "GET", f"/v2/models/review_sentiment/versions/{review_v}", {}
    yield "v2_model_ready_version", "GET", f"/v2/models/review_sentiment/versions/{review_v}/ready", {}
    yield "v2_model_infer_version", "POST", f"/v2/models/review_sentiment/versions/{review_v}/infer", infer
    yield "v2_model_statistics", "GET", "/v2/models/review_sentiment/stats", {}
    yield "v2_model_statistics_version", "GET", f"/v2/models/review_sentiment/versions/{review_v}/stats", {}
    yield "v2_model_statistics_all", "GET", "/v2/models/stats", {}
    yield "v2_repository_index", "POST", "/v2/repository/index", {"json": {"ready": True}}
    yield "v2_repository_unload", "POST", "/v2/repository/models/decision_tree/unload", {"headers": worker}
    yield "v2_repository_load", "POST", "/v2/repository/models/decision_tree/load", {"headers": worker}
    yield "jobs_submit_job", "POST", "/jobs", {"json": {"model": "review_sentiment", "text": "Great!"}}
    yield "jobs_get_job", "GET", "/jobs/{job}", {}
    yield "jobs_lease_job", "POST", "/jobs/lease", {"json": {"worker": "worker-1", "models": ["review_sentiment"],
                                                            "wait": 0}, "headers": worker}
    yield "jobs_heartbeat", "POST", "/jobs/{job}/heartbeat", {"json": {"lease_id": "{lease}"}, "headers": worker}
    yield "jobs_post_result", "POST", "/jobs/{job}/result", {
        "json": {"lease_id": "{lease}", "result": {"label": "positive", "probability_positive": 0.98}}, "headers": worker}
    yield "jobs_get_result", "GET", "/jobs/{job}/result", {}
    yield "jobs_submit_job", None, "/jobs", {"json": {"model": "review_sentiment", "text": "Dull."}}
    yield "jobs_lease_job", None, "/jobs/lease", {"json": {"models": ["review_sentiment"]}, "headers": worker}
    yield "jobs_post_failure", "POST", "/jobs/{job}/failure", {
        "json": {"lease_id": "{lease}", "error": "out of memory", "retry": False}, "headers": worker}
    yield "jobs_submit_job", None, "/jobs", {"json": {"model": "review_sentiment", "text": "Not sure yet."}}
    yield "jobs_cancel_job", "DELETE", "/jobs/{job}", {}
    payload = base64.b64encode(json.dumps({"model": "review_sentiment", "text": "Great!"}).encode()).decode()
    yield "compat_predict_v0", "POST", "/api/predict_v0", {"json": {"payload": payload}}
    yield "compat_get_next_task_v0", "POST", "/api/getnexttask_v0", {"headers": worker}
    yield "compat_put_task_result_v0", "POST", "/api/puttaskresult_v0", {
        "json": {"task_id": "{task}", "result": base64.b64encode(b'{"label": "positive"}').decode()}, "headers": worker}
    yield "compat_get_result_v0", "POST", "/api/getresult_v0", {"json": {"task_id": "{task}"}}


def fill(value, known: dict):
    """Put ids learned from earlier answers ({job}, {lease}, {task}) into a path or body."""
    if isinstance(value, str):
        for name, known_value in known.items():
            value = value.replace("{" + name + "}", known_value)
        return value
    if isinstance(value, dict):
        return {k: fill(v, known) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, known) for v in value]
    return value


def answer_body(response):
    """The JSON answer, or the text of a plain-text one, or None."""
    if response.is_json:
        return response.get_json()
    if response.mimetype == "text/plain":
        return response.get_data(as_text=True)
    return None


def learn_ids(operation: str, body, known: dict) -> None:
    """Remember the ids the next calls quote."""
    if operation == "jobs_submit_job":
        known["job"] = body["id"]
    elif operation == "jobs_lease_job" and body:
        known["lease"] = body["lease_id"]
    elif operation == "compat_get_next_task_v0":
        known["task"] = body.split("|")[0]  # "<job id>.<lease id>|<payload>"


def run_examples() -> dict:
    """Run every call against a fresh in-process app; {operationId: {request, status, response}}."""
    from app import create_app
    from app.config import PROJECT_ROOT
    from app.models.registry import ModelRegistry

    with tempfile.TemporaryDirectory() as work:
        models = Path(work) / "saved_models"
        shutil.copytree(PROJECT_ROOT / "saved_models", models, ignore=shutil.ignore_patterns(".staging-*"))
        app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{work}/examples.db", "MODEL_DIR": str(models),
                          "WORKER_TOKEN": TOKEN})
        registry: ModelRegistry = app.extensions["model_registry"]
        registry.load_all()
        versions = {name: registry.default_version(name) for name in registry.names()}
        client, known, examples = app.test_client(), {}, {}
        for operation, method, path, options in calls(versions):
            options = fill(options, known)
            files = options.pop("files", None)
            response = client.open(fill(path, known), method=method or "POST", json=options.get("json"),
                                   headers=options.get("headers"),
                                   data={k: (io.BytesIO(data), name) for k, (name, data) in files.items()} if files else None)
            body = answer_body(response)
            learn_ids(operation, body, known)
            if response.status_code >= 400:
                raise RuntimeError(f"{operation}: {response.status_code} {body}")
            if method is not None:  # None: a step that only sets up the next example
                request_example = options.get("json") or ({k: "(file)" for k in files} if files else None)
                examples[operation] = {"request": request_example, "status": response.status_code,
                                       "content_type": response.mimetype, "response": body}
        app.extensions["prediction_log"].flush()
        app.extensions["db_engine"].dispose()
    return examples


def load_examples() -> dict:
    """The committed examples ({} when the file is missing)."""
    return json.loads(EXAMPLES_FILE.read_text()) if EXAMPLES_FILE.exists() else {}


def main() -> None:
    """Regenerate openapi_examples.json."""
    examples = run_examples()
    EXAMPLES_FILE.write_text(json.dumps(examples, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(examples)} examples to {EXAMPLES_FILE}")


if __name__ == "__main__":
    main()
