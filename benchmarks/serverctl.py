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
from contextlib import contextmanager, suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(command: list[str], env: dict, ready_url: str, log, ready=lambda: True, timeout: float = 120):
    """Start `command` in its own process group; yield (process, seconds to ready) once `ready_url`
    answers 200 and `ready()` holds; stop the whole group afterwards (SIGTERM, then SIGKILL).

    `log` is a binary file opened for writing and reading: the server's output goes there,
    and its tail is in the error when the server dies or is not ready within `timeout`.
    """
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        while True:
            try:
                with urllib.request.urlopen(ready_url, timeout=2) as response:
                    if response.status == 200 and ready():
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() - started > timeout:
                log.seek(0)
                tail = log.read().decode(errors="replace")[-3000:]
                raise RuntimeError(f"{command} did not become ready (exit code {proc.poll()}):\n{tail}")
            time.sleep(0.05)
        yield proc, time.monotonic() - started
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def gunicorn_server(env_overrides: dict[str, str] | None = None, python: str = sys.executable):
    """Yield (base_url, master_pid, seconds to ready) of `gunicorn main:app`; stop it afterwards."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "MODELSERVE_LOG_LEVEL": "WARNING",
           "DATABASE_URL": f"sqlite:////tmp/modelserve-bench-{port}.db", **(env_overrides or {})}
    base = f"http://127.0.0.1:{port}"
    command = [python, "-m", "gunicorn", "-c", "gunicorn.conf.py", "main:app"]
    with tempfile.TemporaryFile() as log, running_server(command, env, base + "/v2/health/ready", log) as (proc, seconds):
        time.sleep(1.0)  # let every worker finish loading
        yield base, proc.pid, seconds
