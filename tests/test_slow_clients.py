"""Slow clients through the shipped reverse proxy (deploy/nginx, Debian's nginx) in front of gunicorn.

500 connections that trickle their headers or stall in their bodies must not starve anyone:
/health/live and /review keep answering within 1 s, and no gunicorn worker is killed.
"""
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
from contextlib import contextmanager
from pathlib import Path
from string import Template

import pytest

from app.config import PROJECT_ROOT
from tests.conftest import free_port, get_json, run_gunicorn
from tests.test_faults import worker_pids

TEMPLATE = PROJECT_ROOT / "deploy" / "nginx" / "modelserve.conf.template"


@contextmanager
def run_nginx(tmp_path: Path, upstream: str):
    """nginx with the shipped server block, on a free port; yields its base URL."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        pytest.fail("nginx is not installed (`make system-deps` installs Debian's package)")
    port = free_port()
    root = tmp_path / "nginx"
    root.mkdir()
    (root / "modelserve.conf").write_text(
        Template(TEMPLATE.read_text()).safe_substitute(MODELSERVE_UPSTREAM=upstream, NGINX_PORT=str(port)))
    temp_paths = " ".join(f"{kind}_temp_path {root / kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                              "uwsgi", "scgi"))
    (root / "nginx.conf").write_text(f"""
        {"user root;" if os.geteuid() == 0 else ""}
        worker_processes 2;
        pid {root / 'nginx.pid'};
        error_log {root / 'error.log'} warn;
        daemon off;
        events {{ worker_connections 4096; }}
        http {{ access_log off; {temp_paths} include {root / 'modelserve.conf'}; }}
    """)
    proc = subprocess.Popen([binary, "-p", str(root), "-c", str(root / "nginx.conf"), "-e", str(root / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if get_json(base + "/health/live", timeout=2)[0] == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("nginx did not start: " + (root / "error.log").read_text()[-2000:])
        time.sleep(0.2)
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def slow_connections(port: int, count: int) -> list[socket.socket]:
    """Half trickle their headers (never finished), half announce a body and stall in it."""
    sockets = []
    for number in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if number % 2:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
        else:
            sock.sendall(b"POST /review HTTP/1.1\r\nHost: slow\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                         b"Content-Length: 100000\r\n\r\nreview=stalled")
        sockets.append(sock)
    return sockets


def test_500_slow_clients_through_the_shipped_proxy(tmp_path):
    env = {"MODELSERVE_MODELS": "review_sentiment", "GUNICORN_TIMEOUT": "5", "MODELSERVE_PROXY_HOPS": "1"}
    with run_gunicorn(tmp_path, env) as (upstream, proc), run_nginx(tmp_path, upstream.removeprefix("http://")) as base:
        workers = worker_pids(proc.pid)
        slow = slow_connections(int(base.rsplit(":", 1)[1]), 500)
        review = urllib.parse.urlencode({"review": "Solid acting, a sharp script."}).encode()
        timings = []
        try:
            for _ in range(20):  # about 8 s with the slow clients holding on, past the 5 s worker timeout
                for path, body in (("/health/live", None), ("/review", review)):
                    started = time.monotonic()
                    status, _ = get_json(base + path, body, timeout=5)
                    timings.append((path, status, time.monotonic() - started))
                time.sleep(0.3)
                for sock in slow[1::2][:50]:  # keep trickling some headers, one byte at a time
                    sock.sendall(b"x")
        finally:
            for sock in slow:
                sock.close()
        assert all(status == 200 for _, status, _ in timings), timings
        slowest = max(seconds for _, _, seconds in timings)
        assert slowest < 1.0, f"slowest answer {slowest:.2f} s"
        assert worker_pids(proc.pid) == workers  # none killed by the worker timeout
