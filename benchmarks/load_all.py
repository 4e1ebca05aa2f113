"""Load test of every public endpoint, bounded in time.

Usage: python benchmarks/load_all.py [--seconds 5] [--connections 8] [--out benchmarks/results/load_all.md]

One gunicorn (2 workers, default settings). Part 1: wrk drives each endpoint that
a fixed request can exercise, for --seconds each. Part 2: the job protocol, whose
steps depend on one another (submit -> lease -> heartbeat -> result or failure,
submit -> cancel, and the same through the /api/*_v0 compat endpoints), is driven
by client threads for --seconds. Every route of the app must appear in one of the
two parts, or the script stops: a new endpoint cannot be left out of the load test.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.batch.core import find_manifest  # noqa: E402
from benchmarks.classify_bench import sample_image  # noqa: E402
from benchmarks.loadgen import multipart_body, publish, wrk  # noqa: E402
from benchmarks.serverctl import ROOT, gunicorn_server  # noqa: E402

MODELS = ROOT / "saved_models"

# The worker endpoints are closed by default; the load test is its own worker.
WORKER_TOKEN = "load-test-worker-token"
REVIEW = "A thoughtful, well acted film with a script that never talks down to its audience. Loved it!"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
# Exercised by the job protocol driver (part 2), not by wrk; the V2 repository's load and unload
# reload every worker, so they are tested on their own (tests/test_v2_protocol.py), not under load.
JOB_FLOW_ROUTES = {
    ("POST", "/v2/repository/models/<name>/load"), ("POST", "/v2/repository/models/<name>/unload"),
    ("POST", "/jobs/lease"), ("POST", "/jobs/<job_id>/heartbeat"), ("POST", "/jobs/<job_id>/result"),
    ("POST", "/jobs/<job_id>/failure"), ("DELETE", "/jobs/<job_id>"), ("POST", "/api/getnexttask_v0"),
    ("POST", "/api/puttaskresult_v0"),
}


def v2_text(model: str) -> tuple[bytes, str]:
    """A V2 JSON request with one review."""
    body = {"inputs": [{"name": "review", "datatype": "BYTES", "shape": [1], "data": [REVIEW]}]}
    return json.dumps(body).encode(), JSON


def v2_binary_image(image: bytes) -> tuple[bytes, dict]:
    """A V2 request with the encoded image as a binary BYTES tensor, and its header."""
    tensor = len(image).to_bytes(4, "little") + image
    header = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                     "parameters": {"binary_data_size": len(tensor)}}]}).encode()
    return header + tensor, {"Inference-Header-Content-Length": str(len(header))}


class Client:
    """One keep-alive HTTP connection that times each call."""

    def __init__(self, base: str):
        """Connect to the server's host and port."""
        url = urlparse(base)
        self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)

    def call(self, method: str, path: str, body: dict | None = None,
             extra_headers: dict | None = None) -> tuple[int, bytes, float]:
        """(status, body, seconds) of one JSON request."""
        started = time.perf_counter()
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {WORKER_TOKEN}", **({"Content-Type": JSON} if data is not None else {}),
                   **(extra_headers or {})}
        self.conn.request(method, path, data, headers)
        response = self.conn.getresponse()
        return response.status, response.read(), time.perf_counter() - started


ANSWER_ID = "load-all-answer"  # the request id of the answer the feedback load labels


def setup_ids(base: str) -> dict:
    """A finished job and a finished compat task to read, made through the job protocol, and an answer to label."""
    client = Client(base)
    client.call("POST", "/models/decision_tree/predict", {"instances": [REVIEW]}, {"X-Request-ID": ANSWER_ID})
    _, body, _ = client.call("POST", "/jobs", {"model": "review_sentiment", "text": REVIEW})
    job_id = json.loads(body)["id"]
    _, body, _ = client.call("POST", "/jobs/lease", {"worker": "setup", "models": ["review_sentiment"]})
    lease = json.loads(body)
    client.call("POST", f"/jobs/{lease['job']['id']}/result", {"lease_id": lease["lease_id"], "result": {"ok": 1}})
    _, task_id, _ = client.call("POST", "/api/predict_v0", {"payload": base64.b64encode(b"cell").decode()})
    _, task, _ = client.call("POST", "/api/getnexttask_v0")
    task_id = task.decode().split("|", 1)[0]
    client.call("POST", "/api/puttaskresult_v0", {"task_id": task_id, "result": base64.b64encode(b"done").decode()})
    return {"job": lease["job"]["id"] if lease["job"]["id"] == job_id else job_id, "task": task_id}


def wrk_cases(ids: dict) -> list[tuple[str, str, str, bytes | None, str, dict]]:
    """(route, method, path, body, content type, headers) of every endpoint a fixed request can load."""
    image_path = sample_image()
    image = image_path.read_bytes()
    upload, upload_type = multipart_body("image", image_path.name, image)
    cell = find_manifest(MODELS, "malaria_cell")
    cell_v, review_v, svc_v = cell.version, find_manifest(MODELS, "review_sentiment").version, \
        find_manifest(MODELS, "linear_svc").version
    plot = next(name for name in sorted(cell.artifacts) if name.endswith(".png"))
    example = next((ROOT / "examples" / "cells").glob("*/*.png"))
    v2_image, v2_headers = v2_binary_image(image)
    review_form = ("review=" + REVIEW.replace(" ", "+")).encode()
    get = [
        ("/", "/"), ("/ui/classify", "/ui/classify"), ("/ui/review", "/ui/review"), ("/ui/models", "/ui/models"),
        ("/ui/jobs", "/ui/jobs"),
        ("/ui/models/<name>/<version>/<filename>", f"/ui/models/malaria_cell/{cell_v}/{plot}"),
        ("/docs", "/docs"), ("/docs/assets/<path:filename>", "/docs/assets/swagger-ui.css"),
        ("/static/web/<path:filename>", "/static/web/style.css"),
        ("/openapi.json", "/openapi.json"), ("/metrics", "/metrics"),
        ("/health/live", "/health/live"), ("/health/ready", "/health/ready"), ("/v2", "/v2"),
        ("/v2/health/live", "/v2/health/live"), ("/v2/health/ready", "/v2/health/ready"),
        ("/v2/models/<name>", "/v2/models/malaria_cell"),
        ("/v2/models/<name>/versions/<version>", f"/v2/models/review_sentiment/versions/{review_v}"),
        ("/v2/models/<name>/ready", "/v2/models/linear_svc/ready"),
        ("/v2/models/<name>/versions/<version>/ready", f"/v2/models/malaria_cell/versions/{cell_v}/ready"),
        ("/v2/models/stats", "/v2/models/stats"), ("/v2/models/<name>/stats", "/v2/models/review_sentiment/stats"),
        ("/v2/models/<name>/versions/<version>/stats", f"/v2/models/malaria_cell/versions/{cell_v}/stats"),
        ("/classify", "/classify"), ("/review", "/review"), ("/predict", "/predict"),
        ("/models", "/models"), ("/models/<name>", "/models/malaria_cell"),
        ("/models/<name>/versions/<version>", f"/models/linear_svc/versions/{svc_v}"),
        ("/models/<name>/monitoring", "/models/review_sentiment/monitoring?last=200"),
        ("/models/<name>/versions/<version>/monitoring", f"/models/malaria_cell/versions/{cell_v}/monitoring?last=200"),
        ("/ui/examples/cells/<label>/<filename>", f"/ui/examples/cells/{example.parent.name}/{example.name}"),
        ("/jobs/<job_id>", f"/jobs/{ids['job']}"), ("/jobs/<job_id>/result", f"/jobs/{ids['job']}/result"),
    ]
    cases = [(route, "GET", path, None, "", {}) for route, path in get]
    text_v2, _ = v2_text("review_sentiment")
    cases += [
        ("/classify", "POST", "/classify", upload, upload_type, {}),
        ("/review", "POST", "/review", review_form, FORM, {}),
        ("/review/feedback", "POST", "/review/feedback", json.dumps({"review": REVIEW, "label": "positive"}).encode(),
         JSON, {}),
        ("/models/<name>/feedback", "POST", "/models/decision_tree/feedback",
         json.dumps({"request_id": ANSWER_ID, "label": "positive"}).encode(), JSON, {}),
        ("/predict", "POST", "/predict", json.dumps({"model": "linear_svc", "review": REVIEW}).encode(), JSON, {}),
        ("/v2/models/<name>/infer", "POST", "/v2/models/review_sentiment/infer", text_v2, JSON, {}),
        ("/v2/models/<name>/versions/<version>/infer", "POST", f"/v2/models/malaria_cell/versions/{cell_v}/infer",
         v2_image, "application/octet-stream", v2_headers),
        ("/models/<name>/predict", "POST", "/models/decision_tree/predict",
         json.dumps({"instances": [REVIEW, REVIEW]}).encode(), JSON, {}),
        ("/models/<name>/versions/<version>/predict", "POST", f"/models/malaria_cell/versions/{cell_v}/predict",
         json.dumps({"instances": [{"b64": base64.b64encode(image).decode()}]}).encode(), JSON, {}),
        ("/jobs", "POST", "/jobs", json.dumps({"model": "review_sentiment", "text": REVIEW}).encode(), JSON, {}),
        ("/api/predict_v0", "POST", "/api/predict_v0",
         json.dumps({"payload": base64.b64encode(b"cell").decode()}).encode(), JSON, {}),
        ("/api/getresult_v0", "POST", "/api/getresult_v0", json.dumps({"task_id": ids["task"]}).encode(), JSON, {}),
        ("/v2/repository/index", "POST", "/v2/repository/index", b"{}", JSON, {}),
    ]
    return cases


def job_flow(base: str, seconds: float, threads: int) -> dict[str, list]:
    """Drive the dependent job steps from `threads` clients; per step: [latencies], [unexpected statuses]."""
    steps: dict[str, tuple[list, list]] = {}
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def record(step: str, status: int, seconds_taken: float, expected: tuple[int, ...]) -> None:
        with lock:
            latencies, bad = steps.setdefault(step, ([], []))
            latencies.append(seconds_taken)
            if status not in expected:
                bad.append(status)

    def drive(number: int) -> None:
        client = Client(base)
        cycle = 0
        while time.monotonic() < stop:
            cycle += 1
            status, body, took = client.call("POST", "/jobs", {"model": "review_sentiment", "text": REVIEW})
            record("POST /jobs", status, took, (202,))
            if cycle % 5 == 0:  # cancel it (it may have been leased by another client meanwhile)
                status, _, took = client.call("DELETE", f"/jobs/{json.loads(body)['id']}")
                record("DELETE /jobs/<id>", status, took, (200, 409))
                continue
            status, body, took = client.call("POST", "/jobs/lease", {"worker": f"w{number}",
                                                                     "models": ["review_sentiment"]})
            record("POST /jobs/lease", status, took, (200, 204))
            if status != 200:
                continue
            lease = json.loads(body)
            job_id, lease_id = lease["job"]["id"], lease["lease_id"]
            status, _, took = client.call("POST", f"/jobs/{job_id}/heartbeat", {"lease_id": lease_id})
            record("POST /jobs/<id>/heartbeat", status, took, (200,))
            if cycle % 7 == 0:
                status, _, took = client.call("POST", f"/jobs/{job_id}/failure",
                                              {"lease_id": lease_id, "error": "load test", "retry": False})
                record("POST /jobs/<id>/failure", status, took, (200,))
            else:
                status, _, took = client.call("POST", f"/jobs/{job_id}/result",
                                              {"lease_id": lease_id, "result": {"label": "positive"}})
                record("POST /jobs/<id>/result", status, took, (200,))
            # The same cycle through the compat protocol.
            status, _, took = client.call("POST", "/api/predict_v0", {"payload": base64.b64encode(b"x").decode()})
            record("POST /api/predict_v0", status, took, (200,))
            status, task, took = client.call("POST", "/api/getnexttask_v0")
            record("POST /api/getnexttask_v0", status, took, (200, 204))
            if status == 200:
                task_id = task.decode().split("|", 1)[0]
                status, _, took = client.call("POST", "/api/puttaskresult_v0",
                                              {"task_id": task_id, "result": base64.b64encode(b"ok").decode()})
                record("POST /api/puttaskresult_v0", status, took, (200, 409))

    workers = [threading.Thread(target=drive, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return {step: [latencies, bad] for step, (latencies, bad) in steps.items()}


def check_coverage(base: str, cases: list) -> None:
    """Stop when a documented operation is in neither part of the load test."""
    spec = json.loads(http_get(base + "/openapi.json"))
    covered = {(method, route) for route, method, *_ in cases} | JOB_FLOW_ROUTES
    missing = []
    for path, operations in spec["paths"].items():
        route = path.replace("{filename}", "<path:filename>") if "assets" in path or "static" in path else path
        route = route.replace("{", "<").replace("}", ">")
        missing += [f"{m.upper()} {path}" for m in operations if m != "parameters" and (m.upper(), route) not in covered]
    if missing:
        raise SystemExit(f"endpoints with no load: {missing}")


def http_get(url: str) -> bytes:
    """The body of a GET."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def percentile(values: list[float], share: float) -> float:
    """The share-quantile of values (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def main() -> None:
    """Both parts; print and save a markdown table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    lines = [f"gunicorn 2 workers, default settings; wrk -c{args.connections} for {args.seconds:g} s per endpoint", "",
             "| endpoint | req/s | p50 ms | p99 ms | requests | non-2xx | socket errors |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    failures = 0
    with gunicorn_server({"WEB_CONCURRENCY": "2", "MODELSERVE_WORKER_TOKEN": WORKER_TOKEN}) as (base, _, _):
        ids = setup_ids(base)
        cases = wrk_cases(ids)
        check_coverage(base, cases)
        for _, method, path, body, content_type, headers in cases:
            r = wrk(base + path, args.connections, args.seconds, method, body, content_type, headers=headers)
            failures += r["non2xx"] + r["errors"]
            lines.append(f"| {method} {path} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                         f"{r['requests']} | {r['non2xx']} | {r['errors']} |")
            print(lines[-1], flush=True)
        flow = job_flow(base, args.seconds * 2, threads=4)
    lines += ["", f"job protocol, 4 client threads for {2 * args.seconds:g} s (each step depends on the previous one)", "",
              "| step | calls/s | p50 ms | p99 ms | calls | unexpected statuses |", "| --- | --- | --- | --- | --- | --- |"]
    for step, (latencies, bad) in flow.items():
        failures += len(bad)
        lines.append(f"| {step} | {len(latencies) / (2 * args.seconds):.0f} | {1000 * percentile(latencies, 0.5):.1f} | "
                     f"{1000 * percentile(latencies, 0.99):.1f} | {len(latencies)} | {sorted(set(bad)) or 0} |")
    lines += ["", f"failed answers in all: {failures}"]
    publish(lines, args.out)
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
