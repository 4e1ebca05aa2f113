"""The real deploy path: gunicorn main:app with the shared config, no TensorFlow in the server."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from app.config import PROJECT_ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, data: bytes | None = None, headers: dict | None = None):
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture
def server(tmp_path):
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "WEB_CONCURRENCY": "2",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'server.db'}"}
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "main:app"],
                            cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if get_json(base + "/health/ready")[0] == 200:
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("server did not become ready: " + proc.stderr.read().decode()[-2000:])
    yield base
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def test_gunicorn_serves_review_form_post(server):
    data = urllib.parse.urlencode({"review": "A gripping, beautifully shot film. Loved it!"}).encode()
    status, body = get_json(server + "/review", data)
    assert status == 200 and body["label"] == "positive"


def test_gunicorn_bad_input_is_4xx_and_worker_survives(server):
    status, body = get_json(server + "/review", b"\xff\xfe", {"Content-Type": "application/json"})
    assert status == 400 and "error" in body
    status, _ = get_json(server + "/health/ready")
    assert status == 200


def test_server_process_does_not_import_training_libraries():
    code = ("import sys, main; heavy = [m for m in ('tensorflow', 'keras', 'matplotlib', 'nltk', 'tqdm') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
