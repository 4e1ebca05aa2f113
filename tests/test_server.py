"""The real deploy path: gunicorn main:app with the shared config, no TensorFlow in the server."""
import subprocess
import sys
import urllib.parse

from app.config import PROJECT_ROOT
from tests.conftest import get_json


def test_gunicorn_serves_review_form_post(live_server):
    server = live_server
    data = urllib.parse.urlencode({"review": "A gripping, beautifully shot film. Loved it!"}).encode()
    status, body = get_json(server + "/review", data)
    assert status == 200 and body["label"] == "positive"


def test_gunicorn_bad_input_is_4xx_and_worker_survives(live_server):
    server = live_server
    status, body = get_json(server + "/review", b"\xff\xfe", {"Content-Type": "application/json"})
    assert status == 400 and "error" in body
    status, _ = get_json(server + "/health/ready")
    assert status == 200


def test_server_process_does_not_import_training_libraries():
    code = ("import sys, main; heavy = [m for m in ('tensorflow', 'keras', 'matplotlib', 'nltk', 'tqdm') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_gunicorn_logs_in_the_apps_json_format(tmp_path):
    import json

    from tests.conftest import run_gunicorn

    with run_gunicorn(tmp_path, {"MODELSERVE_MODELS": "review_sentiment"}):
        pass
    lines = [line for line in next(tmp_path.glob("gunicorn-*.log")).read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line, gunicorn's own included
    assert any(r["logger"] == "gunicorn.error" and "Booting worker" in r["message"] for r in records)


def test_gunicorn_repeats_no_request_line_of_its_own_unless_asked(tmp_path):
    """The app logs each request once (app.access); gunicorn's access log only with GUNICORN_ACCESSLOG."""
    import json

    from tests.conftest import run_gunicorn

    for extra, expected in (({}, 0), ({"GUNICORN_ACCESSLOG": "-"}, 1)):
        for old in tmp_path.glob("gunicorn-*.log"):
            old.unlink()
        out = tmp_path / f"stdout-{expected}.log"
        with open(out, "wb") as stdout, run_gunicorn(tmp_path, {"MODELSERVE_MODELS": "review_sentiment",
                                                               "WEB_CONCURRENCY": "1", **extra}, stdout=stdout) as (base, _):
            assert get_json(base + "/review", b"review=Lovely+film")[0] == 200
        text = out.read_text() + "".join(f.read_text() for f in tmp_path.glob("gunicorn-*.log"))
        records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert sum(r["logger"] == "app.access" and r.get("path") == "/review" for r in records) == 1
        assert sum(r["logger"] == "gunicorn.access" and "/review" in r["message"] for r in records) == expected
