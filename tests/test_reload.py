"""`flask models reload`: a new model version, a promotion and a rollback are served without dropping a request."""
import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.parse

from app.config import PROJECT_ROOT
from tests.conftest import committed_version, get_json, run_gunicorn

OLD = committed_version("review_sentiment")
NEW = str(int(OLD) + 1)


def test_reload_serves_new_version_without_dropping_requests(tmp_path, model_dir):
    env = {"MODELSERVE_MODEL_DIR": str(model_dir), "MODELSERVE_MODELS": "review_sentiment",
           "MODELSERVE_MODEL_POLL_SECONDS": "1"}
    with run_gunicorn(tmp_path, env) as (base, _):
        assert get_json(base + "/v2/models/review_sentiment")[1]["versions"] == [OLD]
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

        new = model_dir / "review_sentiment" / NEW
        shutil.copytree(model_dir / "review_sentiment" / OLD, new)
        manifest = json.loads((new / "manifest.json").read_text())
        manifest["version"] = int(NEW)
        (new / "manifest.json").write_text(json.dumps(manifest))
        cli_env = {**os.environ, **env, "GUNICORN_PIDFILE": str(next(tmp_path.glob("gunicorn-*.pid"))),
                   "MODELSERVE_MODEL_DIR": str(model_dir), "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}

        def flask(*args):
            result = subprocess.run([sys.executable, "-m", "flask", "--app", "app", *args], cwd=PROJECT_ROOT,
                                    env=cli_env, capture_output=True, text=True)
            assert result.returncode == 0, result.stderr
            return result.stdout

        flask("models", "reload")

        def serves_both():
            return get_json(base + "/v2/models/review_sentiment")[1]["versions"] == [OLD, NEW]

        import time

        deadline = time.monotonic() + 60
        while not serves_both():
            assert time.monotonic() < deadline, "new version never served"
            time.sleep(0.2)
        time.sleep(3)  # old workers finish and exit while the load goes on

        def settles_on(version):  # every answer comes from `version` once the reload is through
            deadline = time.monotonic() + 60
            while {get_json(base + "/review", body)[1]["model"]["version"] for _ in range(8)} != {version}:
                assert time.monotonic() < deadline, f"version {version} never became the default"
                time.sleep(0.2)

        # Promotion and rollback reach the running workers through the same reload, under the same load.
        assert f"production: (none) -> {OLD}" in flask("models", "promote", "review_sentiment", OLD)
        flask("models", "reload")
        settles_on(OLD)
        assert f"production: {OLD} -> {NEW}" in flask("models", "promote", "review_sentiment", NEW)
        flask("models", "reload")
        settles_on(NEW)
        assert f"production: {NEW} -> {OLD}" in flask("models", "rollback", "review_sentiment")
        assert "sent SIGHUP" in flask("models", "reload", "--restart")  # new workers (new code) serve it too
        settles_on(OLD)
        time.sleep(2)
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert len(answered) > 50
    assert {reply["model"]["version"] for reply in answered} >= {OLD, NEW}
