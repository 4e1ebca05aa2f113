"""The model store on an S3-compatible server the tests start (moto's standalone server on 127.0.0.1):
conditional alias writes, and three gunicorn instances with no local models converging under load
on every lifecycle action, through a store outage."""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import ExitStack
from pathlib import Path

import pytest

from app import create_app
from tests.conftest import SAVED_MODELS, SHARED_DATA, committed_version, get_json, new_store, run_gunicorn
from tests.test_slow_clients import run_nginx

POLL_SECONDS = 1
CONVERGENCE_LIMIT = POLL_SECONDS + 5  # the bound: one poll interval plus 5 s
REVIEW = committed_version("review_sentiment")
NEXT = str(int(REVIEW) + 1)
CELL = SHARED_DATA / "malaria" / "Parasitized" / "C101P62ThinF_IMG_20150918_151006_cell_73.png"


def cli(tmp_path: Path, store: str, *args: str) -> str:
    """Run a `flask models ...` command against the store (as an operator would); returns its output."""
    (tmp_path / "cli-empty").mkdir(exist_ok=True)
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
                      "MODEL_DIR": str(tmp_path / "cli-empty"), "MODEL_STORE": store,
                      "MODEL_CACHE": str(tmp_path / "cli-cache")})
    result = app.test_cli_runner().invoke(args=["models", *args])
    app.extensions["db_engine"].dispose()
    assert result.exit_code == 0, result.output
    return result.output


def test_concurrent_promotions_lose_no_alias_update(tmp_path, s3):
    store = new_store(s3)
    cli(tmp_path, store, "publish", str(SAVED_MODELS), "--model", "decision_tree")
    from app.models.aliases import read_aliases, set_alias
    from app.models.store import RemoteStore

    version = committed_version("decision_tree")
    errors = []

    def promote(alias):
        try:  # a store object per thread, as separate operators would have
            set_alias(RemoteStore(store, tmp_path / "c", 10 ** 9), "decision_tree", version, alias)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(f"alias{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    aliases = read_aliases(RemoteStore(store, tmp_path / "c", 10 ** 9), "decision_tree")
    assert sorted(aliases) == sorted(f"alias{i}" for i in range(8))  # every update kept (If-Match retries)


def post(url: str, body: bytes, content_type: str, timeout: float = 10) -> tuple[int, dict]:
    """(status, JSON body) of a POST; (0, {}) when the connection failed."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, {}
    except OSError:
        return 0, {}


def multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with one file."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class Load:
    """Steady /review, /classify and V2 requests against every instance (and through nginx), recorded."""

    def __init__(self, instances: list[str], proxy: str):
        self.instances, self.proxy = instances, proxy
        self.records: list[tuple[str, str, float, float, int, str]] = []  # (target, kind, sent, received, status, version)
        self.stop = threading.Event()
        cell, self.cell_type = multipart("image", "cell.png", CELL.read_bytes())
        self.requests = {
            "review": ("/review", b"review=A+wonderful%2C+moving+film.", "application/x-www-form-urlencoded"),
            "classify": ("/classify", cell, self.cell_type),
            "v2": ("/v2/models/review_sentiment/infer", json.dumps({"inputs": [
                {"name": "review", "datatype": "BYTES", "shape": [1], "data": ["Dull and far too long."]}]}).encode(),
                   "application/json"),
        }
        self.threads = [threading.Thread(target=self._run, args=(base, kind), daemon=True)
                        for base in instances + [proxy] for kind in self.requests]

    def _run(self, base: str, kind: str):
        path, body, content_type = self.requests[kind]
        while not self.stop.is_set():
            sent = time.monotonic()
            status, answer = post(base + path, body, content_type)
            version = str(answer.get("model", {}).get("version") or answer.get("model_version", ""))
            self.records.append((base, kind, sent, time.monotonic(), status, version))
            time.sleep(0.05)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)

    def converged_at(self, base: str, since: float, old: str, new: str) -> float:
        """When ``base`` last gave the old /review version after ``since`` (every later answer is ``new``)."""
        answers = [(r[3], r[5]) for r in self.records if r[0] == base and r[1] == "review" and r[2] >= since]
        assert {version for _, version in answers} <= {old, new}, answers
        last_old = max((t for t, version in answers if version == old), default=since)
        assert any(version == new and t > last_old for t, version in answers), f"{base} never answered v{new}"
        return last_old - since


def wait_for(condition, seconds: float, what: str):
    """Poll ``condition`` until it is true; fail with ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_three_instances_follow_the_store_under_load_with_no_failed_request(tmp_path, s3):
    if not CELL.exists():
        pytest.fail(f"{CELL} not found: the test needs ../shared/data")
    store = new_store(s3)
    models = ["review_sentiment", "malaria_cell", "decision_tree"]
    cli(tmp_path, store, "publish", str(SAVED_MODELS), *[a for m in models for a in ("--model", m)])
    cli(tmp_path, store, "promote", "review_sentiment", REVIEW)  # production pinned: a new version waits for promotion
    token = "store-test-token"
    env = {"MODELSERVE_MODEL_STORE": store, "MODELSERVE_MODEL_POLL_SECONDS": str(POLL_SECONDS),
           "MODELSERVE_MODELS": ",".join(models), "MODELSERVE_WORKER_TOKEN": token}
    with ExitStack() as stack:
        instances = []
        for i in range(3):
            folder = tmp_path / f"instance{i}"
            (folder / "empty").mkdir(parents=True)
            base, _ = stack.enter_context(run_gunicorn(folder, {
                **env, "MODELSERVE_MODEL_DIR": str(folder / "empty"), "MODELSERVE_MODEL_CACHE": str(folder / "cache")}))
            instances.append(base)
        upstream = "; server ".join(base.removeprefix("http://") for base in instances)
        proxy = stack.enter_context(run_nginx(tmp_path, upstream))
        timings = {}
        with Load(instances, proxy) as load:
            time.sleep(3)
            # A new version published: every instance fetches it, production stays pinned.
            next_version = tmp_path / "next" / "review_sentiment" / NEXT
            shutil.copytree(SAVED_MODELS / "review_sentiment" / REVIEW, next_version)
            manifest = json.loads((next_version / "manifest.json").read_text())
            (next_version / "manifest.json").write_text(json.dumps({**manifest, "version": int(NEXT)}))
            cli(tmp_path, store, "publish", str(tmp_path / "next"))
            started = time.monotonic()
            for base in instances:
                wait_for(lambda: get_json(f"{base}/v2/models/review_sentiment/versions/{NEXT}/ready")[0] == 200,
                         CONVERGENCE_LIMIT, f"{base} did not load v{NEXT} in time")
            timings["publish"] = time.monotonic() - started
            for action, args, old, new in [("promote", ("promote", "review_sentiment", NEXT), REVIEW, NEXT),
                                           ("rollback", ("rollback", "review_sentiment"), NEXT, REVIEW)]:
                started = time.monotonic()
                cli(tmp_path, store, *args)
                time.sleep(CONVERGENCE_LIMIT + 1)
                timings[action] = max(load.converged_at(base, started, old, new) for base in instances)
                assert timings[action] <= CONVERGENCE_LIMIT, (action, timings)
            # Unload and load through one instance's repository API reach all three.
            for action, expected in (("unload", 404), ("load", 200)):
                started = time.monotonic()
                status, _ = get_json(f"{instances[0]}/v2/repository/models/decision_tree/{action}", b"{}",
                                     {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
                assert status == 200
                for base in instances:
                    wait_for(lambda: get_json(f"{base}/v2/models/decision_tree/ready")[0] == expected,
                             CONVERGENCE_LIMIT, f"{base}: decision_tree {action} did not arrive in time")
                timings[action] = time.monotonic() - started
            # The store goes away for 30 s: inference goes on from the caches, readiness says so.
            s3.stop()
            outage_start = time.monotonic()
            for base in instances:
                wait_for(lambda: get_json(f"{base}/health/ready")[1].get("model_store") == "unavailable",
                         CONVERGENCE_LIMIT + 5, f"{base} did not notice the outage")
            assert all(get_json(f"{base}/health/ready")[0] == 200 for base in instances)
            time.sleep(max(0.0, 30 - (time.monotonic() - outage_start)))
            s3.start()
            for base in instances:
                wait_for(lambda: get_json(f"{base}/health/ready")[1].get("model_store") == "ok",
                         CONVERGENCE_LIMIT + 5, f"{base} did not notice the store was back")
            time.sleep(1)
    failed = [r for r in load.records if r[4] != 200]
    counts = {kind: sum(r[1] == kind for r in load.records) for kind in load.requests}
    print(f"store convergence (s): {timings}; requests: {counts}; failed: {len(failed)}")
    assert counts["review"] > 100 and counts["classify"] > 100 and counts["v2"] > 100
    assert not failed, failed[:10]


def test_batch_scoring_and_spark_read_the_store(tmp_path, s3, monkeypatch):
    import csv
    import gzip
    import itertools

    import pyarrow.parquet as pq

    from app.batch.spark_score import main as spark_main

    store = new_store(s3)
    cli(tmp_path, store, "publish", str(SAVED_MODELS), "--model", "review_sentiment")
    monkeypatch.setenv("MODELSERVE_MODEL_CACHE", str(tmp_path / "batch-cache"))
    reviews = tmp_path / "reviews.csv"
    with gzip.open(SHARED_DATA / "imdb" / "test.csv.gz", "rt", encoding="utf-8") as handle:
        rows = list(itertools.islice(csv.DictReader(handle), 20))
    with open(reviews, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, ["id", "text", "label"])
        writer.writeheader()
        writer.writerows({"id": f"r{i}", **row} for i, row in enumerate(rows))
    results = {}
    for label, location in (("local", str(SAVED_MODELS)), ("store", store)):
        app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'b.db'}",
                          "MODEL_STORE": location if "://" in location else "", "MODEL_CACHE": str(tmp_path / "c")})
        done = app.test_cli_runner().invoke(args=["score", "review_sentiment", str(reviews), str(tmp_path / f"{label}.parquet"),
                                                  "--key", "id", "--column", "text", "--no-progress"])
        assert done.exit_code == 0 and "scored 20 items" in done.output, done.output
        results[label] = {r["key"]: r for r in pq.read_table(tmp_path / f"{label}.parquet").to_pylist()}
    assert spark_main(["--master", "local[2]", "--model-dir", store, "--model", "review_sentiment", "--input",
                       str(reviews), "--output", str(tmp_path / "spark"), "--key", "id", "--column", "text"]) == 0
    results["spark"] = {r["key"]: r for r in pq.read_table(tmp_path / "spark").to_pylist()}
    assert set(results["local"]) == set(results["store"]) == set(results["spark"]) == {f"r{i}" for i in range(20)}
    for key, row in results["local"].items():
        for other in ("store", "spark"):
            assert results[other][key]["label"] == row["label"]
            assert results[other][key]["probability_positive"] == pytest.approx(row["probability_positive"], abs=1e-6)
    assert [p.parent.name for p in (tmp_path / "batch-cache").glob("*/review_sentiment/*/manifest.json")] == [REVIEW]


CLOUD_FUNCTION = """
import json, sys
from functions_framework import create_app
client = create_app(target="handle", source="main.py").test_client()
review = "A beautiful, touching film."
answers = [client.post("/predict", data={"review": review}).get_json(),
           client.post("/predict", data={"review": review, "model": "decision_tree"}).get_json(),
           client.get("/health/ready").get_json()]
print(json.dumps(answers))
"""


def test_the_cloud_functions_bundle_serves_models_from_a_bucket_by_name(tmp_path, s3):
    import subprocess
    import sys

    from app.config import PROJECT_ROOT

    store = new_store(s3)
    cli(tmp_path, store, "publish", str(SAVED_MODELS), "--model", "decision_tree", "--model", "logistic_regression")
    subprocess.run(["make", "gcp-bundle"], cwd=PROJECT_ROOT, check=True, capture_output=True)
    bundle = PROJECT_ROOT / "build" / "gcp"
    assert "s3fs==" in (bundle / "requirements.txt").read_text() and not (bundle / "saved_models").exists()
    env = {**os.environ, "MODELSERVE_MODEL_STORE": store, "MODELSERVE_MODEL_CACHE": str(tmp_path / "tmp-model-cache"),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'cf.db'}", "MODELSERVE_LOG_FORMAT": "text"}
    done = subprocess.run([sys.executable, "-c", CLOUD_FUNCTION], cwd=bundle, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    default, by_name, ready = json.loads(done.stdout.strip().splitlines()[-1])
    assert default["model"]["name"] == "logistic_regression" and default["label"] == "positive"
    assert by_name["model"]["name"] == "decision_tree"
    assert ready["model_store"] == "ok"
    assert list((tmp_path / "tmp-model-cache").glob("*/decision_tree/*/manifest.json"))
