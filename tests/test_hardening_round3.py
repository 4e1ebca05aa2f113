"""Regression tests for the third security and reliability round: each reproduces one reported defect."""
from __future__ import annotations

import base64
import json
import logging
import os
import re
import struct
import time

import pytest

from app import create_app
from tests.conftest import SAVED_MODELS
from tests.test_model_store import wine_model


@pytest.fixture
def wine_app(tmp_path):
    """An app serving a user's numeric scikit-learn model (13 FP64 features) and the committed models."""
    models = tmp_path / "models"
    models.mkdir()
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'h.db'}", "MODEL_DIR": str(models),
                      "WORKER_TOKEN": "round-three-token"})
    added = app.test_cli_runner().invoke(args=["models", "add", "wine", str(wine_model(tmp_path / "wine.skops"))])
    assert added.exit_code == 0, added.output
    app.extensions["model_registry"].load_all()
    yield app
    app.extensions["db_engine"].dispose()


def infer(client, model: str, inputs: list[dict], **kwargs):
    """POST a JSON V2 inference request."""
    return client.post(f"/v2/models/{model}/infer", json={"inputs": inputs}, **kwargs)


# -- 4. a lone surrogate in V2 BYTES data ----------------------------------------------------------

def test_a_lone_surrogate_in_bytes_data_is_400(client):
    body = '{"inputs": [{"name": "review", "datatype": "BYTES", "shape": [1], "data": ["\\ud800 film"]}]}'
    response = client.post("/v2/models/review_sentiment/infer", data=body, content_type="application/json")
    assert response.status_code == 400 and "lone surrogate" in response.json["error"]


# -- 5. shapes whose product overflows, and empty binary tensors -----------------------------------

@pytest.mark.parametrize("shape", [[4611686018427387904, 0], [0, 2 ** 64], [2 ** 40, 2 ** 40], [2 ** 31, 0]])
def test_shapes_numpy_cannot_hold_are_refused_not_500(wine_app, shape):
    response = infer(wine_app.test_client(), "wine", [{"name": "input", "datatype": "FP64", "shape": shape,
                                                       "data": []}])
    assert response.status_code in (400, 413), response.json


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT64"])
def test_binary_tensors_of_zero_bytes_are_4xx(wine_app, datatype):
    header = json.dumps({"inputs": [{"name": "input", "datatype": datatype, "shape": [4611686018427387904, 0],
                                     "parameters": {"binary_data_size": 0}}]}).encode()
    response = wine_app.test_client().post("/v2/models/wine/infer", data=header, content_type="application/octet-stream",
                                           headers={"Inference-Header-Content-Length": str(len(header))})
    assert 400 <= response.status_code < 500, response.json


# -- 8. values that do not fit the declared datatype -----------------------------------------------

@pytest.mark.parametrize("tensor, fragment", [
    ({"datatype": "FP64", "shape": [1, 13], "data": [300.7] + [1.0] * 12}, None),  # fits FP64: served
    ({"datatype": "INT8", "shape": [1, 13], "data": [300] + [1] * 12}, "out of its range"),
    ({"datatype": "UINT64", "shape": [1, 13], "data": [-1] + [1] * 12}, "out of its range"),
    ({"datatype": "BOOL", "shape": [1, 13], "data": ["false"] * 13}, "true or false"),
])
def test_values_that_do_not_fit_their_datatype_are_400(wine_app, tensor, fragment):
    response = infer(wine_app.test_client(), "wine", [{"name": "input", **tensor}])
    if fragment is None:
        assert response.status_code == 200, response.json
    else:
        assert response.status_code == 400 and fragment in response.json["error"], response.json


def test_a_float_is_not_wrapped_into_an_integer_input():
    from app.codecs.numbers import ValueOutOfType, fit_to_dtype

    for values, dtype in (([300.7], "int8"), ([-1], "uint64"), ([1.5], "int32"), (["false"], "bool")):
        with pytest.raises((ValueOutOfType, ValueError)):
            fit_to_dtype(values, dtype)
    assert fit_to_dtype([1.0, 2.0], "int8").tolist() == [1, 2]
    assert fit_to_dtype([True, False], "bool").tolist() == [True, False]


# -- 10. an empty token file must not open the worker endpoints ------------------------------------

@pytest.mark.parametrize("content", ["", "\n", "   \n"])
def test_an_empty_worker_token_file_fails_closed(tmp_path, content):
    token_file = tmp_path / "worker_token"
    token_file.write_text(content)
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}",
                      "WORKER_TOKEN_FILE": str(token_file), "MODEL_DIR": str(SAVED_MODELS)})
    client = app.test_client()
    assert client.post("/jobs/lease", json={}).status_code == 401
    assert client.post("/jobs/lease", json={}, headers={"Authorization": "Bearer "}).status_code == 401
    assert client.post("/v2/repository/models/review_sentiment/unload").status_code == 401
    assert app.extensions["worker_token"]  # a random token nobody knows


# -- 13. deeply nested JSON payloads of jobs --------------------------------------------------------

def test_a_deeply_nested_job_payload_is_400(wine_app):
    payload = base64.b64encode(b"[" * 5000).decode()
    response = wine_app.test_client().post("/jobs", json={"model": "wine", "payload_base64": payload})
    assert response.status_code == 400 and "takes a JSON payload" in response.json["error"]


# -- 19. element counts bounded before decoding ------------------------------------------------------

def test_millions_of_empty_bytes_elements_are_refused_before_they_are_split(client):
    count = 2_500_000
    header = json.dumps({"inputs": [{"name": "review", "datatype": "BYTES", "shape": [count],
                                     "parameters": {"binary_data_size": 4 * count}}]}).encode()
    body = header + struct.pack("<I", 0) * count
    started = time.process_time()
    response = client.post("/v2/models/review_sentiment/infer", data=body, content_type="application/octet-stream",
                           headers={"Inference-Header-Content-Length": str(len(header))})
    cpu = time.process_time() - started
    assert response.status_code == 413 and "limit of 64" in response.json["error"]
    assert cpu < 0.5, f"{cpu:.2f} s of CPU to refuse it"  # the report measured 1.4-1.6 s before the bound


def cast_model(path, datatype: int) -> None:
    """An ONNX graph whose one input has an integer type: x -> Cast(float) -> y."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], "cast",
                              [helper.make_tensor_value_info("x", datatype, ["N", 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


@pytest.mark.parametrize("onnx_type, sent, value", [("INT8", "FP64", 300.7), ("UINT64", "INT64", -1),
                                                    ("INT8", "FP64", 1.5)])
def test_values_are_not_wrapped_into_a_model_s_integer_input(tmp_path, onnx_type, sent, value):
    from onnx import TensorProto

    models = tmp_path / "models"
    models.mkdir()
    cast_model(tmp_path / "cast.onnx", getattr(TensorProto, onnx_type))
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}", "MODEL_DIR": str(models)})
    added = app.test_cli_runner().invoke(args=["models", "add", "cast", str(tmp_path / "cast.onnx")])
    assert added.exit_code == 0, added.output
    app.extensions["model_registry"].load_all()
    client = app.test_client()
    response = infer(client, "cast", [{"name": "x", "datatype": sent, "shape": [1, 1], "data": [value]}])
    assert response.status_code == 400 and "out of its range" in response.json["error"], response.json
    fits = infer(client, "cast", [{"name": "x", "datatype": sent, "shape": [1, 1], "data": [7]}])
    assert fits.status_code == 200 and fits.json["outputs"][0]["data"] == [7.0]


# -- 1. the disk cannot be filled through cancelled or finished jobs --------------------------------

def job_app(tmp_path, database_url, **limits):
    """An app taking jobs for a model only remote workers serve, with small byte bounds."""
    return create_app({"TESTING": True, "DATABASE_URL": database_url, "MODEL_DIR": str(SAVED_MODELS),
                       "WORKER_TOKEN": "round-three-token", "WORKER_MODELS": "m", **limits})


def test_cancelled_jobs_free_their_payload_and_cannot_fill_the_disk(tmp_path):
    database = tmp_path / "jobs.db"
    app = job_app(tmp_path, f"sqlite:///{database}", MAX_QUEUED_JOB_BYTES_PER_CLIENT=5 * 2 ** 20)
    client = app.test_client()
    payload = base64.b64encode(b"x" * 2 ** 20).decode()  # 1 MiB each
    for _ in range(40):
        submitted = client.post("/jobs", json={"model": "m", "payload_base64": payload})
        assert submitted.status_code == 202, submitted.json
        job_id = submitted.json["id"]
        assert client.delete(f"/jobs/{job_id}").json["status"] == "canceled"
    # SQLite reuses the freed pages: 40 MiB submitted, a few MiB on disk.
    assert database.stat().st_size + (tmp_path / "jobs.db-wal").stat().st_size < 12 * 2 ** 20
    assert app.extensions["job_store"].usage(None)[1] == 0  # every cancelled payload deleted at once


def test_results_count_against_the_client_s_bytes(tmp_path):
    app = job_app(tmp_path, f"sqlite:///{tmp_path / 'jobs.db'}", MAX_QUEUED_JOB_BYTES_PER_CLIENT=3 * 2 ** 20)
    client = app.test_client()
    bearer = {"Authorization": "Bearer round-three-token"}
    job = client.post("/jobs", json={"model": "m", "text": "small"}).json
    lease = client.post("/jobs/lease", json={"models": ["m"]}, headers=bearer).json
    big = base64.b64encode(b"r" * (2 * 2 ** 20 + 2 ** 19)).decode()
    result = client.post(f"/jobs/{job['id']}/result", headers=bearer,
                         json={"lease_id": lease["lease_id"], "result_base64": big, "content_type": "application/octet-stream"})
    assert result.status_code == 200, result.json
    refused = client.post("/jobs", json={"model": "m", "payload_base64": base64.b64encode(b"x" * 2 ** 20).decode()})
    assert refused.status_code == 429 and "bytes of jobs kept" in refused.json["error"]
    assert int(refused.headers["Retry-After"]) > 0


# -- 15. concurrent submissions cannot all pass the same bound ------------------------------------

def test_concurrent_submissions_respect_the_per_client_bound(tmp_path, database_url):
    from concurrent.futures import ThreadPoolExecutor

    app = job_app(tmp_path, database_url, MAX_QUEUED_JOBS_PER_CLIENT=30, DATABASE_POOL_SIZE=16, DATABASE_WAIT_SECONDS=5)

    def submit(i):
        return app.test_client().post("/jobs", json={"model": "m", "text": f"job {i}"}).status_code

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(submit, range(80)))
    assert codes.count(202) == 30 and codes.count(429) == 50, codes
    assert app.extensions["job_store"].usage(None)[0] == 30
    app.extensions["db_engine"].dispose()


# -- 9. every file a runtime opens is one of the manifest's hashed artifacts ------------------------

class Planted:
    """A pickle that leaves a mark where it is loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def edit_manifest(folder, change) -> None:
    """Change a written manifest in place (as someone with write access to the store could)."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_a_manifest_cannot_point_a_runtime_at_an_unhashed_file(tmp_path, wine_app):
    import joblib

    marker = tmp_path / "pickle-ran"
    joblib.dump(Planted(marker), tmp_path / "evil.joblib")
    folder = tmp_path / "models" / "wine" / "1"
    edit_manifest(folder, lambda m: m.setdefault("config", {}).update(estimator="../../../evil.joblib"))
    fresh = create_app({"TESTING": True, "DATABASE_URL": wine_app.settings.database_url, "MODEL_DIR": wine_app.settings.model_dir})
    listing = fresh.test_cli_runner().invoke(args=["models", "list"])  # as `flask models list` in a new process
    assert listing.exit_code == 1 and re.search(r"wine\s+v1\s+REFUSED .*not one of the manifest's artifacts", listing.output)
    assert not marker.exists()


def test_an_onnx_manifest_cannot_serve_a_file_outside_its_folder(tmp_path):
    from onnx import TensorProto

    models = tmp_path / "models"
    models.mkdir()
    cast_model(tmp_path / "cast.onnx", TensorProto.INT64)
    cast_model(tmp_path / "elsewhere.onnx", TensorProto.INT64)
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'o.db'}", "MODEL_DIR": str(models)})
    assert app.test_cli_runner().invoke(args=["models", "add", "cast", str(tmp_path / "cast.onnx")]).exit_code == 0
    edit_manifest(models / "cast" / "1", lambda m: m.setdefault("config", {}).update(file=str(tmp_path / "elsewhere.onnx")))
    registry = app.extensions["model_registry"]
    registry.load_all()
    assert "not one of the manifest's artifacts" in registry.refused["cast/1"]
    assert app.test_client().post("/v2/models/cast/infer", json={"inputs": [
        {"name": "x", "datatype": "INT64", "shape": [1, 1], "data": [1]}]}).status_code == 503


# -- 3. a stuck database never holds the threads inference and health need -------------------------

def hold_database_lock(kind: str, url: str):
    """Lock the jobs table as a stuck transaction would; returns a function that releases it."""
    if kind == "sqlite":
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        return lambda: (conn.execute("ROLLBACK"), conn.close())
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    conn = engine.connect()
    transaction = conn.begin()
    conn.execute(sa.text("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE"))
    return lambda: (transaction.rollback(), conn.close(), engine.dispose())


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_stuck_database_never_holds_inference_or_health(tmp_path, kind):
    from concurrent.futures import ThreadPoolExecutor

    from tests.conftest import SHARED_DATA, postgres_url_or_fail, run_gunicorn
    from tests.test_model_store_s3 import multipart, post

    url = f"sqlite:///{tmp_path / 'stuck.db'}" if kind == "sqlite" else postgres_url_or_fail()
    cell, cell_type = multipart("image", "cell.png", (SHARED_DATA / "malaria" / "Parasitized" /
                                                      "C101P62ThinF_IMG_20150918_151006_cell_73.png").read_bytes())
    probes = [("/review", b"review=A+fine+film.", "application/x-www-form-urlencoded"),
              ("/classify", cell, cell_type), ("/health/live", None, "")]
    with run_gunicorn(tmp_path, {"DATABASE_URL": url, "MODELSERVE_WORKER_MODELS": "m"}) as (base, _):
        assert post(base + "/jobs", json.dumps({"model": "m", "text": "before"}).encode(), "application/json")[0] == 202
        release = hold_database_lock(kind, url)
        try:
            with ThreadPoolExecutor(100) as pool:
                jobs = [pool.submit(post, base + "/jobs", json.dumps({"model": "m", "text": f"j{i}"}).encode(),
                                    "application/json", 30) for i in range(100)]
                timings = []
                deadline = time.monotonic() + 8
                while time.monotonic() < deadline:
                    for path, body, content_type in probes:
                        started = time.monotonic()
                        if body is None:
                            status = get_status(base + path)
                        else:
                            status = post(base + path, body, content_type, 10)[0]
                        timings.append((path, status, time.monotonic() - started))
                    time.sleep(0.05)
                codes = [job.result()[0] for job in jobs]
        finally:
            release()
    assert all(status == 200 for _, status, _ in timings), [t for t in timings if t[1] != 200][:5]
    slowest = max(timings, key=lambda t: t[2])
    assert slowest[2] < 1.0, slowest
    assert set(codes) <= {202, 503} and codes.count(503) > 0, codes  # refused with Retry-After, never a 500


def get_status(url: str) -> int:
    """The status of a GET (0 when the connection failed)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


# -- 2 (slow model) and 12 (slow bodies): one model's or one client's slowness stays its own ----------

def text_model(cls: str, doc: str, label: str, predict_first: str = "pass", load: str = "pass",
               module: str = "time") -> str:
    """The source of a user's one-input text model whose _load runs ``load`` and whose predict first runs
    ``predict_first`` (statements, at method indentation)."""
    return f'''
import {module}

import numpy as np

from app.models.base import Model


class {cls}(Model):
    """{doc}"""

    INPUTS = [{{"name": "text", "datatype": "BYTES", "shape": [-1], "content": "text"}}]
    OUTPUTS = [{{"name": "label", "datatype": "BYTES", "shape": [-1]}}]
    LABELS = ["{label}"]

    def _load(self):
        {load}

    def predict(self, batch):
        {predict_first}
        return {{"label": np.array(["{label}"] * len(batch["text"]), dtype=object)}}
'''


SLEEPY = text_model("Sleepy", "Takes 3 s for a text that says 'slow' (a user model stuck in a remote call, say).", "done",
                    'if any("slow" in text for text in batch["text"]):\n            time.sleep(3)')


def served_folder_with_sleepy(tmp_path):
    """A model folder with the review model and the slow user model."""
    import shutil

    models = tmp_path / "models"
    shutil.copytree(SAVED_MODELS / "review_sentiment", models / "review_sentiment")
    (tmp_path / "sleepy").mkdir()
    (tmp_path / "sleepy" / "model.py").write_text(SLEEPY)
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'add.db'}", "MODEL_DIR": str(models)})
    added = app.test_cli_runner().invoke(args=["models", "add", "sleepy", str(tmp_path / "sleepy"), "--class", "model:Sleepy"])
    assert added.exit_code == 0, added.output
    return models


def review_statuses(base: str, count: int, workers: int = 10, slowest: list | None = None) -> list[int]:
    """Statuses of ``count`` /review calls made by ``workers`` threads; the slowest call's seconds go to ``slowest``."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.test_model_store_s3 import post

    def timed(_):
        started = time.monotonic()
        status = post(base + "/review", b"review=A+fine+film.", "application/x-www-form-urlencoded", 10)[0]
        return status, time.monotonic() - started

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(timed, range(count)))
    if slowest is not None:
        slowest.append(max(seconds for _, seconds in results))
    return [status for status, _ in results]


def test_a_slow_model_fills_only_its_own_slots(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from tests.conftest import run_gunicorn
    from tests.test_model_store_s3 import post

    models = served_folder_with_sleepy(tmp_path)
    slow = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["slow please"]}]}).encode()
    with run_gunicorn(tmp_path, {"MODELSERVE_MODEL_DIR": str(models)}) as (base, _), ThreadPoolExecutor(20) as pool:
        stuck = [pool.submit(post, base + "/v2/models/sleepy/infer", slow, "application/json", 30) for _ in range(20)]
        time.sleep(0.5)
        slowest = []
        statuses = review_statuses(base, 60, slowest=slowest)
        sleepy_statuses = [f.result()[0] for f in stuck]
    assert statuses == [200] * 60, statuses
    assert slowest[0] < 1.0, slowest
    assert set(sleepy_statuses) <= {200, 503} and 200 in sleepy_statuses


def test_slow_request_bodies_take_no_inference_slot(tmp_path):
    import socket

    from tests.conftest import run_gunicorn

    with run_gunicorn(tmp_path, {"MODELSERVE_MODELS": "review_sentiment"}) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        trickling = []
        for _ in range(20):  # fewer than gunicorn's threads, more than a model's slots
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"POST /review HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                         b"Content-Length: 100000\r\n\r\nreview=")
            trickling.append(sock)
        try:
            time.sleep(1)
            for sock in trickling:
                sock.sendall(b"aa")
            statuses = review_statuses(base, 30)
        finally:
            for sock in trickling:
                sock.close()
    assert statuses == [200] * 30, statuses


# -- 2. a user model that exits or crashes takes only itself down ----------------------------------

CRASHY = text_model("Crashy", "Ends its own process for a text that says 'die' (a C extension's crash, say).",
                    "alive", 'if any("die" in text for text in batch["text"]):\n            os._exit(7)', module="os")

AT_LOAD = {
    "exits": "import sys\n        sys.exit(3)",
    "segfaults": "import ctypes\n        ctypes.string_at(0)",
}


def python_model(tmp_path, models, name: str, source: str, cls: str) -> None:
    """Add a Python-class model with `flask models add`."""
    (tmp_path / name).mkdir()
    (tmp_path / name / "model.py").write_text(source)
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'add.db'}", "MODEL_DIR": str(models)})
    added = app.test_cli_runner().invoke(args=["models", "add", name, str(tmp_path / name), "--class", f"model:{cls}"])
    assert added.exit_code == 0, added.output


def turn_bad_at_load(models, name: str, how: str) -> None:
    """Make a published version's class exit or crash when loaded (hash updated: it passes verification)."""
    from app.models.base import sha256_of

    folder = models / name / "1"
    source = (folder / "model.py").read_text().replace("    def _load(self):\n        pass",
                                                       f"    def _load(self):\n        {AT_LOAD[how]}")
    (folder / "model.py").write_text(source)
    edit_manifest(folder, lambda m: m["artifacts"]["model.py"].update(sha256=sha256_of(folder / "model.py")))


@pytest.mark.parametrize("how", sorted(AT_LOAD))
def test_a_model_that_exits_or_crashes_at_load_is_refused_and_the_server_serves(tmp_path, how):
    import signal

    from tests.conftest import get_json, run_gunicorn

    models = served_folder_with_sleepy(tmp_path)
    python_model(tmp_path, models, "crashy", CRASHY, "Crashy")
    with run_gunicorn(tmp_path, {"MODELSERVE_MODEL_DIR": str(models)}) as (base, proc):
        turn_bad_at_load(models, "crashy", how)
        proc.send_signal(signal.SIGHUP)  # `flask models reload --restart`: new workers load the folder
        time.sleep(8)
        assert proc.poll() is None, "gunicorn's master stopped"
        slowest = []
        statuses = review_statuses(base, 20, slowest=slowest)
        status, ready = get_json(base + "/health/ready")
    assert statuses == [200] * 20 and slowest[0] < 1.0, slowest
    assert status == 200 and "crashy/1" in ready["refused"], ready
    assert ("SystemExit" if how == "exits" else "SIGSEGV") in ready["refused"]["crashy/1"]


def test_a_model_that_ends_its_process_on_one_input_fails_only_those_requests(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from tests.conftest import run_gunicorn
    from tests.test_model_store_s3 import post

    models = served_folder_with_sleepy(tmp_path)
    python_model(tmp_path, models, "crashy", CRASHY, "Crashy")

    def crashy(text):
        body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]}
        return post(base + "/v2/models/crashy/infer", json.dumps(body).encode(), "application/json", 30)

    with run_gunicorn(tmp_path, {"MODELSERVE_MODEL_DIR": str(models)}) as (base, proc), ThreadPoolExecutor(4) as pool:
        killers = [pool.submit(crashy, "please die") for _ in range(38)]
        slowest = []
        statuses = review_statuses(base, 300, slowest=slowest)
        killed = [k.result()[0] for k in killers]
        after = crashy("stay alive")
        assert proc.poll() is None
    assert statuses == [200] * 300, [s for s in statuses if s != 200][:5]
    assert slowest[0] < 1.0, slowest  # /review kept answering within a second meanwhile
    assert set(killed) <= {503}, killed  # the request that crashed the model's process, said as a 503
    assert after[0] == 200 and after[1]["outputs"][0]["data"] == ["alive"]  # a fresh process serves


# -- 6. a model's error on a client's values is a 422; a bug stays a 500, logged with the request ----------

def onnx_graph(path, nodes, inputs, outputs, initializers=()) -> None:
    """Save a small ONNX graph."""
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def model_app(tmp_path, name: str, source, *args: str):
    """An app serving one model added with `flask models add`."""
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'm.db'}", "MODEL_DIR": str(models),
                      "WORKER_TOKEN": "round-three-token"})
    added = app.test_cli_runner().invoke(args=["models", "add", name, str(source), *args])
    assert added.exit_code == 0, added.output
    app.extensions["model_registry"].load_all()
    return app


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # scikit-learn's, on the way to its error
def test_values_a_scikit_learn_pipeline_cannot_use_are_422_on_rest_and_v2(wine_app):
    client = wine_app.test_client()
    rest = client.post("/models/wine/predict", json={"instances": [[1e308] * 13]})
    v2 = infer(client, "wine", [{"name": "input", "datatype": "FP64", "shape": [1, 13], "data": [1e308] * 13}])
    for response in (rest, v2):
        assert response.status_code == 422 and "could not use this input" in response.json["error"], response.json


def test_an_unknown_category_is_422(tmp_path):
    import numpy as np
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    X = np.array([[0.0], [1.0], [2.0], [0.0], [1.0], [2.0]])
    sio.dump(make_pipeline(OneHotEncoder(handle_unknown="error"), LogisticRegression()).fit(X, [0, 1, 0, 0, 1, 0]),
             tmp_path / "categories.skops")
    app = model_app(tmp_path, "categories", tmp_path / "categories.skops")
    response = app.test_client().post("/models/categories/predict", json={"instances": [[7.0]]})
    assert response.status_code == 422 and "unknown categor" in response.json["error"].lower(), response.json


def test_an_index_past_an_onnx_table_is_422_on_rest_and_v2(tmp_path):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    onnx_graph(tmp_path / "lookup.onnx", [helper.make_node("Gather", ["table", "index"], ["row"], axis=0)],
               [helper.make_tensor_value_info("index", TensorProto.INT64, ["N", 1])],
               [helper.make_tensor_value_info("row", TensorProto.FLOAT, ["N", 1, 2])],
               [numpy_helper.from_array(np.arange(20, dtype=np.float32).reshape(10, 2), "table")])
    client = model_app(tmp_path, "lookup", tmp_path / "lookup.onnx").test_client()
    assert infer(client, "lookup", [{"name": "index", "datatype": "INT64", "shape": [1, 1], "data": [3]}]).status_code == 200
    rest = client.post("/models/lookup/predict", json={"instances": [[500]]})
    v2 = infer(client, "lookup", [{"name": "index", "datatype": "INT64", "shape": [1, 1], "data": [500]}])
    for response in (rest, v2):
        assert response.status_code == 422 and "could not use this input" in response.json["error"], response.json


BUGGY = '''
import numpy as np

from app.models.base import Model


class Buggy(Model):
    """Fine at warm-up, then a bug no input explains."""

    INPUTS = [{"name": "text", "datatype": "BYTES", "shape": [-1], "content": "text"}]
    OUTPUTS = [{"name": "score", "datatype": "FP64", "shape": [-1]}]

    def predict(self, batch):
        if batch["text"][0] == "bug":
            raise RuntimeError("the model's own bug")
        if batch["text"][0] == "nan":
            return {"score": np.array([0.0]) / 0.0}
        return {"score": np.array([1.0] * len(batch["text"]))}
'''


def test_a_model_bug_is_500_and_logged_with_the_model_and_request(tmp_path, caplog):
    (tmp_path / "buggy").mkdir()
    (tmp_path / "buggy" / "model.py").write_text(BUGGY)
    app = model_app(tmp_path, "buggy", tmp_path / "buggy", "--class", "model:Buggy")
    logger = logging.getLogger("app.models.runner")
    logger.addHandler(caplog.handler)
    try:
        response = app.test_client().post("/models/buggy/predict", json={"instances": ["bug"]},
                                          headers={"X-Request-ID": "bug-request-1"})
    finally:
        logger.removeHandler(caplog.handler)
    assert response.status_code == 500 and "own bug" not in response.get_data(as_text=True)
    failed = [record for record in caplog.records if record.getMessage() == "model buggy v1 failed"]
    assert [record.request_id for record in failed] == ["bug-request-1"]


# -- 7. non-finite outputs are null on every protocol, and jobs finish ----------------------------------

def test_non_finite_outputs_are_null_on_rest_v2_and_jobs(tmp_path):
    from onnx import TensorProto, helper

    (tmp_path / "buggy").mkdir()
    (tmp_path / "buggy" / "model.py").write_text(BUGGY)
    app = model_app(tmp_path, "buggy", tmp_path / "buggy", "--class", "model:Buggy")
    onnx_graph(tmp_path / "root.onnx", [helper.make_node("Sqrt", ["x"], ["y"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])])
    assert app.test_cli_runner().invoke(args=["models", "add", "root", str(tmp_path / "root.onnx")]).exit_code == 0
    app.extensions["model_registry"].load_all()
    client = app.test_client()
    answers = [client.post("/models/buggy/predict", json={"instances": ["nan"]}),
               infer(client, "buggy", [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["nan"]}]),
               client.post("/models/root/predict", json={"instances": [[-1.0]]}),
               infer(client, "root", [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [-1.0]}])]
    for response in answers:
        text = response.get_data(as_text=True)
        assert response.status_code == 200 and "NaN" not in text and "null" in text, text
        json.loads(text)  # a valid document
    from app.jobs.execute import execute

    result = execute(app.extensions["model_registry"].runner("root"), b"[-1.0]")
    assert json.loads(json.dumps(result, allow_nan=False))["y"] == [None]


def test_a_result_the_server_refuses_fails_the_job_at_once(monkeypatch):
    from app.jobs import pull as worker

    posted = []

    class Server:
        def post(self, path, body):
            posted.append((path, body))
            return (400, {"error": "result is not valid JSON"}) if path.endswith("/result") else (200, {})

    class Registry:
        def runner(self, name):
            return "runner"

    monkeypatch.setattr(worker, "execute", lambda runner, payload, explain=True: {"score": float("nan")})
    leased = {"job": {"id": "j1", "model": "m", "payload_base64": "e30="}, "lease_id": "l1"}
    assert worker.process_one(Server(), Registry(), leased, heartbeat_every=60) == "failure"
    assert posted[-1][0] == "/jobs/j1/failure" and posted[-1][1]["retry"] is False
    assert "refused the result" in posted[-1][1]["error"]


# -- 18. flask score: no mixed versions, bad rows in the error column, malformed CSVs reported -----------

def score(app, *args):
    """`flask score ...` in process; (exit code, output)."""
    result = app.test_cli_runner().invoke(args=["score", *args, "--no-progress"])
    return result.exit_code, result.output


def test_resuming_with_another_version_is_refused(tmp_path):
    from app.batch.files import ResumableWriter

    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}"})
    reviews = tmp_path / "reviews.csv"
    reviews.write_text("text\nA fine film.\nA dull film.\n")
    output = tmp_path / "out.csv"
    earlier = ResumableWriter(output, ["model", "version", "label", "error"])  # an interrupted run by another version
    earlier.write([{"key": "0", "model": "review_sentiment", "version": "1", "label": "positive"}])
    earlier.flush()
    code, text = score(app, "review_sentiment", str(reviews), str(output), "--column", "text")
    assert code != 0 and "holds results of review_sentiment v1" in text and "--model-version" in text
    assert not output.exists()


def test_rows_that_are_not_utf8_or_not_text_are_errors_and_the_rest_is_scored(tmp_path):
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}"})
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text\nA fine film.\n".encode() + "Un film tr\u00e8s beau.\n".encode("latin-1") + b"A dull film.\n")
    code, text = score(app, "review_sentiment", str(latin), str(tmp_path / "latin-out.csv"), "--column", "text")
    assert code == 0, text
    rows = list(csv.DictReader(open(tmp_path / "latin-out.csv", encoding="utf-8")))
    assert [bool(r["error"]) for r in rows] == [False, True, False] and "not valid UTF-8" in rows[1]["error"]
    assert rows[0]["label"] and rows[2]["label"]
    typed = tmp_path / "typed.parquet"
    pq.write_table(pa.table({"n": [1, 2], "words": [["a", "b"], ["c"]], "raw": [b"A fine film.", b"x"],
                             "text": ["A fine film.", "A dull film."]}), typed)
    for column, kind in (("n", "int"), ("words", "list"), ("raw", "bytes")):
        out = tmp_path / f"typed-{column}.csv"
        code, text = score(app, "review_sentiment", str(typed), str(out), "--column", column)
        assert code == 0, text
        rows = list(csv.DictReader(open(out, encoding="utf-8")))
        assert all(f"holds {kind}, not text" in r["error"] and not r["label"] for r in rows), rows


def test_a_malformed_csv_is_reported_not_merged(tmp_path):
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}"})
    broken = tmp_path / "broken.csv"
    broken.write_text('id,text\nr1,"an unterminated quote\nr2,"A second review."\nr3,A third.\n')
    code, text = score(app, "review_sentiment", str(broken), str(tmp_path / "out.csv"), "--key", "id", "--column", "text")
    assert code != 0 and "not a well-formed CSV" in text and "line" in text, text


# -- 11. a reload never makes requests wait for a slow loader -------------------------------------------

SLOW_LOADER = text_model("SlowLoader", "Takes 8 s to load (a large file from a slow disk, say).", "ok",
                         load="time.sleep(8)")


def test_reloading_a_slow_loading_model_keeps_every_request_fast(tmp_path):
    import shutil
    import subprocess
    import sys

    from app.config import PROJECT_ROOT
    from tests.conftest import get_json, run_gunicorn
    from tests.test_model_store_s3 import post

    models = served_folder_with_sleepy(tmp_path)
    python_model(tmp_path, models, "slowloader", SLOW_LOADER, "SlowLoader")
    env = {"MODELSERVE_MODEL_DIR": str(models), "MODELSERVE_MODEL_POLL_SECONDS": "1"}
    with run_gunicorn(tmp_path, env) as (base, proc):
        shutil.copytree(models / "slowloader" / "1", models / "slowloader" / "2")
        edit_manifest(models / "slowloader" / "2", lambda m: m.update(version=2))
        reloaded = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "models", "reload"], cwd=PROJECT_ROOT,
                                  env={**os.environ, **env, "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
                                       "GUNICORN_PIDFILE": str(next(tmp_path.glob("gunicorn-*.pid")))},
                                  capture_output=True, text=True)
        assert reloaded.returncode == 0, reloaded.stderr
        timings, deadline = [], time.monotonic() + 14
        while time.monotonic() < deadline:
            started = time.monotonic()
            status = post(base + "/review", b"review=A+fine+film.", "application/x-www-form-urlencoded", 30)[0]
            timings.append((status, time.monotonic() - started))
            time.sleep(0.05)
        versions = get_json(base + "/v2/models/slowloader")[1]["versions"]
    assert all(status == 200 for status, _ in timings), timings
    assert max(seconds for _, seconds in timings) < 1.0, max(timings, key=lambda t: t[1])
    assert "2" in versions  # the new version was loaded meanwhile
