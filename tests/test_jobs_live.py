"""Jobs through gunicorn with real pull workers: 1,000 jobs, a SIGKILLed worker, a server restart."""
import base64
import io
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from PIL import Image

from app.config import PROJECT_ROOT
from app.database import make_engine
from app.jobs.store import JobStore
from app.jobs.pull import Server, run_worker
from app.models.registry import ModelRegistry
from tests.conftest import SAVED_MODELS, SHARED_DATA, free_port, get_json, run_gunicorn

TOKEN = "live-worker-token"


def submit(base: str, text: str) -> str:
    request = urllib.request.Request(base + "/jobs", json.dumps({"model": "review_sentiment", "text": text}).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
        return json.loads(response.read())["id"]


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def start_workers(base: str, count: int, stop: threading.Event, models=("review_sentiment",)) -> list[threading.Thread]:
    registry = ModelRegistry(SAVED_MODELS, set(models))
    registry.load_all()
    threads = [threading.Thread(target=run_worker, args=(Server(base, TOKEN), registry, list(models)),
                                kwargs={"wait": 1, "stop": stop, "name": f"worker-{i}", "heartbeat_every": 1},
                                daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    return threads


def test_thousand_jobs_four_workers_each_done_once(database_url, tmp_path):
    store = JobStore(make_engine(database_url))
    with run_gunicorn(tmp_path, {"DATABASE_URL": database_url, "MODELSERVE_WORKER_TOKEN": TOKEN}) as (base, _):
        ids = {submit(base, f"Review number {i}: {'great' if i % 2 else 'awful'} film.") for i in range(1000)}
        stop = threading.Event()
        workers = start_workers(base, 4, stop)
        wait_until(lambda: store.counts().get("succeeded", 0) == 1000, 240, "1,000 results")
        stop.set()
        for worker in workers:
            worker.join(timeout=10)
    assert store.counts() == {"succeeded": 1000}
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT id, attempts, result FROM jobs").all()
    assert {r[0] for r in rows} == ids
    assert all(r[1] == 1 for r in rows)  # leased once each: no job was handed to two workers
    labels = [json.loads(r[2])["label"] for r in rows]
    assert labels.count("positive") == 500
    store.engine.dispose()


def finish_on_a_live_worker(base: str, store: JobStore, job_id: str, what: str) -> None:
    """Start one worker, wait until it has finished the job, stop it."""
    stop = threading.Event()
    workers = start_workers(base, 1, stop)
    wait_until(lambda: store.get(job_id)["status"] == "succeeded", 30, what)
    stop.set()
    workers[0].join(timeout=10)


LEASE_AND_HANG = """
import json, sys, time, urllib.request
headers = {"Content-Type": "application/json", "Authorization": "Bearer " + sys.argv[2]}
req = urllib.request.Request(sys.argv[1] + "/jobs/lease", json.dumps({"worker": "doomed", "wait": 5}).encode(), headers)
with urllib.request.urlopen(req) as r:
    lease = json.loads(r.read())
beat = urllib.request.Request(sys.argv[1] + "/jobs/" + lease["job"]["id"] + "/heartbeat",
                              json.dumps({"lease_id": lease["lease_id"]}).encode(), headers)
urllib.request.urlopen(beat).read()  # acknowledged: the job started on this worker, which then hangs
print(lease["job"]["id"], flush=True)
time.sleep(120)
"""

LONG_POLL_THEN_VANISH = """
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/jobs/lease", json.dumps({"worker": "vanished", "wait": 15}).encode(),
                             {"Content-Type": "application/json", "Authorization": "Bearer " + sys.argv[2]})
print("polling", flush=True)
urllib.request.urlopen(req).read()
"""


def test_a_job_handed_to_a_vanished_long_poll_comes_back_in_seconds(database_url, tmp_path):
    """A worker stops while its long poll is open; a job submitted then is handed to that dead poll. It goes
    back to the queue once the acknowledgement time passes (not the lease's), uncounted, and the page's API
    says meanwhile that it waits for its worker to start."""
    store = JobStore(make_engine(database_url))
    env = {"DATABASE_URL": database_url, "MODELSERVE_WORKER_TOKEN": TOKEN, "MODELSERVE_JOB_ACK_SECONDS": "2",
           "MODELSERVE_JOB_LEASE_SECONDS": "60"}
    with run_gunicorn(tmp_path, env) as (base, _):
        poller = subprocess.Popen([sys.executable, "-c", LONG_POLL_THEN_VANISH, base, TOKEN], stdout=subprocess.PIPE,
                                  text=True)
        assert poller.stdout.readline().strip() == "polling"
        time.sleep(0.5)
        poller.send_signal(signal.SIGKILL)
        poller.wait()
        job_id = submit(base, "Submitted just after its only worker stopped.")
        wait_until(lambda: store.get(job_id)["status"] == "running", 10, "the hand-out to the dead poll")
        shown = get_json(f"{base}/jobs/{job_id}")[1]
        assert shown["worker"] == "vanished" and shown["started_at"] is None
        handed = time.monotonic()
        wait_until(lambda: get_json(f"{base}/jobs/{job_id}")[1]["status"] == "queued", 20, "the job back in the queue")
        assert time.monotonic() - handed < 8  # seconds, not the 60 s lease
        finish_on_a_live_worker(base, store, job_id, "the job on a live worker")
    job = store.get(job_id)
    assert job["attempts"] == 1 and job["worker"] == "worker-0"  # the lost hand-out was not an attempt
    store.engine.dispose()


def test_sigkilled_worker_job_is_released_and_completes(database_url, tmp_path):
    store = JobStore(make_engine(database_url))
    env = {"DATABASE_URL": database_url, "MODELSERVE_WORKER_TOKEN": TOKEN, "MODELSERVE_JOB_LEASE_SECONDS": "2"}
    with run_gunicorn(tmp_path, env) as (base, _):
        job_id = submit(base, "A film I will never forget, wonderful.")
        doomed = subprocess.Popen([sys.executable, "-c", LEASE_AND_HANG, base, TOKEN], stdout=subprocess.PIPE, text=True)
        assert doomed.stdout.readline().strip() == job_id
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        assert store.get(job_id)["status"] == "running"
        finish_on_a_live_worker(base, store, job_id, "the re-leased job")
    job = store.get(job_id)
    assert job["attempts"] == 2 and job["worker"] == "worker-0"
    store.engine.dispose()


def test_server_restart_mid_stream_loses_no_job(database_url, tmp_path):
    store = JobStore(make_engine(database_url))
    env = {"DATABASE_URL": database_url, "MODELSERVE_WORKER_TOKEN": TOKEN}
    port = free_port()
    with run_gunicorn(tmp_path, env, port=port) as (base, _):
        ids = [submit(base, f"first batch {i}, lovely") for i in range(40)]
        stop = threading.Event()
        workers = start_workers(base, 2, stop)
        wait_until(lambda: store.counts().get("succeeded", 0) >= 10, 60, "some results before the restart")
    # The server is down now (SIGTERM); the workers keep retrying. Start it again on the same store.
    with run_gunicorn(tmp_path, env, port=port) as (base, _):
        ids += [submit(base, f"second batch {i}, dreadful") for i in range(20)]
        wait_until(lambda: store.counts().get("succeeded", 0) == 60, 120, "all 60 results")
        stop.set()
        for worker in workers:
            worker.join(timeout=10)
    assert store.counts() == {"succeeded": 60}
    store.engine.dispose()


def test_image_job_returns_heat_map(tmp_path):
    cell = next((SHARED_DATA / "malaria" / "Parasitized").glob("*.png")).read_bytes()
    with run_gunicorn(tmp_path, {"MODELSERVE_WORKER_TOKEN": TOKEN}) as (base, _):
        boundary = "xyz"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nmalaria_cell\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"c.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + cell + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(base + "/jobs", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            job_url = base + response.headers["Location"]
        stop = threading.Event()
        workers = start_workers(base, 1, stop, models=("malaria_cell",))

        def finished():
            with urllib.request.urlopen(job_url, timeout=10) as response:
                return json.loads(response.read())["status"] == "succeeded"

        wait_until(finished, 60, "the image job")
        stop.set()
        workers[0].join(timeout=10)
        with urllib.request.urlopen(job_url, timeout=10) as response:
            result = json.loads(response.read())["result"]
    assert result["label"] in ("Parasitized", "Uninfected")
    heat = Image.open(io.BytesIO(base64.b64decode(result["heatmap_png_base64"])))
    assert heat.format == "PNG" and heat.size[0] >= 100


def test_worker_command_line(tmp_path):
    with run_gunicorn(tmp_path, {"MODELSERVE_WORKER_TOKEN": TOKEN, "MODELSERVE_MODELS": "review_sentiment"}) as (base, _):
        job_id = submit(base, "Tedious, predictable and badly acted.")
        done = subprocess.run([sys.executable, "-m", "app.worker", "--server", base, "--token", TOKEN,
                               "--model", "review_sentiment", "--max-jobs", "1", "--wait", "2"],
                              cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        with urllib.request.urlopen(f"{base}/jobs/{job_id}", timeout=10) as response:
            job = json.loads(response.read())
    assert job["status"] == "succeeded"
    assert job["result"]["label"] == "negative" and job["result"]["model"]["name"] == "review_sentiment"
