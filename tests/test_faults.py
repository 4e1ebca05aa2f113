"""Faults: a gunicorn worker killed with SIGKILL under load is replaced; only in-flight requests fail."""
import http.client
import os
import signal
import subprocess
import threading
import time
import urllib.parse

from tests.conftest import get_json, run_gunicorn


def worker_pids(master: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def test_sigkill_of_a_worker_under_load(tmp_path):
    with run_gunicorn(tmp_path, {"MODELSERVE_MODELS": "review_sentiment"}) as (base, proc):
        body = urllib.parse.urlencode({"review": "Solid acting, a sharp script."}).encode()
        results, stop = [], threading.Event()

        def client():
            while not stop.is_set():
                started = time.monotonic()
                try:
                    status, _ = get_json(base + "/review", body)
                except (OSError, http.client.HTTPException) as exc:  # the killed worker's in-flight request
                    status = f"connection error: {type(exc).__name__}"
                results.append((started, status))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(2)
        before = worker_pids(proc.pid)
        assert len(before) == 2
        killed_at = time.monotonic()
        os.kill(before[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            now = worker_pids(proc.pid)
            if len(now) == 2 and before[0] not in now:
                break
            assert time.monotonic() < deadline, "master did not replace the killed worker"
            time.sleep(0.1)
        time.sleep(2)
        stop.set()
        for thread in threads:
            thread.join()
    failed = [(t, s) for t, s in results if s != 200]
    assert len(results) > 100
    # Only requests in flight in the killed worker can fail: at most one per client thread.
    assert len(failed) <= 4, failed
    assert all(t < killed_at + 0.5 for t, _ in failed)
    assert [s for t, s in results if t > killed_at + 1].count(200) == len([1 for t, _ in results if t > killed_at + 1])
