"""The built-in pull worker's loop: lease a job over HTTP, run a local model, post the result.

``app/worker.py`` is its command line. Runs anywhere that can reach the server (a laptop, a GPU box behind NAT): only
outgoing HTTP is needed. Start it with ``python -m app.worker --server URL [--token T]``.
"""
from __future__ import annotations

import base64
import json
import logging
import random
import socket
import threading
import urllib.error
import urllib.request

from app.jobs.execute import JobInputError, execute
from app.models.registry import ModelRegistry

log = logging.getLogger(__name__)


class Server:
    """Tiny JSON-over-HTTP client for the worker endpoints."""

    def __init__(self, base_url: str, token: str = "", timeout: float = 60):
        """Store the address and the bearer token."""
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def post(self, path: str, body: dict) -> tuple[int, dict | None]:
        """POST JSON; returns (status, parsed body or None)."""
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.base_url + path, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                data = response.read()
                return response.status, (json.loads(data) if data else None)
        except urllib.error.HTTPError as err:
            data = err.read()
            try:
                return err.code, json.loads(data)
            except ValueError:
                return err.code, {"error": data.decode(errors="replace")}


def _heartbeat(server: Server, job_id: str, lease_id: str, every: float, done: threading.Event) -> None:
    """Renew the lease until the job is done (or the lease is lost)."""
    while not done.wait(every):
        status, body = server.post(f"/jobs/{job_id}/heartbeat", {"lease_id": lease_id})
        if status != 200:
            log.warning("lost the lease of job %s: %s", job_id, (body or {}).get("error"))
            return


def backoff(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait before retry ``attempt`` (0, 1, ...): exponential, capped, with jitter so that
    workers which lost the server together do not come back together."""
    return min(cap, base * 2 ** attempt) * random.uniform(0.5, 1.0)


def retryable(status: int) -> bool:
    """Answers worth retrying: rate limited, or the server (or its database) briefly unavailable."""
    return status == 429 or status >= 500


def post_until_answered(server: Server, path: str, body: dict, stop: threading.Event | None = None,
                        cap: float = 30.0) -> tuple[int, dict | None]:
    """POST until the server gives a final answer, however long it is away (a result is never dropped).

    Safe to repeat: results and failures are idempotent per lease. Stops early only when ``stop`` is set.
    """
    stop = stop or threading.Event()
    attempt = 0
    while True:
        try:
            status, answer = server.post(path, body)
            if not retryable(status):
                return status, answer
            problem = f"HTTP {status}: {(answer or {}).get('error')}"
        except OSError as exc:
            status, answer, problem = 0, None, str(exc)
        delay = backoff(attempt, cap=cap)
        log.warning("posting to %s failed (%s); retrying in %.1f s (attempt %d; retrying until the server answers)",
                    path, problem, delay, attempt + 1)
        if stop.wait(delay):
            return status, answer
        attempt += 1


def process_one(server: Server, registry: ModelRegistry, leased: dict, heartbeat_every: float,
                explain: bool = True, stop: threading.Event | None = None) -> str:
    """Run one leased job and post its outcome; returns the final status word."""
    job, lease_id = leased["job"], leased["lease_id"]
    # Acknowledge at once: until then the server keeps the job only briefly (a lease answered on a dropped
    # connection must not hold the job), so a lease that is already gone is not worked on. A server that is
    # away (restarting) is asked again until it answers; by then the lease may have gone back to the queue.
    status, body = post_until_answered(server, f"/jobs/{job['id']}/heartbeat", {"lease_id": lease_id}, stop)
    if status != 200:
        log.warning("could not acknowledge the lease of job %s: %s", job["id"], (body or {}).get("error"))
        return "lost"
    done = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(server, job["id"], lease_id, heartbeat_every, done), daemon=True)
    beat.start()
    try:
        result = execute(registry.runner(job["model"]), base64.b64decode(job["payload_base64"]), explain=explain)
    except JobInputError as exc:
        outcome = ("failure", {"lease_id": lease_id, "error": str(exc), "retry": False})
    except Exception as exc:  # any model error: report it, the server decides about retries
        log.exception("job %s failed", job["id"])
        outcome = ("failure", {"lease_id": lease_id, "error": f"{type(exc).__name__}: {exc}", "retry": True})
    else:
        outcome = ("result", {"lease_id": lease_id, "result": result})
    finally:
        done.set()
    status, body = post_until_answered(server, f"/jobs/{job['id']}/{outcome[0]}", outcome[1], stop)
    if status != 200:
        log.warning("server did not take the %s of job %s: %s", outcome[0], job["id"], (body or {}).get("error"))
    if outcome[0] == "result" and status == 400:  # a result the server cannot store: the job fails now, saying why
        reason = f"the server refused the result: {(body or {}).get('error')}"
        post_until_answered(server, f"/jobs/{job['id']}/failure", {"lease_id": lease_id, "error": reason, "retry": False},
                            stop)
        return "failure"
    return outcome[0]


def run_worker(server: Server, registry: ModelRegistry, models: list[str] | None = None, wait: float = 20,
               max_jobs: int | None = None, name: str | None = None, heartbeat_every: float = 15,
               stop: threading.Event | None = None, explain: bool = True) -> int:
    """Lease and run jobs until stopped (or max_jobs done); returns how many were processed."""
    registry.load_all()
    models = models or registry.names()
    name = name or f"{socket.gethostname()}-{threading.get_ident()}"
    stop = stop or threading.Event()
    processed = failures = 0
    log.info("worker %s serving %s from %s", name, ", ".join(models), server.base_url)
    while not stop.is_set() and (max_jobs is None or processed < max_jobs):
        try:
            status, body = server.post("/jobs/lease", {"worker": name, "models": models, "wait": wait})
            problem = f"HTTP {status}: {(body or {}).get('error')}"
        except OSError as exc:
            status, body, problem = 0, None, f"cannot reach {server.base_url}: {exc}"
        if status in (200, 204):
            failures = 0
            if status == 200:
                process_one(server, registry, body, heartbeat_every, explain, stop)
                processed += 1
            continue
        delay = backoff(failures)
        log.warning("lease failed (%s); retrying in %.1f s (attempt %d; a worker retries until stopped)",
                    problem, delay, failures + 1)
        failures += 1
        stop.wait(delay)
    return processed
