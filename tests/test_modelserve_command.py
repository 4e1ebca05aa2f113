"""The installed `modelserve` command: from any folder, quiet by default, and the README's "Serve your own model"
block as printed (the environments are the ones `make serve` and `make test` build)."""
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from app import create_app
from app.config import PROJECT_ROOT
from tests.conftest import SAVED_MODELS, free_port

SERVE_BIN = PROJECT_ROOT / ".venv-serve" / "bin"
DEV_BIN = PROJECT_ROOT / ".venv" / "bin"


def modelserve(*args: str, cwd, bin_folder=DEV_BIN, env: dict | None = None, timeout: float = 120):
    """Run the installed command; fail clearly when the environment was not built."""
    if not (bin_folder / "modelserve").exists():
        pytest.fail(f"{bin_folder / 'modelserve'} is missing: `make test` (or `make serve`) installs it")
    return subprocess.run([str(bin_folder / "modelserve"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_help_lists_every_command_and_logs_nothing(tmp_path):
    done = modelserve("--help", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    for command in ("models", "score", "serve", "worker", "db", "train", "feedback", "evaluate"):
        assert re.search(rf"^\s+{command}\s", done.stdout, re.M), command
    version = modelserve("--version", cwd=tmp_path)
    assert version.stdout.strip() == f"modelserve {__import__('app').__version__}"


def test_models_list_from_another_folder_has_a_header_and_says_how_accuracy_was_measured(tmp_path):
    done = modelserve("models", "list", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no log lines unless asked
    lines = done.stdout.splitlines()
    assert lines[0].split()[:4] == ["MODEL", "VERSION", "STATUS", "ACCURACY"] and "MEASURED ON" in lines[0]
    review = next(line for line in lines if line.startswith("review_sentiment"))
    assert "0.9186" in review and "IMDb official test split" in review and "production" not in lines[0]
    malaria = next(line for line in lines if line.startswith("malaria_cell"))
    assert "0.9660 ± 0.0032" in malaria and "5-fold cross-validation by patient" in malaria
    loud = modelserve("-v", "models", "list", cwd=tmp_path)
    assert '"level": "INFO"' in loud.stderr and "loaded model" in loud.stderr


def test_score_names_the_known_models_and_counts_errors_in_english(tmp_path):
    table = tmp_path / "reviews.csv"
    table.write_text('id,text\n1,"A moving, beautifully acted film."\n2,""\n')
    unknown = modelserve("score", "reviw_sentiment", str(table), str(tmp_path / "out.csv"), cwd=tmp_path)
    assert unknown.returncode != 0
    assert "no model 'reviw_sentiment'" in unknown.stderr and "review_sentiment" in unknown.stderr.split("models:")[1]
    done = modelserve("score", "review_sentiment", "reviews.csv", "out.csv", "--key", "id", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "scored 2 items with review_sentiment" in done.stdout and ": 1 error;" in done.stdout
    assert done.stderr == ""  # not a terminal: no bar, no log lines
    help_text = modelserve("score", "--help", cwd=tmp_path).stdout
    assert "Example: modelserve score" in help_text and "-V, --model-version" in help_text


def test_worker_help_is_the_worker_s(tmp_path):
    done = modelserve("worker", "--help", cwd=tmp_path)
    assert done.returncode == 0 and "--server" in done.stdout and "--max-jobs" in done.stdout


@pytest.mark.live
@contextmanager
def served(tmp_path, env: dict | None = None):
    """`modelserve serve` (one worker) on a free port with its own database: (base URL, the process)."""
    port = free_port()
    server = subprocess.Popen([str(DEV_BIN / "modelserve"), "serve", "--port", str(port), "--workers", "1"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "MODELSERVE_DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}",
                                   **(env or {})})
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2) as answer:
                    assert json.load(answer)["ready"] is True
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stdout.read()
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.send_signal(signal.SIGTERM)
        server.log = server.communicate(timeout=60)[0]


def test_serve_starts_the_production_server(tmp_path):
    with served(tmp_path) as (_, server):
        pass
    assert server.returncode == 0 and "Booting worker" in server.log, server.log


def test_the_monitoring_docs_feedback_block_runs_as_printed(tmp_path):
    """docs/models.md's answer-then-label block, run by bash against a served app (on its own port)."""
    text = (PROJECT_ROOT / "docs" / "models.md").read_text()
    block = next(b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if "/feedback" in b)
    with served(tmp_path) as (base, _):
        done = subprocess.run(["bash", "-e", "-c", block.replace("localhost:8000", base)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        answer, stored = map(json.loads, done.stdout.replace("}{", "}\n{").splitlines())
        with urllib.request.urlopen(f"{base}/models/logistic_regression/monitoring") as response:
            accuracy = json.load(response)["accuracy"]
    assert answer["predictions"][0]["label"] == "negative"
    assert stored["stored"] is True and stored["answered"]["correct"] is True
    assert accuracy["labelled"] == 1 and accuracy["accuracy"] == 1.0


def test_the_parquet_log_docs_block_runs_as_printed(tmp_path):
    """docs/models.md's Parquet block: the server started with the setting (on a free port), a few answers, a clean
    stop that writes the files, then the pandas line as printed (the folder moved under tmp_path)."""
    text = (PROJECT_ROOT / "docs" / "models.md").read_text()
    block = next(b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if "MONITOR_PARQUET" in b)
    start, read = block.strip().splitlines()
    setting, command = start.split(" ", 1)
    name, folder = setting.split("=")
    assert command == "modelserve serve" and folder in read
    with served(tmp_path, {name: str(tmp_path / "predictions")}) as (base, _):
        for review in ("A wonderful film.", "Dull and far too long.", "Great cast."):
            request = urllib.request.Request(f"{base}/review", data=f"review={review}".encode())
            with urllib.request.urlopen(request) as response:
                assert response.status == 200
    done = subprocess.run(read.replace(folder, str(tmp_path / "predictions")), shell=True, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PATH": f"{DEV_BIN}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    counts = dict(re.findall(r"(negative|positive)\s+(\d+)$", done.stdout, re.M))
    assert "review_sentiment" in done.stdout and counts == {"negative": "1", "positive": "2"}, done.stdout


def readme_blocks() -> tuple[str, str]:
    """The README's "Serve your own model" shell blocks: adding models, then scoring datasets."""
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text[text.index("## Serve your own model"):text.index("## Where to go next")]
    own, score = re.findall(r"```sh\n(.*?)```", section, re.S)
    return own, score


def test_the_readme_s_own_model_blocks_run_as_printed(tmp_path):
    """Every line but the curls (no server here) runs as printed in one bash, against a copy of the model
    folder; each curl's request then gets its answer from an app serving that folder."""
    models = tmp_path / "saved_models"
    shutil.copytree(SAVED_MODELS, models, ignore=shutil.ignore_patterns(".staging-*", ".reload", ".lock"))
    own, score = readme_blocks()
    commands = [line for line in (own + score).splitlines() if not line.startswith("curl ")]
    if not (SERVE_BIN / "activate").exists():
        pytest.fail(f"{SERVE_BIN} is missing: `make serve` (and `make test`) build it")
    for leftover in ("/tmp/cells-scored.csv", "/tmp/reviews-scored.csv"):
        Path(leftover).unlink(missing_ok=True)
    done = subprocess.run(["bash", "-e", "-c", "\n".join(commands)], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "MODELSERVE_MODEL_DIR": str(models)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "answers: label (one of setosa, versicolor, virginica) and decision_scores per label (NOT probabilities" \
        in done.stdout
    assert (models / "cancer" / "1" / "manifest.json").exists() and (models / "iris" / "1" / "manifest.json").exists()
    assert (models / ".reload").exists()
    with open("/tmp/cells-scored.csv", newline="") as handle:
        cells = {row["key"]: row for row in csv.DictReader(handle)}
    assert len(cells) == 6 and all(row["label"] == key.split("/")[0] for key, row in cells.items())
    with open("/tmp/reviews-scored.csv", newline="") as handle:
        assert [row["label"] for row in csv.DictReader(handle)] == ["positive", "negative"]
    app = create_app({"TESTING": True, "MODEL_DIR": str(models), "DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}"})
    answers = {}
    for curl in (line for line in own.splitlines() if line.startswith("curl ")):
        name = re.search(r"/models/(\w+)/predict", curl).group(1)
        answer = app.test_client().post(f"/models/{name}/predict", json=json.loads(re.search(r"-d '(.*)'$", curl).group(1)))
        assert answer.status_code == 200, answer.json
        answers[name] = answer.json["predictions"][0]
    assert answers["cancer"]["label"] == "malignant"  # the data set's first row is a malignant tumour
    assert set(answers["cancer"]["probabilities"]) == {"malignant", "benign"}
    assert answers["iris"]["label"] == "setosa" and set(answers["iris"]) == {"label", "decision_scores"}


def test_flask_commands_print_no_log_lines_either(tmp_path):
    done = subprocess.run([str(DEV_BIN / "flask"), "--app", "app", "models", "--help"], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "" and "Usage: flask models" in done.stdout
