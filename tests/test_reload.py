"""`flask models reload`: a new model version is served without dropping a request."""
import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.parse

from app.config import PROJECT_ROOT
from tests.conftest import get_json, run_gunicorn


def test_reload_serves_new_version_without_dropping_requests(tmp_path, model_dir):
    env = {"MODELSERVE_MODEL_DIR": str(model_dir), "MODELSERVE_MODELS": "review_sentiment"}
    with run_gunicorn(tmp_path, env) as (base, _):
        assert get_json(base + "/v2/models/review_sentiment")[1]["versions"] == ["1"]
        failures, answered, stop = [], [], threading.Event()
        body = urllib.parse.urlencode({"review": "An excellent film."}).encode()

        def hammer():
            while not stop.is_set():
                try:
                    status, reply = get_json(base + "/review", body)
                except (OSError, http.client.HTTPException) as exc:
                    failures.append(repr(exc))
                    continue
                (answered if status == 200 else failures).append(reply)

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for thread in threads:
            thread.start()

        new = model_dir / "review_sentiment" / "2"
        shutil.copytree(model_dir / "review_sentiment" / "1", new)
        manifest = json.loads((new / "manifest.json").read_text())
        manifest["version"] = 2
        (new / "manifest.json").write_text(json.dumps(manifest))
        result = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "models", "reload"], cwd=PROJECT_ROOT,
                                env={**os.environ, "GUNICORN_PIDFILE": str(next(tmp_path.glob("gunicorn-*.pid")))},
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr

        def serves_v2():
            return get_json(base + "/v2/models/review_sentiment")[1]["versions"] == ["1", "2"]

        import time

        deadline = time.monotonic() + 60
        while not serves_v2():
            assert time.monotonic() < deadline, "new version never served"
            time.sleep(0.2)
        time.sleep(3)  # old workers finish and exit while the load goes on
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert len(answered) > 50
    assert {reply["model"]["version"] for reply in answered} >= {"1", "2"}
