"""Start and stop `gunicorn main:app` on a free loopback port for benchmarks."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def gunicorn_server(env_overrides: dict[str, str] | None = None, python: str = sys.executable):
    """Yield (base_url, master_pid) of a ready server; stop it afterwards."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "MODELSERVE_LOG_LEVEL": "WARNING",
           "DATABASE_URL": f"sqlite:////tmp/modelserve-bench-{port}.db", **(env_overrides or {})}
    log = tempfile.TemporaryFile()  # the server's own log, shown if it fails to start
    proc = subprocess.Popen([python, "-m", "gunicorn", "-c", "gunicorn.conf.py", "main:app"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        while True:
            try:
                with urllib.request.urlopen(base + "/v2/health/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.05)
            if proc.poll() is not None or time.monotonic() - started > 120:
                log.seek(0)
                tail = log.read().decode(errors="replace")[-3000:]
                raise RuntimeError(f"server did not become ready (exit code {proc.poll()}):\n{tail}")
        time.sleep(1.0)  # let every worker finish loading
        yield base, proc.pid, time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
