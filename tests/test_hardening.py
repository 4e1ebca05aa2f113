"""Regression tests for the adversarial pass: closed by default, bounded inputs, results that cannot poison a job.

Each test reproduces one finding; the database-sensitive ones run on SQLite and PostgreSQL.
"""
import base64
import io
import json
import stat

import pytest

from app import create_app
from tests.conftest import SAVED_MODELS, committed_version

TOKEN = "hardening-worker-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def make_app(tmp_path, database_url=None, **settings):
    """An app on its own database and token file, serving the committed models."""
    config = {"TESTING": True, "DATABASE_URL": database_url or f"sqlite:///{tmp_path / 'h.db'}",
              "MODEL_DIR": str(SAVED_MODELS), "WORKER_TOKEN_FILE": str(tmp_path / "instance" / "worker_token"),
              **settings}
    return create_app(config)


@pytest.fixture
def worker_app(tmp_path, database_url):
    app = make_app(tmp_path, database_url, WORKER_TOKEN=TOKEN, WORKER_MODELS="m")
    yield app
    app.extensions["db_engine"].dispose()


def leased_job(client, model="m", text="x"):
    """Submit a job and lease it: (job id, lease id)."""
    job_id = client.post("/jobs", json={"model": model, "text": text}).json["id"]
    return job_id, client.post("/jobs/lease", json={"models": [model]}, headers=BEARER).json["lease_id"]


# -- 1. worker endpoints closed by default; results never served as active content -------------------

def test_worker_endpoints_are_closed_by_default_with_a_generated_owner_only_token(tmp_path):
    app = make_app(tmp_path, WORKER_MODELS="m")
    client = app.test_client()
    job_id = client.post("/jobs", json={"model": "m", "text": "secret payload"}).json["id"]
    for path in ("/jobs/lease", f"/jobs/{job_id}/heartbeat", f"/jobs/{job_id}/result", f"/jobs/{job_id}/failure",
                 "/api/getnexttask_v0", "/api/puttaskresult_v0"):
        assert client.post(path, json={}).status_code == 401, path
    token_file = tmp_path / "instance" / "worker_token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 32
    leased = client.post("/jobs/lease", json={}, headers={"Authorization": f"Bearer {token}"})
    assert leased.status_code == 200 and leased.json["job"]["id"] == job_id
    # A second app (another worker process) finds the same token instead of making its own.
    assert make_app(tmp_path).extensions["worker_token"] == token


def test_open_worker_endpoints_only_when_asked(tmp_path):
    client = make_app(tmp_path, OPEN_WORKER_ENDPOINTS=True).test_client()
    assert client.post("/jobs/lease", json={}).status_code == 204
    with pytest.raises(ValueError, match="OPEN_WORKER_ENDPOINTS"):
        make_app(tmp_path, OPEN_WORKER_ENDPOINTS="yes")


def test_a_result_is_a_download_never_a_page(worker_app):
    client = worker_app.test_client()
    job_id, lease_id = leased_job(client)
    script = base64.b64encode(b"<script>alert(document.cookie)</script>").decode()
    client.post(f"/jobs/{job_id}/result", json={"lease_id": lease_id, "result_base64": script,
                                                 "content_type": "text/html"}, headers=BEARER)
    response = client.get(f"/jobs/{job_id}/result")
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_no_response_allows_inline_script(client):
    for path in ("/", "/ui/review", "/ui/classify", "/ui/jobs", "/docs", "/health/live", "/openapi.json"):
        policy = client.get(path).headers["Content-Security-Policy"]
        assert "unsafe-inline" not in policy, path
    page = client.get("/ui/review").get_data(as_text=True)
    assert "<script>" not in page and "review.js" in page


# -- 2. compat results are bound to the lease getnexttask_v0 handed out ----------------------------------

def test_compat_result_from_anyone_but_the_lease_holder_is_409(worker_app):
    client = worker_app.test_client()
    task_id = client.post("/api/predict_v0", json={"payload": base64.b64encode(b"p").decode()}).get_data(as_text=True)
    handed = client.post("/api/getnexttask_v0", headers=BEARER).get_data(as_text=True).split("|")[0]
    intruder = client.post("/api/puttaskresult_v0", json={"task_id": task_id, "result": "aW50cnVkZXI="},
                           headers=BEARER)
    assert intruder.status_code == 409
    forged = client.post("/api/puttaskresult_v0", json={"task_id": f"{task_id}.{'0' * 32}", "result": "eA=="},
                         headers=BEARER)
    assert forged.status_code == 409
    real = client.post("/api/puttaskresult_v0", json={"task_id": handed, "result": base64.b64encode(b"ok").decode()},
                       headers=BEARER)
    assert real.status_code == 200
    assert client.post("/api/getresult_v0", json={"task_id": task_id}).get_data(as_text=True) == "b2s="
    # A job that is not a compat task cannot be completed through the compat endpoint.
    job_id, lease_id = leased_job(client)
    other = client.post("/api/puttaskresult_v0", json={"task_id": f"{job_id}.{lease_id}", "result": "eA=="},
                        headers=BEARER)
    assert other.status_code == 404


# -- 3. API keys cover every endpoint; jobs belong to their key; OpenAPI says so ----------------------------

def test_api_keys_cover_every_endpoint_but_health_docs_and_pages_without_data(tmp_path):
    app = make_app(tmp_path, API_KEYS="k1,k2", WORKER_TOKEN=TOKEN, WORKER_MODELS="m")
    client = app.test_client()
    k1, k2 = {"X-API-Key": "k1"}, {"Authorization": "Bearer k2"}
    guarded = [("post", "/review", {"data": {"review": "Great film"}}),
               ("post", "/review/feedback", {"data": {"review": "Great film", "label": "positive"}}),
               ("post", "/predict", {"json": {"features": [1, 2, 3, 4]}}),
               ("post", "/v2/models/review_sentiment/infer",
                {"json": {"inputs": [{"name": "review", "datatype": "BYTES", "shape": [1], "data": ["good"]}]}}),
               ("get", "/models", {}), ("get", "/v2/models/review_sentiment", {}), ("post", "/jobs", {"json": {}}),
               # What lists models, versions, metrics, refusals or jobs (issue: they were open to anyone).
               ("get", "/metrics", {}), ("get", "/ui/models", {}), ("get", "/ui/jobs", {})]
    for method, path, kwargs in guarded:
        refused = getattr(client, method)(path, **kwargs)
        assert refused.status_code == 401 and "WWW-Authenticate" in refused.headers, path
        assert getattr(client, method)(path, headers=k1, **kwargs).status_code != 401, path
    for path in ("/health/live", "/health/ready", "/v2/health/live", "/docs", "/openapi.json", "/", "/ui/review"):
        assert client.get(path).status_code == 200, path
    # Readiness says whether the server can serve to anyone; which models, and why others are refused, to keys.
    assert set(client.get("/health/ready").json) == {"ready", "loading", "overloaded"}
    assert "models" in client.get("/health/ready", headers=k1).json
    classify = client.post("/classify", data={"image": (io.BytesIO(b"x"), "c.png")})
    assert classify.status_code == 401
    # Jobs belong to the key that made them.
    job_id = client.post("/jobs", json={"model": "m", "text": "x"}, headers=k1).json["id"]
    assert client.get(f"/jobs/{job_id}", headers=k2).status_code == 404
    assert client.delete(f"/jobs/{job_id}", headers=k2).status_code == 404
    assert client.get(f"/jobs/{job_id}", headers=k1).json["status"] == "queued"
    # Worker endpoints take the worker token, not a client key.
    assert client.post("/jobs/lease", json={}, headers=k1).status_code == 401
    assert client.post("/jobs/lease", json={}, headers=BEARER).status_code == 200
    spec = client.get("/openapi.json").json
    assert {"apiKey", "apiKeyBearer", "workerToken"} <= set(spec["components"]["securitySchemes"])
    assert spec["paths"]["/review"]["post"]["security"] == [{"apiKey": []}, {"apiKeyBearer": []}]
    assert spec["paths"]["/jobs/lease"]["post"]["security"] == [{"workerToken": []}]
    assert "security" not in spec["paths"]["/health/live"]["get"]


# -- 4. rate limits count per validated key, else per address --------------------------------------------------

def test_invented_keys_do_not_buy_new_quota(tmp_path):
    client = make_app(tmp_path, RATELIMIT_DEFAULT="5/minute").test_client()
    statuses = [client.get("/models", headers={"X-API-Key": f"random-{i}"}).status_code for i in range(8)]
    assert statuses.count(200) == 5 and statuses[-1] == 429
    keyed = make_app(tmp_path / "k", RATELIMIT_DEFAULT="5/minute", API_KEYS="k1,k2").test_client()
    assert [keyed.get("/models", headers={"X-API-Key": "k1"}).status_code for _ in range(6)][-1] == 429
    assert keyed.get("/models", headers={"X-API-Key": "k2"}).status_code == 200  # its own quota


# -- 8, 9. strict JSON: no NaN or Infinity, deep nesting is a 400 ----------------------------------------------

@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(worker_app, constant):
    client = worker_app.test_client()
    lease = client.post("/jobs/lease", data=f'{{"wait": {constant}}}', content_type="application/json",
                        headers=BEARER)
    assert lease.status_code == 400
    predict = client.post("/predict", data=f'{{"features": [{constant}, 1, 2, 3]}}', content_type="application/json")
    assert predict.status_code == 400


def test_deep_nesting_is_400_everywhere(worker_app):
    client = worker_app.test_client()
    deep = "[" * 100_000 + "]" * 100_000
    for path in ("/predict", "/review", "/jobs", "/v2/models/review_sentiment/infer", "/models/logistic_regression/predict",
                 "/review/feedback", "/api/predict_v0"):
        response = client.post(path, data=deep, content_type="application/json")
        assert response.status_code == 400, (path, response.status_code)
    assert client.post("/jobs/lease", data=deep, content_type="application/json", headers=BEARER).status_code == 400


# -- 11. metric labels stay bounded -------------------------------------------------------------------------------

def test_invented_http_methods_do_not_grow_the_metrics(client):
    for i in range(50):
        client.open("/review", method=f"QWERTY{i}")
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "QWERTY" not in metrics and 'method="other"' in metrics


# -- 12, 13. results and stored text that would poison a job or break one database ----------------------------

@pytest.mark.parametrize("body, fragment", [
    ({"result_base64": "eA==", "content_type": "text/plain\r\nX-Injected: 1"}, "media type"),
    ({"result_base64": "eA==", "content_type": "text/" + "x" * 200}, "media type"),
    ({"result_base64": "eA==", "content_type": "text/plain\x00"}, "media type"),
    ({"result_base64": base64.b64encode(b"not json").decode(), "content_type": "application/json"}, "not JSON"),
    ({"result_base64": base64.b64encode(b"[NaN]").decode(), "content_type": "application/json"}, "not JSON"),
])
def test_bad_results_are_400_and_the_job_stays_readable(worker_app, body, fragment):
    client = worker_app.test_client()
    job_id, lease_id = leased_job(client)
    refused = client.post(f"/jobs/{job_id}/result", json={"lease_id": lease_id, **body}, headers=BEARER)
    assert refused.status_code == 400 and fragment in refused.json["error"]
    assert client.get(f"/jobs/{job_id}").json["status"] == "running"
    good = client.post(f"/jobs/{job_id}/result", json={"lease_id": lease_id, "result": {"label": "ok"}}, headers=BEARER)
    assert good.status_code == 200 and client.get(f"/jobs/{job_id}").json["result"] == {"label": "ok"}


def test_nan_result_is_refused(worker_app):
    client = worker_app.test_client()
    job_id, lease_id = leased_job(client)
    refused = client.post(f"/jobs/{job_id}/result", data=json.dumps({"lease_id": lease_id, "result": float("nan")}),
                          content_type="application/json", headers=BEARER)
    assert refused.status_code == 400 and client.get(f"/jobs/{job_id}").status_code == 200


def test_text_no_database_can_store_is_400_on_both(worker_app):
    client = worker_app.test_client()
    assert client.post("/review/feedback", data={"review": "good\x00film", "label": "positive"}).status_code == 400
    assert client.post("/jobs/lease", json={"worker": "w\x00"}, headers=BEARER).status_code == 400
    long_type = client.post("/jobs?model=m", data=b"x", content_type="application/" + "x" * 200)
    assert long_type.status_code == 400
    assert client.post("/jobs", json={"model": "m", "payload_base64": "eA==", "content_type": "a/b\x00"}).status_code == 400
    job_id, lease_id = leased_job(client)
    assert client.post(f"/jobs/{job_id}/failure", json={"lease_id": lease_id, "error": "bad\x00"},
                       headers=BEARER).status_code == 400
    assert client.get("/jobs/abc%00def").status_code == 404


# -- 14. the queue is bounded, unknown models are refused, unclaimed jobs expire --------------------------------

def test_queue_bounds_per_client_and_in_total(tmp_path, database_url):
    app = make_app(tmp_path, database_url, WORKER_MODELS="m", MAX_QUEUED_JOBS_PER_CLIENT=3,
                   MAX_QUEUED_JOB_BYTES_PER_CLIENT=1000, MAX_QUEUED_JOBS=100, MAX_QUEUED_JOB_BYTES=1500)
    client = app.test_client()
    assert [client.post("/jobs", json={"model": "m", "text": "x"}).status_code for _ in range(3)] == [202] * 3
    over = client.post("/jobs", json={"model": "m", "text": "x"})
    assert over.status_code == 429 and int(over.headers["Retry-After"]) > 0
    other = {"environ_base": {"REMOTE_ADDR": "10.0.0.2"}}
    assert client.post("/jobs", json={"model": "m", "text": "y" * 900}, **other).status_code == 202
    assert client.post("/jobs", json={"model": "m", "text": "z" * 900}, **other).status_code == 429  # its bytes
    third = {"environ_base": {"REMOTE_ADDR": "10.0.0.3"}}
    full = client.post("/jobs", json={"model": "m", "text": "w" * 800}, **third)
    assert full.status_code == 503 and "Retry-After" in full.headers  # the whole queue's bytes
    app.extensions["db_engine"].dispose()


def test_jobs_for_models_nobody_serves_are_refused(tmp_path):
    client = make_app(tmp_path).test_client()
    refused = client.post("/jobs", json={"model": "nobody", "text": "x"})
    assert refused.status_code == 404 and "MODELSERVE_WORKER_MODELS" in refused.json["error"]
    assert client.post("/jobs", json={"model": "review_sentiment", "text": "fine"}).status_code == 202
    assert make_app(tmp_path / "any", WORKER_MODELS="*").test_client().post(
        "/jobs", json={"model": "nobody", "text": "x"}).status_code == 202


def test_queued_jobs_expire(tmp_path, database_url):
    import datetime as dt

    import sqlalchemy as sa

    from app.database import jobs

    app = make_app(tmp_path, database_url, WORKER_MODELS="m", JOB_QUEUED_SECONDS=60)
    client = app.test_client()
    job_id = client.post("/jobs", json={"model": "m", "text": "x"}).json["id"]
    with app.extensions["db_engine"].begin() as conn:
        conn.execute(sa.update(jobs).where(jobs.c.id == job_id)
                     .values(created_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=61)))
    assert app.extensions["job_store"].expire_finished() == 1
    expired = client.get(f"/jobs/{job_id}").json
    assert expired["status"] == "expired" and "no worker took the job" in expired["error"]
    app.extensions["db_engine"].dispose()


# -- 15. smaller holes -------------------------------------------------------------------------------------------

def test_invalid_utf8_in_multipart_text_is_400(worker_app):
    client = worker_app.test_client()
    for path, fields in (("/review", {"review": b"caf\xe9 film"}), ("/jobs", {"model": "m", "text": b"caf\xe9"})):
        body = b"".join(b'--B\r\nContent-Disposition: form-data; name="' + name.encode() + b'"\r\n\r\n'
                        + (value if isinstance(value, bytes) else value.encode()) + b"\r\n"
                        for name, value in fields.items()) + b"--B--\r\n"
        response = client.post(path, data=body, content_type="multipart/form-data; boundary=B")
        assert response.status_code == 400 and "UTF-8" in response.json["error"], path


def test_empty_compat_payload_is_400(worker_app):
    client = worker_app.test_client()
    assert client.post("/api/predict_v0?payload=").status_code == 400
    assert client.post("/api/predict_v0", json={"payload": ""}).status_code == 400


# -- 19. idempotent storing POSTs -----------------------------------------------------------------------------------

def test_idempotency_key_on_jobs(worker_app):
    client = worker_app.test_client()
    first = client.post("/jobs", json={"model": "m", "text": "x"}, headers={"Idempotency-Key": "abc-1"})
    again = client.post("/jobs", json={"model": "m", "text": "x"}, headers={"Idempotency-Key": "abc-1"})
    assert first.status_code == again.status_code == 202
    assert again.json["id"] == first.json["id"] and again.headers["Idempotent-Replayed"] == "true"
    changed = client.post("/jobs", json={"model": "m", "text": "other"}, headers={"Idempotency-Key": "abc-1"})
    assert changed.status_code == 422
    assert client.post("/jobs", json={"model": "m", "text": "x"}, headers={"Idempotency-Key": "a b"}).status_code == 400
    assert worker_app.extensions["job_store"].counts()["queued"] == 1


def test_feedback_is_stored_once(worker_app):
    client = worker_app.test_client()
    form = {"review": "A lovely, moving film.", "label": "positive"}
    first = client.post("/review/feedback", data=form)
    repeat = client.post("/review/feedback", data=form)
    assert first.status_code == 201 and repeat.status_code == 200
    assert repeat.json["id"] == first.json["id"] and repeat.json["duplicate"] is True
    keyed = client.post("/review/feedback", data={**form, "label": "negative"}, headers={"Idempotency-Key": "k-9"})
    assert keyed.status_code == 201
    assert client.post("/review/feedback", data={**form, "label": "negative"},
                       headers={"Idempotency-Key": "k-9"}).json["id"] == keyed.json["id"]
    assert client.post("/review/feedback", data={"review": "Other text", "label": "negative"},
                       headers={"Idempotency-Key": "k-9"}).status_code == 422
    other_client = client.post("/review/feedback", data=form, environ_base={"REMOTE_ADDR": "10.9.9.9"})
    assert other_client.status_code == 201


def test_one_request_decodes_a_bounded_number_of_pixels(tmp_path):
    import struct

    from app.preprocessing.image import blank_png

    client = make_app(tmp_path, MAX_BATCH_IMAGE_PIXELS=25_000).test_client()

    def infer(count):  # `count` 100x100 PNGs in one V2 request (binary tensor extension)
        tensor = b"".join(struct.pack("<I", len(png)) + png for png in [blank_png(100)] * count)
        header = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [count],
                                         "parameters": {"binary_data_size": len(tensor)}}]}).encode()
        return client.post("/v2/models/malaria_cell/infer", data=header + tensor,
                           headers={"Inference-Header-Content-Length": str(len(header))},
                           content_type="application/octet-stream")

    refused = infer(3)  # 30,000 pixels in all
    assert refused.status_code == 413 and "pixels in all" in refused.json["error"]
    assert infer(2).status_code == 200


def test_gunicorn_refusals_are_json(live_server):
    import socket

    port = int(live_server.rsplit(":", 1)[1])
    for request in (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET / HTTP/1.1\r\nHost: x\r\nBad\x01Header: 1\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split()[1] in (b"400", b"414") and b"Content-Type: application/json" in head, head
        assert "error" in json.loads(body)


# -- 17. the pull worker outlasts an outage ------------------------------------------------------------------------

def test_worker_retries_until_the_server_answers(monkeypatch, caplog):
    import logging

    from app.jobs import pull as worker

    class Flaky:
        """A server that is unreachable 12 times, then busy (503) twice, then takes the result."""

        base_url, calls = "http://flaky", 0

        def post(self, path, body):
            self.calls += 1
            if self.calls <= 12:
                raise ConnectionRefusedError("connection refused")
            return (503, {"error": "database unavailable"}) if self.calls <= 14 else (200, {"recorded": True})

    delays = []
    monkeypatch.setattr(worker, "backoff", lambda attempt, cap=30.0: delays.append(attempt) or 0.0)
    caplog.set_level(logging.WARNING, logger="app.jobs.pull")
    logging.getLogger("app.jobs.pull").addHandler(caplog.handler)
    server = Flaky()
    assert worker.post_until_answered(server, "/jobs/x/result", {"lease_id": "l"}) == (200, {"recorded": True})
    assert server.calls == 15 and delays == list(range(14))
    assert "retrying until the server answers" in caplog.text


def test_backoff_is_capped_and_jittered():
    from app.jobs.pull import backoff

    waits = [backoff(attempt) for attempt in range(20) for _ in range(20)]
    assert max(waits) <= 30.0 and min(waits[-20:]) >= 15.0  # capped at 30 s, at least half of it
    assert len({round(w, 6) for w in waits[-20:]}) > 1  # jittered


# -- the credential battery: every operation, every credential variant, no 5xx ------------------------------------

# Who may call what, as the views declare it (app/endpoints.py): the worker token guards the pull workers' calls
# and the operator's load and unload; anyone may read liveness, readiness, the docs and the pages that hold
# no data (with their static files); everything else needs a client key when keys are configured.
WORKER_ONLY = {"jobs.lease_job", "jobs.heartbeat", "jobs.post_result", "jobs.post_failure", "compat.get_next_task_v0",
               "compat.put_task_result_v0", "v2.repository_load", "v2.repository_unload"}
PUBLIC = {"health.live", "health.ready", "v2.server_live", "v2.server_ready", "web.home", "web.classify_page",
          "web.review_page", "web.favicon", "web.static", "docs.openapi_json", "docs.docs_page", "docs.swagger_asset"}


def test_the_views_declare_who_may_call_them(app):
    from app.endpoints import CLIENT, PUBLIC as ANYONE, WORKER, access_of

    declared = {rule.endpoint: access_of(rule.endpoint, app) for rule in app.url_map.iter_rules()}
    assert {e for e, access in declared.items() if access == WORKER} == WORKER_ONLY
    assert {e for e, access in declared.items() if access == ANYONE} == PUBLIC
    assert all(access == CLIENT for e, access in declared.items() if e not in WORKER_ONLY | PUBLIC)


def test_every_operation_with_every_credential_variant(tmp_path, database_url, model_dir):
    # Its own model folder: the repository's unload, called with the worker token, changes it.
    app = make_app(tmp_path, database_url, API_KEYS="k1", WORKER_TOKEN=TOKEN, WORKER_MODELS="m",
                   MODEL_DIR=str(model_dir))
    app.extensions["model_registry"].load_all()
    client = app.test_client()
    values = {"job_id": "0" * 32, "name": "review_sentiment", "version": committed_version("review_sentiment"),
              "filename": "roc_curve.png", "label": "Parasitized"}
    variants = {"none": {}, "wrong": {"Authorization": "Bearer wrong"}, "key": {"X-API-Key": "k1"},
                "worker": BEARER, "key-as-bearer": {"Authorization": "Bearer k1"}, "empty": {"X-API-Key": ""}}
    checked = 0
    for rule in app.url_map.iter_rules():
        if "static" in rule.endpoint or rule.endpoint == "docs.swagger_asset":
            continue
        path = rule.rule
        for arg in rule.arguments:
            path = path.replace(f"<{arg}>", values[arg]).replace(f"<path:{arg}>", values[arg])
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            for variant, headers in variants.items():
                response = client.open(path, method=method, json={}, headers=headers)
                assert response.status_code < 500, (method, path, variant, response.status_code)
                worker = rule.endpoint in WORKER_ONLY
                if (worker and variant not in ("worker",)) or (not worker and rule.endpoint not in PUBLIC
                                                               and variant not in ("key", "key-as-bearer")):
                    assert response.status_code == 401, (method, path, variant, response.status_code)
                checked += 1
    assert checked > 250
    app.extensions["db_engine"].dispose()


# -- 6. refusals name the model and the reason, not the server's paths ----------------------------------------------

def test_refused_models_do_not_show_paths(tmp_path, model_dir):
    import shutil

    old = committed_version("linear_svc")
    new = str(int(old) + 1)
    manifest = json.loads((model_dir / "linear_svc" / old / "manifest.json").read_text())
    for artifact in manifest["artifacts"]:
        (model_dir / "linear_svc" / old / artifact).unlink()
    shutil.copytree(model_dir / "linear_svc" / old, model_dir / "linear_svc" / new)
    (model_dir / "linear_svc" / new / "manifest.json").write_text(json.dumps({**manifest, "version": int(new),
                                                                            "runtime": "no-such-runtime"}))
    app = make_app(tmp_path, MODEL_DIR=str(model_dir))
    app.extensions["model_registry"].load_all()
    client = app.test_client()
    refused = client.get("/health/ready").json["refused"]
    assert set(refused) == {f"linear_svc/{old}", f"linear_svc/{new}"}
    answer = client.post("/models/linear_svc/predict", json={"instances": [[1, 2, 3, 4]]})
    for text in [*refused.values(), answer.get_data(as_text=True)]:
        assert str(tmp_path) not in text and "/saved_models" not in text, text


def test_nul_and_lone_surrogates_in_names_and_texts_are_400_on_both(worker_app):
    """Found by the fuzz battery on PostgreSQL: a NUL in a leased model name was a 500."""
    client = worker_app.test_client()
    lease = client.post("/jobs/lease", data='{"models": ["\\u0000Q", "m"]}', content_type="application/json",
                        headers=BEARER)
    assert lease.status_code == 400
    for body in ('{"model": "m", "text": "bad \\ud800 text"}',):
        assert client.post("/jobs", data=body, content_type="application/json").status_code == 400
    feedback = client.post("/review/feedback", data='{"review": "odd \\udc37 review", "label": "positive"}',
                           content_type="application/json")
    assert feedback.status_code == 400
    worker = client.post("/jobs/lease", data='{"worker": "w\\ud800"}', content_type="application/json", headers=BEARER)
    assert worker.status_code == 400
