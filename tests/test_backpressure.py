"""Backpressure: bounded in-flight inference per worker, 503 + Retry-After, deadlines, readiness."""
from __future__ import annotations

import io
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from app import admission, create_app
from app.admission import AdmissionGate, Overloaded
from tests.conftest import run_gunicorn

REVIEW = {"review": "A moving story with wonderful acting."}


def hold_slots(gate: AdmissionGate, count: int):
    """Occupy `count` slots from other threads until the returned event is set."""
    release, held = threading.Event(), threading.Barrier(count + 1)

    def occupy():
        with gate.admit(time.perf_counter(), 60):
            held.wait()
            release.wait(30)

    threads = [threading.Thread(target=occupy) for _ in range(count)]
    for thread in threads:
        thread.start()
    held.wait(10)
    return release, threads


def test_gate_sheds_when_slots_and_queue_are_full():
    gate = AdmissionGate(max_inflight=1, max_queued=1, deadline_seconds=5)
    release, threads = hold_slots(gate, 1)
    queued_result = []
    waiter = threading.Thread(target=lambda: queued_result.append(_admit_once(gate, 5)))
    waiter.start()
    while gate.queued < 1:
        time.sleep(0.001)
    with pytest.raises(Overloaded) as refused:
        _admit_once(gate, 5)
    assert refused.value.status == 503 and refused.value.extra["reason"] == "queue_full"
    assert int(refused.value.headers["Retry-After"]) >= 1
    assert gate.overloaded
    release.set()
    waiter.join(10)
    for thread in threads:
        thread.join(10)
    assert queued_result == ["ran"]  # the queued request was served, not dropped
    assert gate.running == 0 and gate.queued == 0


def test_gate_deadline_bounds_the_wait():
    gate = AdmissionGate(max_inflight=1, max_queued=4, deadline_seconds=5)
    release, threads = hold_slots(gate, 1)
    started = time.perf_counter()
    with pytest.raises(Overloaded) as refused:
        _admit_once(gate, 0.2)
    waited = time.perf_counter() - started
    release.set()
    for thread in threads:
        thread.join(10)
    assert refused.value.extra["reason"] == "deadline"
    assert 0.15 < waited < 3  # gave up at its deadline, not at the holder's release
    assert _admit_once(gate, 0.2) == "ran"  # slots are free again


def test_gate_rejects_bad_bounds():
    with pytest.raises(ValueError):
        AdmissionGate(0, 1, 1)


def _admit_once(gate: AdmissionGate, deadline: float) -> str:
    with gate.admit(time.perf_counter(), deadline):
        return "ran"


@pytest.fixture
def small_gate_app(tmp_path, monkeypatch):
    """An app whose gate holds 1 running request and no queue; shed memory short."""
    monkeypatch.setattr(admission, "OVERLOAD_MEMORY_SECONDS", 0.3)
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'test.db'}",
                      "MAX_INFLIGHT": 1, "MAX_QUEUED": 0, "REQUEST_DEADLINE_SECONDS": 1.0})
    app.extensions["model_registry"].load_all()
    yield app
    app.extensions["db_engine"].dispose()


@pytest.mark.parametrize("path,kwargs,model", [
    ("/review", {"data": REVIEW}, "review_sentiment"),
    ("/predict", {"json": {"model": "logistic_regression", **REVIEW}}, "logistic_regression"),
    ("/v2/models/review_sentiment/infer",
     {"json": {"inputs": [{"name": "review", "shape": [1], "datatype": "BYTES", "data": [REVIEW["review"]]}]}},
     "review_sentiment"),
    ("/classify", {"data": {"image": (io.BytesIO(b"x"), "cell.png")}, "content_type": "multipart/form-data"},
     "malaria_cell"),
])
def test_busy_worker_answers_503_with_retry_after_then_recovers(small_gate_app, path, kwargs, model):
    client = small_gate_app.test_client()
    gate = small_gate_app.extensions["admission_gate"].gate(model)  # the slots of the model the request is for
    release, threads = hold_slots(gate, 1)
    try:
        busy = client.post(path, **kwargs)
        assert busy.status_code == 503
        assert busy.json["reason"] == "queue_full" and "busy" in busy.json["error"]
        assert int(busy.headers["Retry-After"]) >= 1
        # Shedding is reported, but the worker stays in the load balancer: requests are shed one by one.
        ready = client.get("/health/ready")
        assert ready.status_code == 200 and ready.json["overloaded"] is True
        assert client.get("/v2/health/ready").status_code == 200
    finally:
        release.set()
        for thread in threads:
            thread.join(10)
    time.sleep(0.35)
    assert client.get("/health/ready").status_code == 200
    if path != "/classify":  # the upload's file object was consumed by the first post
        assert client.post(path, **kwargs).status_code == 200


def test_client_deadline_header(tmp_path):
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'test.db'}",
                      "MAX_INFLIGHT": 1, "MAX_QUEUED": 4, "REQUEST_DEADLINE_SECONDS": 10.0})
    client = app.test_client()
    assert client.post("/review", data=REVIEW, headers={"X-Request-Timeout": "soon"}).status_code == 400
    assert client.post("/review", data=REVIEW, headers={"X-Request-Timeout": "-1"}).status_code == 400
    assert client.post("/review", data=REVIEW, headers={"X-Request-Timeout": "nan"}).status_code == 400
    assert client.post("/review", data=REVIEW, headers={"X-Request-Timeout": "2"}).status_code == 200
    release, threads = hold_slots(app.extensions["admission_gate"].gate("review_sentiment"), 1)
    try:
        started = time.perf_counter()
        late = client.post("/review", data=REVIEW, headers={"X-Request-Timeout": "0.2"})
        waited = time.perf_counter() - started
    finally:
        release.set()
        for thread in threads:
            thread.join(10)
    assert late.status_code == 503 and late.json["reason"] == "deadline"
    assert waited < 5  # the client's 0.2 s, not the server's 10 s
    app.extensions["db_engine"].dispose()


def test_readiness_reports_loading_and_overload_fields(client):
    body = client.get("/health/ready").json
    assert body["loading"] is True and body["ready"] is False
    client.application.extensions["model_registry"].load_all()
    body = client.get("/health/ready").json
    assert body == {**body, "ready": True, "loading": False, "overloaded": False}


def _png_cell() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (120, 110), (200, 120, 150)).save(out, format="PNG")
    return out.getvalue()


def test_live_overload_sheds_cleanly_and_loses_nothing(tmp_path):
    """32 concurrent uploads into 1 worker with 2 slots + 4 queued: every answer is 200 or 503+Retry-After."""
    body, boundary = _multipart(_png_cell())
    env = {"WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "32", "MODELSERVE_MAX_INFLIGHT": "2",
           "MODELSERVE_MAX_QUEUED": "4", "MODELSERVE_REQUEST_DEADLINE_SECONDS": "2"}
    with run_gunicorn(tmp_path, env) as (base, _):
        def post(_):
            request = urllib.request.Request(base + "/classify", data=body,
                                             headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status, None
            except urllib.error.HTTPError as err:
                return err.code, err.headers.get("Retry-After")

        with ThreadPoolExecutor(32) as pool:
            results = list(pool.map(post, range(320)))
    statuses = [status for status, _ in results]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 32  # most still served
    assert statuses.count(503) > 0  # and the excess was refused, not queued without bound
    assert all(retry and int(retry) >= 1 for status, retry in results if status == 503)


def _multipart(image: bytes) -> tuple[bytes, str]:
    boundary = "backpressure-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"cell.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    return body, boundary


def test_gate_serves_waiters_first_come_first_served():
    gate = AdmissionGate(max_inflight=1, max_queued=5, deadline_seconds=10)
    release, holders = hold_slots(gate, 1)
    order, waiters = [], []
    for number in range(5):
        waiter = threading.Thread(target=lambda n=number: order.append(n) if _admit_once(gate, 10) else None)
        waiter.start()
        waiters.append(waiter)
        while gate.queued < number + 1:  # each one queued before the next arrives
            time.sleep(0.001)
    release.set()
    for thread in holders + waiters:
        thread.join(10)
    assert order == [0, 1, 2, 3, 4]
    assert gate.running == 0 and gate.queued == 0
