"""OpenAPI coverage, docs page, request ids, JSON logs and Prometheus metrics."""
import contextlib
import json
import re
import time
import urllib.request

from openapi_spec_validator import validate

from tests.conftest import committed_version, get_json


def test_openapi_is_valid_and_documents_every_route(app, client):
    spec = client.get("/openapi.json").json
    validate(spec)
    from app.endpoints import is_documented

    missing, skipped = [], set()
    for rule in app.url_map.iter_rules():
        if not is_documented(rule.endpoint, app):
            skipped.add(rule.endpoint)
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = spec["paths"].get(path, {}).get(method.lower())
            if not operation or not any(str(code).startswith("2") for code in operation["responses"]):
                missing.append(f"{method} {path}")
    assert missing == [] and skipped == {"docs.swagger_asset", "web.static", "web.favicon"}


def test_docs_page_works_offline(client):
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "http://" not in html and "https://" not in html
    for asset in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert client.get(asset).status_code == 200


def test_every_response_has_a_request_id(client):
    first = client.get("/health/live")
    assert re.fullmatch(r"[0-9a-f]{32}", first.headers["X-Request-ID"])
    assert client.get("/nope").headers["X-Request-ID"]
    echoed = client.get("/health/live", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["X-Request-ID"] == "abc-123"
    unsafe = client.get("/health/live", headers={"X-Request-ID": "<script>alert(1)</script>"})
    assert re.fullmatch(r"[0-9a-f]{32}", unsafe.headers["X-Request-ID"])


def test_request_ids_sort_in_time_order(client):
    """Made ids start with the milliseconds since 1970 (as UUIDv7), so the log's request-id index grows at its end."""
    ids = []
    for _ in range(3):
        ids.append(client.get("/health/live").headers["X-Request-ID"])
        time.sleep(0.002)
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert abs(int(ids[-1][:12], 16) / 1000 - time.time()) < 5
    assert len({identifier[12:] for identifier in ids}) == 3  # the random part differs


@contextlib.contextmanager
def access_records():
    """The records the app.access logger hands its handlers during the block."""
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    access = logging.getLogger("app.access")
    access.addHandler(handler)
    try:
        yield records
    finally:
        access.removeHandler(handler)


def test_access_log_is_json_with_request_id(client):
    with access_records() as records:
        client.post("/review", data={"review": "Lovely."}, headers={"X-Request-ID": "req-42"})
    record = next(r for r in records if getattr(r, "request_id", None) == "req-42")
    from app.observability import JSON_FORMATTER

    entry = json.loads(JSON_FORMATTER.format(record))
    assert entry["status"] == 200 and entry["route"] == "/review" and entry["level"] == "INFO"
    assert entry["request_id"] == "req-42" and entry["duration_ms"] >= 0


def test_metrics_scraped_from_gunicorn(live_server):
    for _ in range(3):
        get_json(live_server + "/review", b"review=fine+film")
    get_json(live_server + "/review", b"", {"Content-Type": "text/plain"})
    with urllib.request.urlopen(live_server + "/metrics", timeout=10) as response:
        text = response.read().decode()
    assert 'modelserve_http_requests_total{method="POST",route="/review",status="200"}' in text
    assert 'modelserve_http_errors_total{status="415"}' in text
    review, cell = committed_version("review_sentiment"), committed_version("malaria_cell")
    assert re.search(rf'modelserve_inference_duration_seconds_count\{{model="review_sentiment",version="{review}"\}} [1-9]', text)
    assert f'modelserve_inference_in_flight{{model="review_sentiment",version="{review}"}}' in text
    assert re.search(rf'modelserve_inference_batch_size_bucket\{{le="1.0",model="review_sentiment",version="{review}"\}} [1-9]', text)
    assert f'modelserve_model_load_seconds{{model="malaria_cell",version="{cell}"}}' in text


def test_job_queue_and_build_metrics(tmp_path):
    from app import __version__, create_app

    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'm.db'}", "WORKER_TOKEN": "t",
                      "WORKER_MODELS": "m"})
    client = app.test_client()
    bearer = {"Authorization": "Bearer t"}
    job_id = client.post("/jobs", json={"model": "m", "text": "x"}).json["id"]
    client.post("/jobs", json={"model": "m", "text": "y"})
    lease_id = client.post("/jobs/lease", json={}, headers=bearer).json["lease_id"]
    client.post(f"/jobs/{job_id}/result", json={"lease_id": lease_id, "result": 1}, headers=bearer)
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'modelserve_jobs{model="m",status="succeeded"} 1.0' in metrics
    assert 'modelserve_jobs{model="m",status="queued"} 1.0' in metrics
    assert "modelserve_job_store_up 1.0" in metrics
    assert 'modelserve_build_info{python="' in metrics and f'version="{__version__}"' in metrics
    assert 'modelserve_job_duration_seconds_count{outcome="failed"}' in metrics  # exists before the first failure
    assert "modelserve_job_lease_expiries_total" in metrics
    app.extensions["db_engine"].dispose()


def test_operation_ids_are_unique_and_readable(client):
    import re

    spec = client.get("/openapi.json").json
    ids = [op["operationId"] for path in spec["paths"].values() for method, op in path.items() if method != "parameters"]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z0-9_]+", i) for i in ids), ids
    assert spec["paths"]["/review"]["post"]["operationId"] == "review_classify_review"


def test_tags_are_ordered_and_every_api_operation_has_an_example(client):
    from app.api.docs import TAGS
    from app.api.examples import NO_EXAMPLE

    spec = client.get("/openapi.json").json
    assert [t["name"] for t in spec["tags"]] == [name for name, _ in TAGS]
    assert spec["tags"][0]["name"] == "review"
    used = {tag for path in spec["paths"].values() for m, op in path.items() if m != "parameters" for tag in op["tags"]}
    assert used <= {name for name, _ in TAGS}
    without = [op["operationId"] for path in spec["paths"].values() for m, op in path.items()
               if m != "parameters" and op["operationId"] not in NO_EXAMPLE
               and not any("example" in media for answer in op["responses"].values()
                           for media in answer.get("content", {}).values())]
    assert without == []
    review = spec["paths"]["/review"]["post"]
    assert review["requestBody"]["content"]["application/json"]["example"] == {
        "review": "A moving, beautifully acted film. I loved it :)"}


def shape(value):
    """What must stay the same between two runs: a dict's keys, else the type."""
    return sorted(value) if isinstance(value, dict) else type(value).__name__


def test_examples_are_what_the_server_answers_now():
    """The committed examples come from a real run; run it again: same operations, statuses and fields.
    (Regenerate with `python -m app.api.examples` after changing an answer.)"""
    from app.api.examples import load_examples, run_examples

    committed, fresh = load_examples(), run_examples()
    assert sorted(fresh) == sorted(committed)
    for operation, example in fresh.items():
        assert example["status"] == committed[operation]["status"], operation
        assert example["request"] == committed[operation]["request"] or operation.startswith(("jobs_", "compat_")), operation
        assert shape(example["response"]) == shape(committed[operation]["response"]), operation


def inline_refs(node, components):
    """A schema with every #/components/schemas/ reference replaced by what it names."""
    if isinstance(node, dict):
        if "$ref" in node:
            return inline_refs(components[node["$ref"].rsplit("/", 1)[1]], components)
        return {k: inline_refs(v, components) for k, v in node.items()}
    if isinstance(node, list):
        return [inline_refs(v, components) for v in node]
    return node


def test_documented_schemas_accept_the_real_requests_and_answers(client):
    """The request and answer shapes are written once in the description; the recorded examples, which the
    server really took and gave, must satisfy them, so the description cannot say something the server does not do."""
    from openapi_schema_validator import OAS30Validator

    spec = client.get("/openapi.json").json
    components = spec["components"]["schemas"]
    checked = 0
    for path in spec["paths"].values():
        for method, op in path.items():
            if method == "parameters":
                continue
            media = [m for m in [op.get("requestBody", {}).get("content", {}).get("application/json")] if m]
            media += [m for answer in op["responses"].values() for m in answer.get("content", {}).values()]
            for item in media:
                if "example" in item and "schema" in item:
                    OAS30Validator(inline_refs(item["schema"], components)).validate(item["example"])
                    checked += 1
    assert checked >= 50


def test_log_writer_writes_queued_records_in_order_in_one_write():
    import io
    import logging
    import queue

    from app.observability import JSON_FORMATTER, LogWriter, RecordQueue

    class Stream(io.StringIO):
        writes = 0

        def write(self, text):
            Stream.writes += 1
            return super().write(text)

    stream = Stream()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSON_FORMATTER)
    records: queue.SimpleQueue = queue.SimpleQueue()
    writer = LogWriter(records, handler, interval=3600)  # only stop() writes here
    writer.start()
    logger = logging.Logger("test.writer")
    handler_queue = RecordQueue(records)
    handler_queue.addFilter(lambda record: "secret" not in record.getMessage())
    logger.addHandler(handler_queue)
    for i in range(5):
        logger.info("line %d", i, extra={"request_id": f"r{i}"})
    logger.info("a secret line")
    try:
        1 / 0
    except ZeroDivisionError:
        logger.exception("failed %s", "here")
    assert stream.getvalue() == ""  # queued, not written by the request thread
    writer.stop()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [entry["message"] for entry in lines] == [f"line {i}" for i in range(5)] + ["failed here"]
    assert [entry.get("request_id") for entry in lines[:5]] == [f"r{i}" for i in range(5)]
    assert "ZeroDivisionError" in lines[-1]["exc_info"] and lines[-1]["level"] == "ERROR"
    assert Stream.writes == 1


def test_access_lines_are_written_as_python_json_logger_writes_them():
    import logging

    from pythonjsonlogger.json import JsonFormatter

    from app.observability import JSON_FORMATTER, access_log

    general = JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"})
    with access_records() as records:
        access_log("r-\u00e9\"1", "POST", "/review/\u2603", "/review", 200, 0.0012345)
        # Not an access line: the general path.
        logging.getLogger("app.access").info("request %s", "with args", extra={"status": 1})
    for record in records:
        assert JSON_FORMATTER.format(record) == general.format(record)
    line = json.loads(JSON_FORMATTER.format(records[0]))
    assert line["request_id"] == "r-\u00e9\"1" and line["duration_ms"] == 1.23 and line["level"] == "INFO"
