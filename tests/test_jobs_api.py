"""Job REST API, worker auth and the AzureMLDeploy-compatible endpoints (test client, both stores)."""
import base64
import io
import json

import pytest

from app import create_app

TOKEN = "worker-secret"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def jobs_client(database_url):
    app = create_app({"TESTING": True, "DATABASE_URL": database_url, "WORKER_TOKEN": TOKEN,
                      "WORKER_MODELS": "m,custom"})
    yield app.test_client()
    app.extensions["db_engine"].dispose()


def lease(client, **body):
    return client.post("/jobs/lease", json=body, headers=BEARER)


def test_text_job_round_trip(jobs_client):
    submitted = jobs_client.post("/jobs", json={"model": "review_sentiment", "text": "Great film!"})
    assert submitted.status_code == 202
    job_id = submitted.json["id"]
    assert submitted.headers["Location"] == f"/jobs/{job_id}"
    leased = lease(jobs_client, worker="w1", wait=0)
    assert leased.status_code == 200
    assert base64.b64decode(leased.json["job"]["payload_base64"]) == b"Great film!"
    lease_id = leased.json["lease_id"]
    assert jobs_client.post(f"/jobs/{job_id}/heartbeat", json={"lease_id": lease_id}, headers=BEARER).status_code == 200
    posted = jobs_client.post(f"/jobs/{job_id}/result", json={"lease_id": lease_id, "result": {"label": "positive"}},
                              headers=BEARER)
    assert posted.status_code == 200 and posted.json["recorded"] is True
    polled = jobs_client.get(f"/jobs/{job_id}").json
    assert polled["status"] == "succeeded" and polled["result"] == {"label": "positive"}
    assert jobs_client.get(f"/jobs/{job_id}/result").json == {"label": "positive"}


def test_image_and_raw_payloads(jobs_client):
    from app.preprocessing.image import blank_png

    fake = jobs_client.post("/jobs", data={"model": "malaria_cell", "image": (io.BytesIO(b"\x89PNG fake"), "c.png")},
                            content_type="multipart/form-data")
    assert fake.status_code == 422 and "not a PNG or JPEG" in fake.json["error"]  # checked as /classify would
    image = jobs_client.post("/jobs", data={"model": "malaria_cell", "image": (io.BytesIO(blank_png()), "c.png")},
                             content_type="multipart/form-data")
    raw = jobs_client.post("/jobs?model=custom", data=b"\x00\x01\x02", content_type="application/octet-stream")
    assert image.status_code == raw.status_code == 202
    first = lease(jobs_client).json["job"]
    second = lease(jobs_client).json["job"]
    assert first["content_type"] == "image/png" and second["content_type"] == "application/octet-stream"
    assert base64.b64decode(second["payload_base64"]) == b"\x00\x01\x02"


@pytest.mark.parametrize("kwargs, fragment", [
    ({"json": {"text": "no model"}}, "'model'"),
    ({"json": {"model": "m"}}, "needs 'text', 'instances' or 'payload_base64'"),
    ({"json": {"model": "m", "payload_base64": "***"}}, "not valid base64"),
    ({"json": {"model": "bad name!", "text": "x"}}, "'model'"),
    ({"data": b"", "content_type": "application/octet-stream", "query_string": {"model": "m"}}, "empty"),
])
def test_bad_submissions_are_400(jobs_client, kwargs, fragment):
    response = jobs_client.post("/jobs", **kwargs)
    assert response.status_code == 400 and fragment in response.json["error"]


def test_empty_queue_is_204_and_unknown_job_404(jobs_client):
    assert lease(jobs_client, wait=0).status_code == 204
    assert jobs_client.get("/jobs/nope").status_code == 404


def test_worker_endpoints_need_the_token(jobs_client):
    response = jobs_client.post("/jobs/lease", json={})
    assert response.status_code == 401 and "Bearer" in response.json["error"]
    wrong = jobs_client.post("/jobs/lease", json={}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert TOKEN not in wrong.get_data(as_text=True)


def test_stale_lease_gets_409_and_cannot_overwrite(jobs_client):
    job_id = jobs_client.post("/jobs", json={"model": "m", "text": "x"}).json["id"]
    first = lease(jobs_client).json["lease_id"]
    jobs_client.post(f"/jobs/{job_id}/result", json={"lease_id": first, "result": "first"}, headers=BEARER)
    stale = jobs_client.post(f"/jobs/{job_id}/result", json={"lease_id": "0" * 32, "result": "late"},
                             headers=BEARER)
    assert stale.status_code == 409 and "already succeeded" in stale.json["error"]
    repeat = jobs_client.post(f"/jobs/{job_id}/result", json={"lease_id": first, "result": "first"}, headers=BEARER)
    assert repeat.status_code == 200 and repeat.json["recorded"] is False
    assert jobs_client.get(f"/jobs/{job_id}").json["result"] == "first"


def test_cancel(jobs_client):
    job_id = jobs_client.post("/jobs", json={"model": "m", "text": "x"}).json["id"]
    assert jobs_client.delete(f"/jobs/{job_id}").json["status"] == "canceled"
    assert jobs_client.delete(f"/jobs/{job_id}").status_code == 409
    assert lease(jobs_client).status_code == 204


def test_failure_with_retry_false_fails_the_job(jobs_client):
    job_id = jobs_client.post("/jobs", json={"model": "m", "text": "x"}).json["id"]
    lease_id = lease(jobs_client).json["lease_id"]
    response = jobs_client.post(f"/jobs/{job_id}/failure", json={"lease_id": lease_id, "error": "bad input",
                                                                 "retry": False}, headers=BEARER)
    assert response.json["job"]["status"] == "failed" and response.json["job"]["error"] == "bad input"


def test_api_keys_protect_client_endpoints(database_url):
    app = create_app({"TESTING": True, "DATABASE_URL": database_url, "API_KEYS": "k1,k2", "WORKER_MODELS": "m"})
    client = app.test_client()
    assert client.post("/jobs", json={"model": "m", "text": "x"}).status_code == 401
    assert client.post("/jobs", json={"model": "m", "text": "x"}, headers={"X-API-Key": "k2"}).status_code == 202
    app.extensions["db_engine"].dispose()


# -- AzureMLDeploy compatibility: the exact requests of its Ajax page and notebook worker loop --------------

def test_compat_replay_page_and_notebook(jobs_client):
    payload = base64.b64encode(b'{"values": [1, 2, 3]}').decode()
    # The page: $.ajax({type: "POST", url: host + "/api/predict_v0", data: JSON.stringify({payload: ...})})
    # jQuery sends that JSON text with its default form content type.
    task_id = jobs_client.post("/api/predict_v0", data=json.dumps({"payload": payload}),
                               content_type="application/x-www-form-urlencoded; charset=UTF-8").get_data(as_text=True)
    assert len(task_id) == 32
    # Its result poll, before the worker is done: empty.
    assert jobs_client.post("/api/getresult_v0", data=json.dumps({"task_id": task_id}),
                            content_type="application/x-www-form-urlencoded; charset=UTF-8").data == b""

    # The notebook loop: requests.post(host + "/api/getnexttask_v0").text -> "<id>|<payload>"
    text = jobs_client.post("/api/getnexttask_v0", headers=BEARER).get_data(as_text=True)
    got_id, got_payload = text.split("|", 1)
    assert got_id.startswith(task_id + ".") and base64.b64decode(got_payload) == b'{"values": [1, 2, 3]}'
    result = base64.b64encode(b"6").decode()
    # requests.post(host + "/api/puttaskresult_v0", json={"task_id": ..., "result": ...})
    put = jobs_client.post("/api/puttaskresult_v0", json={"task_id": got_id, "result": result}, headers=BEARER)
    assert put.get_data(as_text=True) == got_id
    # Nothing left for the loop: empty text.
    assert jobs_client.post("/api/getnexttask_v0", headers=BEARER).data == b""

    answer = jobs_client.post("/api/getresult_v0", data=json.dumps({"task_id": task_id}),
                              content_type="application/x-www-form-urlencoded; charset=UTF-8")
    assert base64.b64decode(answer.get_data(as_text=True)) == b"6"
    # A compat task is a job like any other.
    assert jobs_client.get(f"/jobs/{task_id}").json["status"] == "succeeded"


def test_compat_payload_in_query_string(jobs_client):
    payload = base64.b64encode(b"abc").decode()
    task_id = jobs_client.post(f"/api/predict_v0?payload={payload}").get_data(as_text=True)
    assert jobs_client.get(f"/jobs/{task_id}").json["model"] == "compat"


@pytest.mark.parametrize("path, body, fragment", [
    ("/api/predict_v0", "{}", "payload"),
    ("/api/predict_v0", '{"payload": "%%%"}', "not valid base64"),
    ("/api/predict_v0", "not json", "JSON"),
    ("/api/getresult_v0", '{"task_id": "nope"}', "unknown task_id"),
])
def test_compat_errors_are_400(jobs_client, path, body, fragment):
    response = jobs_client.post(path, data=body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400 and fragment in response.json["error"]


def test_a_worker_whose_server_is_away_at_the_acknowledgement_asks_again(monkeypatch):
    """The acknowledgement is retried while the server is unreachable (a restart), not raised out of the
    worker's loop (which would end the worker)."""
    import base64
    import urllib.error

    from app.jobs import pull as worker_module
    from app.models.registry import ModelRegistry
    from tests.conftest import SAVED_MODELS

    monkeypatch.setattr(worker_module, "backoff", lambda attempt, **_: 0.01)
    calls = []

    class Away:
        base_url = "http://server"

        def post(self, path, body):
            calls.append(path)
            if len(calls) <= 2:
                raise urllib.error.URLError("connection refused")
            return 200, {}

    registry = ModelRegistry(SAVED_MODELS, {"review_sentiment"})
    registry.load_all()
    leased = {"lease_id": "l" * 32, "job": {"id": "j" * 32, "model": "review_sentiment", "content_type": "text/plain",
                                            "payload_base64": base64.b64encode(b"A fine film.").decode()}}
    outcome = worker_module.process_one(Away(), registry, leased, heartbeat_every=60)
    assert outcome == "result"
    assert calls[:3] == [f"/jobs/{'j' * 32}/heartbeat"] * 3 and calls[-1] == f"/jobs/{'j' * 32}/result"
