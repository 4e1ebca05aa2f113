"""Faults: a gunicorn worker killed with SIGKILL under load is replaced; only in-flight requests fail."""
import http.client
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

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


class TcpProxy:
    """A TCP forwarder to a local port that can be cut and restored: a database outage on demand."""

    def __init__(self, target_port: int):
        import socket

        from tests.conftest import free_port

        self.socket_module, self.target, self.port = socket, target_port, free_port()
        self.listener, self.connections = None, []

    def start(self):
        sock = self.socket_module.socket()
        sock.setsockopt(self.socket_module.SOL_SOCKET, self.socket_module.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self.listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def stop(self):
        try:
            self.listener.shutdown(self.socket_module.SHUT_RDWR)  # wakes the accept() of the other thread
        except OSError:
            pass
        self.listener.close()
        for conn in self.connections:
            try:
                conn.shutdown(self.socket_module.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self.connections = []

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = self.socket_module.create_connection(("127.0.0.1", self.target))
            self.connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.close()
            except OSError:
                pass


def test_database_outage_leaves_inference_up_and_recovers(tmp_path):
    from tests.conftest import postgres_url_or_fail

    postgres_url_or_fail()
    proxy = TcpProxy(5432)  # down from the start: workers must boot without the database
    env = {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{proxy.port}/test", "MODELSERVE_WORKER_TOKEN": "t",
           "MODELSERVE_MODELS": "review_sentiment"}
    review = urllib.parse.urlencode({"review": "Solid acting, a sharp script."}).encode()
    job = b'{"model": "review_sentiment", "text": "A fine film."}'
    json_headers = {"Content-Type": "application/json"}
    with run_gunicorn(tmp_path, env) as (base, proc):
        assert get_json(base + "/review", review)[0] == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(base + "/jobs", job, json_headers), timeout=30)
        assert refused.value.code == 503 and int(refused.value.headers["Retry-After"]) > 0
        assert "database" in json.loads(refused.value.read())["error"]
        # A worker killed during the outage is replaced, and the replacement serves.
        victim = worker_pids(proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while len(pids := worker_pids(proc.pid)) != 2 or victim in pids:
            assert proc.poll() is None and time.monotonic() < deadline, "the master went down with the database"
            time.sleep(0.2)
        time.sleep(3)  # the replacement loads its models
        assert [get_json(base + "/review", review)[0] for _ in range(6)] == [200] * 6
        # The database comes back: the server recovers by itself.
        proxy.start()
        deadline = time.monotonic() + 20
        while (status := get_json(base + "/jobs", job, json_headers)[0]) != 202:
            assert status == 503 and time.monotonic() < deadline, status
            time.sleep(0.5)
        # And goes away again while connections are pooled: 503, not 500.
        proxy.stop()
        seen = []  # each worker reports what its own last database request found
        for _ in range(20):
            assert get_json(base + "/jobs", job, json_headers)[0] == 503
            seen.append(get_json(base + "/health/ready")[1]["database"])
            if seen[-1] == "unavailable":
                break
        assert "unavailable" in seen, seen
        assert get_json(base + "/review", review)[0] == 200
