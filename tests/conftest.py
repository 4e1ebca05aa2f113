"""Shared fixtures: app, client, runner, the real data folder, a private model folder."""
from __future__ import annotations

import collections
import csv
import gzip
import io
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from app import create_app
from app.config import PROJECT_ROOT

SAVED_MODELS = PROJECT_ROOT / "saved_models"
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def committed_version(name: str) -> str:
    """The one version of a model committed in saved_models/ (tests follow it when a model is retrained)."""
    versions = sorted(p.name for p in (SAVED_MODELS / name).iterdir() if p.is_dir())
    assert len(versions) == 1, f"saved_models/{name} should hold one version, not {versions}"
    return versions[0]


@pytest.fixture
def app(tmp_path):
    """An app on a fresh SQLite file, serving the committed models."""
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'test.db'}"})
    yield app
    app.extensions["db_engine"].dispose()


@pytest.fixture
def client(app):
    """A test client for the app."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """A runner for the app's `flask` CLI commands."""
    return app.test_cli_runner()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data sets; the tests that use them must not silently pass without them."""
    if not (SHARED_DATA / "imdb" / "test.csv.gz").exists():
        pytest.fail(f"real data not found at {SHARED_DATA}; the test suite needs ../shared/data")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cells(shared_data, tmp_path_factory):
    """20 cells from malaria/ and 10 from malaria_extra/ (both labels), plus a file that is not an image."""
    folder = tmp_path_factory.mktemp("cells")
    for source, count in (("malaria", 10), ("malaria_extra", 5)):
        for label in ("Parasitized", "Uninfected"):
            (folder / source / label).mkdir(parents=True)
            for path in sorted((shared_data / source / label).glob("*.png"))[:count]:
                shutil.copy(path, folder / source / label / path.name)
    (folder / "broken.png").write_bytes(b"not an image at all")
    return folder


@pytest.fixture(scope="session")
def reviews(shared_data, tmp_path_factory):
    """40 IMDb test reviews and one empty review in a CSV with an id column."""
    path = tmp_path_factory.mktemp("reviews") / "reviews.csv"
    with gzip.open(shared_data / "imdb" / "test.csv.gz", "rt", encoding="utf-8") as handle:
        rows = list(itertools.islice(csv.DictReader(handle), 40))
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, ["id", "text", "label"])
        writer.writeheader()
        writer.writerows([{"id": f"r{i}", **row} for i, row in enumerate(rows)] + [{"id": "empty", "text": "", "label": "0"}])
    return path


def rows_by_key(path) -> dict:
    """Rows of a Parquet result (a file, or a folder as Spark writes it) by key."""
    import pyarrow.parquet as pq

    return {row["key"]: row for row in pq.read_table(path).to_pylist()}


def assert_cells_answered_as_http(rows: dict, cells: Path, client) -> None:
    """Batch results of the ``cells`` folder by key: broken.png has only its error, every cell /classify's
    label and probabilities (to 1e-6)."""
    assert "not a PNG or JPEG" in rows["broken.png"]["error"] and rows["broken.png"]["label"] is None
    assert len(rows) == 31
    for key, row in rows.items():
        if key == "broken.png":
            continue
        http = client.post("/classify", data={"image": (io.BytesIO((cells / key).read_bytes()), "c.png")}).json
        assert row["label"] == http["label"] and row["model"] == "malaria_cell" and row["error"] is None
        for label, p in http["probabilities"].items():
            assert row[f"probability_{label}"] == pytest.approx(p, abs=1e-6)


def review_texts(reviews: Path) -> dict:
    """The ``reviews`` CSV's texts by id."""
    with open(reviews, encoding="utf-8") as handle:
        return {row["id"]: row["text"] for row in csv.DictReader(handle)}


def assert_reviews_answered_as_http(rows: dict, reviews: Path, client) -> None:
    """Batch results of the ``reviews`` CSV by id: the empty one has only its error, every other /review's
    label and probability (to 1e-6)."""
    texts = review_texts(reviews)
    assert set(rows) == set(texts)
    assert "empty" in rows["empty"]["error"] and rows["empty"]["label"] is None
    for key, row in rows.items():
        if key == "empty":
            continue
        http = client.post("/review", data={"review": texts[key]}).json
        assert row["label"] == http["label"] and row["error"] is None
        assert row["probability_positive"] == pytest.approx(http["probability_positive"], abs=1e-6)


def run_try_it_block(page: str) -> subprocess.CompletedProcess:
    """The "Try it on this machine" shell block of docs/``page``, run as printed in bash from the project root
    (it must pass; the caller checks what it made)."""
    import re

    text = (PROJECT_ROOT / "docs" / page).read_text()
    block = re.search(r"Try it on this machine.*?```sh\n(.*?)```", text, re.S).group(1)
    done = subprocess.run(["bash", "-e", "-c", block], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A private copy of saved_models/ that a test may change."""
    target = tmp_path / "saved_models"
    shutil.copytree(SAVED_MODELS, target, ignore=shutil.ignore_patterns(".staging-*"))
    return target


@pytest.fixture
def app_with_model_dir(tmp_path, model_dir):
    """An app serving from the private model folder."""
    app = create_app({
        "TESTING": True,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'test.db'}",
        "MODEL_DIR": str(model_dir),
    })
    yield app
    app.extensions["db_engine"].dispose()


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 30):
    """(status, parsed JSON body) of a request, for 4xx/5xx too."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@contextmanager
def run_gunicorn(tmp_path: Path, env_overrides: dict | None = None, port: int | None = None, stdout=subprocess.DEVNULL):
    """gunicorn main:app on a loopback port; yields (base_url, process). Stopped with SIGTERM afterwards."""
    port = port or free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "WEB_CONCURRENCY": "2",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'server.db'}",
           "GUNICORN_PIDFILE": str(tmp_path / f"gunicorn-{port}.pid"), **(env_overrides or {})}
    log_file = open(tmp_path / f"gunicorn-{port}.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "main:app"],
                            cwd=PROJECT_ROOT, env=env, stdout=stdout, stderr=log_file)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if get_json(base + "/v2/health/ready")[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("server did not become ready: " + (tmp_path / f"gunicorn-{port}.log").read_text()[-3000:])
        time.sleep(0.2)
    try:
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        log_file.close()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    """gunicorn main:app on a free loopback port, started once per test session."""
    with run_gunicorn(tmp_path_factory.mktemp("server")) as (base, _):
        yield base


SERVER_POSTGRES_URL = os.environ.get("MODELSERVE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def worker_database(url: str) -> str:
    """The test database of this pytest-xdist worker (``test_gw0``, ``test_gw1``, ... on the same server), since the
    database_url fixture empties tables a test on another worker may be using; without workers, ``url`` itself."""
    import sqlalchemy as sa

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return url
    parsed = sa.engine.make_url(url)
    return parsed.set(database=f"{parsed.database}_{worker}").render_as_string(hide_password=False)


POSTGRES_URL = worker_database(SERVER_POSTGRES_URL)


def create_worker_database() -> None:
    """Create this worker's database when the server answers and it is missing (a server that does not answer is
    reported by postgres_url_or_fail, in the tests that need it)."""
    if POSTGRES_URL == SERVER_POSTGRES_URL:
        return
    import sqlalchemy as sa

    from app.database import make_engine

    engine = make_engine(SERVER_POSTGRES_URL)
    name = sa.engine.make_url(POSTGRES_URL).database
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}).first() is None:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError:
        pass
    finally:
        engine.dispose()


def postgres_url_or_fail() -> str:
    """The test PostgreSQL URL; the suite fails (not skips) when it cannot be reached."""
    import sqlalchemy as sa

    from app.database import make_engine

    engine = make_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is not reachable ({exc.orig}); start it, or point "
                    "MODELSERVE_TEST_POSTGRES_URL at one")
    finally:
        engine.dispose()
    return POSTGRES_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """A clean database of each kind: a new SQLite file, or the test PostgreSQL with empty tables."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    url = postgres_url_or_fail()
    import sqlalchemy as sa

    from app.database import make_engine
    from app.migrations import upgrade_database

    engine = make_engine(url)
    upgrade_database(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM jobs"))
        conn.execute(sa.text("DELETE FROM review_feedback"))
        conn.execute(sa.text("DELETE FROM predictions"))
        conn.execute(sa.text("DELETE FROM prediction_feedback"))
    engine.dispose()
    return url


# -- markers for the fast inner loop (`make test-fast`); `make test` runs everything ------------------------------

LIVE_FIXTURES = {"live_server", "byo_server"}
FILE_MARKERS = {
    "test_browser.py": "browser",
    "test_faults.py": "live", "test_slow_clients.py": "live", "test_jobs_live.py": "live", "test_reload.py": "live",
    "test_batch.py": "slow", "test_pipelines.py": "slow", "test_training.py": "slow", "test_benchmarks.py": "slow", "test_fuzz_openapi.py": "slow",
}
MARKERS = {
    "live": "starts gunicorn (or uses the session's live server)",
    "browser": "drives headless Chromium",
    "postgres": "needs the PostgreSQL server",
    "slow": "Spark, Beam, Flink, training, benchmarks or fuzzing: tens of seconds each",
}


def pytest_configure(config):
    """Register the markers; give this worker its database (test modules build apps on it as they are collected)."""
    for name, meaning in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {meaning}")
    create_worker_database()


def pytest_collection_modifyitems(config, items):
    """Mark tests by file, by the live-server fixtures they use, and by the database they run on."""
    for item in items:
        marker = FILE_MARKERS.get(item.path.name) or ("slow" if item.originalname in SLOW_TESTS else None)
        if marker:
            item.add_marker(marker)
        if LIVE_FIXTURES & set(getattr(item, "fixturenames", ())) or "run_gunicorn" in getattr(
                item.function, "__code__", compile("", "", "exec")).co_names:
            item.add_marker("live")
        callspec = getattr(item, "callspec", None)
        if (callspec and callspec.params.get("database_url") == "postgresql") or "postgres" in item.name:
            item.add_marker("postgres")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    """Refuse a pytest-xdist schedule that would run one test of several sharing an id (schemathesis' operations do):
    the by-scope schedulers keep one of each."""
    dist = node.config.option.dist
    repeated = [nodeid for nodeid, count in collections.Counter(ids).items() if count > 1]
    if dist in ("loadscope", "loadfile", "loadgroup") and repeated:
        raise pytest.UsageError(f"--dist {dist} would run one test of each id, and {repeated[0]} names several: "
                                "use --dist worksteal (as `make test` does) or load")


SLOW_TESTS = {"test_held_out_accuracy_through_the_endpoint", "test_feedback_that_lowers_accuracy_is_not_promoted",
              "test_fuzz_preprocessing_for_a_bounded_time"}


@pytest.fixture(autouse=True, scope="session")
def committed_models_loaded_once():
    """In-process apps share the loaded committed models (read-only) instead of re-hashing them for every test.

    Only models under saved_models/ are shared; a test that changes a model works on its own copy
    (the model_dir fixture), which is loaded afresh.
    """
    from app.models.registry import ModelRegistry

    original, cache = ModelRegistry._load_one, {}

    def load_one(self, manifest, key):
        if not Path(manifest.directory).resolve().is_relative_to(SAVED_MODELS.resolve()):
            return original(self, manifest, key)
        cache_key = (str(manifest.directory), repr(sorted(self.options.items())))
        if cache_key not in cache:
            cache[cache_key] = original(self, manifest, key)
        self.load_seconds.setdefault(key, 0.0)
        if cache[cache_key] is not None:  # answers go to the prediction log of the app that loaded it last
            cache[cache_key].prediction_log = self.prediction_log
        return cache[cache_key]

    ModelRegistry._load_one = load_one
    yield
    ModelRegistry._load_one = original
    # No test may change the committed model folder (they work on copies).
    changed = [str(p) for pattern in ("*/UNLOADED", "*/aliases.json", ".reload") for p in SAVED_MODELS.glob(pattern)]
    assert not changed, f"a test changed saved_models/: {changed}"


# -- an S3-compatible server (moto's) for the model store and the prediction log's Parquet files ----------

class S3Server:
    """moto's S3 server in a thread on a loopback port; stop() and start() keep its buckets (an outage)."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._make = lambda: ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server = self._make()

    def start(self):
        self.server = self._make()
        self.server.start()

    def stop(self):
        self.server.stop()


@pytest.fixture(scope="session")
def s3():
    """The S3 server, with the standard AWS settings pointing at it for this process and its children (one for the
    session: fsspec keeps its file systems, with the endpoint they were made with, for the life of the process)."""
    settings = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
    server = S3Server()
    settings["AWS_ENDPOINT_URL"] = server.endpoint
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def new_store(s3) -> str:
    """An empty bucket of its own on the S3 server; returns the store URL."""
    import boto3

    bucket = f"models-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3.endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/store"
