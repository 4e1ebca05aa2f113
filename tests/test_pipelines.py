"""Models inside data pipelines, on real engines: Apache Beam (DirectRunner) and an Apache Flink streaming job
(local mini-cluster, its own environment) answer as the HTTP server does.

The same real cells and IMDb test reviews as the Spark test, with an unreadable image and an
empty review among them: the server's labels, its probabilities to 1e-6 (batches of one where
ONNX Runtime's sums would differ), and per-row errors instead of a crashed pipeline.
"""
import base64
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.ml.inference.base import RunInference
from apache_beam.testing.util import assert_that

from app.batch.beam import ModelserveModelHandler
from app.batch.beam_score import main as beam_score
from app.config import PROJECT_ROOT
from tests.conftest import (SAVED_MODELS, assert_cells_answered_as_http, assert_reviews_answered_as_http,
                            review_texts, rows_by_key, run_try_it_block)

FLINK_PYTHON = PROJECT_ROOT / ".venv-flink" / "bin" / "python"


def test_beam_command_scores_cells_as_classify(cells, tmp_path, client, capsys):
    assert beam_score(["malaria_cell", str(cells), str(tmp_path / "cells.parquet"), "--model-store",
                       str(SAVED_MODELS), "--batch-size", "1"]) == 0
    assert "31 items scored by malaria_cell" in capsys.readouterr().out
    assert_cells_answered_as_http(rows_by_key(tmp_path / "cells.parquet"), cells, client)


def test_beam_command_scores_reviews_as_review_from_a_store(reviews, tmp_path, client, capsys, monkeypatch):
    """The model from a shared store (file://), fetched into this machine's cache and verified."""
    monkeypatch.setenv("MODELSERVE_MODEL_CACHE", str(tmp_path / "cache"))
    assert beam_score(["review_sentiment", str(reviews), str(tmp_path / "reviews.parquet"), "--key", "id",
                       "--column", "text", "--model-store", SAVED_MODELS.as_uri()]) == 0
    assert list((tmp_path / "cache").glob("*/review_sentiment/4/manifest.json"))
    out = capsys.readouterr().out
    assert "41 items scored by review_sentiment v4" in out and out.rstrip().endswith("; 1 error")
    rows = rows_by_key(tmp_path / "reviews.parquet")
    assert list(next(iter(rows.values()))) == ["key", "model", "version", "label", "probability_negative",
                                              "probability_positive", "error"]
    assert_reviews_answered_as_http(rows, reviews, client)


def test_beam_command_writes_the_csv_flask_score_writes(reviews, tmp_path, runner):
    assert beam_score(["review_sentiment", str(reviews), str(tmp_path / "beam.csv"), "--key", "id",
                       "--model-store", str(SAVED_MODELS)]) == 0
    done = runner.invoke(args=["score", "review_sentiment", str(reviews), str(tmp_path / "local.csv"), "--key", "id",
                               "--no-progress"])
    assert done.exit_code == 0, done.output
    beam_lines, local_lines = ((tmp_path / name).read_text().splitlines() for name in ("beam.csv", "local.csv"))
    assert beam_lines[0] == local_lines[0]
    assert sorted(beam_lines[1:]) == sorted(local_lines[1:])


def test_beam_command_refuses_before_running(reviews, tmp_path, capsys):
    out = str(tmp_path / "out.csv")
    assert beam_score(["malaria_cell", str(reviews), out]) == 2
    assert "takes image: give a folder" in capsys.readouterr().err
    assert beam_score(["review_sentiment", str(reviews), out, "--column", "nope"]) == 2
    assert "has no column 'nope' (columns: id, text, label)" in capsys.readouterr().err
    assert beam_score(["no_such_model", str(reviews), out]) == 2
    assert "no model 'no_such_model'" in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()


def test_handler_in_a_pipeline_answers_as_the_predict_endpoint(reviews, client):
    """The handler in a user's own pipeline: PredictionResults holding what /models/NAME/predict answers."""
    texts = list(review_texts(reviews).values())[:10] + ["", 42]
    http = [client.post("/models/review_sentiment/predict", json={"instances": [text]}) for text in texts]
    expected = [(text, answer.json["predictions"][0] if answer.status_code == 200 else "error")
                for text, answer in zip(texts, http)]
    assert sum(1 for _, answer in expected if answer == "error") == 2

    def agree(results):
        got = {r.example if isinstance(r.example, str) else repr(r.example):
               ("error" if "error" in r.inference else r.inference, r.model_id) for r in results}
        assert len(got) == len(expected)
        for text, answer in expected:
            inference, model_id = got[text if isinstance(text, str) else repr(text)]
            assert model_id == "review_sentiment:4"
            if answer == "error":
                assert inference == "error"
            else:
                assert inference["label"] == answer["label"]
                for label, p in answer["probabilities"].items():
                    assert inference["probabilities"][label] == pytest.approx(p, abs=1e-9)

    handler = ModelserveModelHandler("review_sentiment", store=str(SAVED_MODELS))
    assert handler.batch_elements_kwargs() == {"min_batch_size": 1, "max_batch_size": 32}
    with beam.Pipeline(runner="BundleBasedDirectRunner") as pipeline:
        assert_that(pipeline | beam.Create(texts) | RunInference(handler), agree)


# -- Flink ------------------------------------------------------------------------------------------------------------

def flink(*args: str, store: str = str(SAVED_MODELS), env: dict | None = None) -> subprocess.Popen:
    """The Flink job in its own environment (`make flink-env`)."""
    if not FLINK_PYTHON.exists():
        pytest.fail(f"{FLINK_PYTHON} is missing: `make flink-env` builds the Flink job's environment")
    return subprocess.Popen([str(FLINK_PYTHON), "-m", "app.batch.flink_score", *args, "--model-store", store],
                            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})


def drop(folder, name: str, records: list) -> None:
    """Write a JSON Lines file into the watched folder the way a producer should: whole, then renamed in."""
    scratch = folder.parent / f".{name}"
    scratch.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    scratch.rename(folder / name)


def committed(output) -> dict:
    """Committed result rows by key (Flink keeps in-progress files hidden, with a leading dot)."""
    rows = [json.loads(line) for path in output.glob("[!.]*.jsonl") for line in path.read_text().splitlines()]
    return {row["key"]: row for row in rows}


def wait_for(output, count: int, job: subprocess.Popen, seconds: float = 90) -> dict:
    """The committed rows once there are ``count`` of them (fails if the job dies or time runs out)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rows = committed(output)
        if len(rows) >= count:
            return rows
        assert job.poll() is None, job.stdout.read()
        time.sleep(0.5)
    pytest.fail(f"{len(committed(output))} of {count} results after {seconds} s")


def cell_records(cells, paths) -> list[dict]:
    return [{"key": p.relative_to(cells).as_posix(), "image": base64.b64encode(p.read_bytes()).decode()} for p in paths]


def test_flink_job_scores_files_dropped_while_it_runs(cells, tmp_path, client):
    watched, output = tmp_path / "incoming", tmp_path / "scores"
    watched.mkdir()
    job = flink("malaria_cell", "--watch", str(watched), "--output", str(output), "--checkpoint-seconds", "1")
    try:
        images = sorted(p for p in cells.rglob("*.png") if p.name != "broken.png")
        drop(watched, "first.jsonl", cell_records(cells, images[:15]) + cell_records(cells, [cells / "broken.png"])
             + ["not json at all", {"key": "no-image"}])
        first = wait_for(output, 18, job)
        drop(watched, "second.jsonl", cell_records(cells, images[15:]))
        rows = wait_for(output, 33, job)
        assert set(first) < set(rows)
    finally:
        job.send_signal(signal.SIGINT)
        log = job.communicate(timeout=120)[0]
    assert job.returncode == 0, log
    assert "stopped; every result is committed" in log
    assert [p.name for p in output.iterdir() if p.name.startswith(".")] == []  # no in-progress file left behind
    assert rows.pop(None)["error"].startswith("unreadable record: ")
    assert rows.pop("no-image")["error"] == "unreadable record: the record has no 'image' field"
    assert_cells_answered_as_http(rows, cells, client)


def test_flink_job_once_scores_reviews_as_review_from_a_store(reviews, tmp_path, client):
    """``--once`` over the files there; the model from a shared store (file://), fetched into the job's cache."""
    watched, output, cache = tmp_path / "incoming", tmp_path / "scores", tmp_path / "cache"
    watched.mkdir()
    drop(watched, "reviews.jsonl", [{"key": key, "text": text} for key, text in review_texts(reviews).items()])
    job = flink("review_sentiment", "--watch", str(watched), "--output", str(output), "--once",
                store=SAVED_MODELS.as_uri(), env={"MODELSERVE_MODEL_CACHE": str(cache)})
    log = job.communicate(timeout=180)[0]
    assert job.returncode == 0, log
    assert list(cache.glob("*/review_sentiment/4/manifest.json"))
    rows = committed(output)
    assert list(next(iter(rows.values()))) == ["key", "model", "version", "label", "probability_negative",
                                              "probability_positive", "error"]
    assert_reviews_answered_as_http(rows, reviews, client)


# -- docs/batch.md, as printed ----------------------------------------------------------------------------------------

def test_the_batch_guide_s_commands_run_as_printed(client):
    """The guide's "Try it on this machine" block, run as printed: four engines, one answer each per review."""
    folder = Path("/tmp/modelserve-batch")
    shutil.rmtree(folder, ignore_errors=True)
    try:
        run_try_it_block("batch.md")
        with open(folder / "reviews.csv", encoding="utf-8") as handle:
            texts = {row["id"]: row["text"] for row in csv.DictReader(handle)}
        answers = {"local": rows_of_csv(folder / "local.csv"), "beam": rows_of_csv(folder / "beam.csv"),
                   "spark": rows_by_key(folder / "spark.parquet"), "flink": committed(folder / "flink")}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert set(answers["flink"]) == {"1"} and all(set(rows) == set(texts) for name, rows in answers.items()
                                                  if name != "flink")
    for key, text in texts.items():
        http = client.post("/review", data={"review": text}).json
        for name, rows in answers.items():
            if key in rows:
                assert rows[key]["label"] == http["label"], name
                assert float(rows[key]["probability_positive"]) == pytest.approx(http["probability_positive"],
                                                                                 abs=1e-6), name


def rows_of_csv(path: Path) -> dict:
    """Rows of a CSV result by key."""
    with open(path, encoding="utf-8", newline="") as handle:
        return {row["key"]: row for row in csv.DictReader(handle)}


def test_the_batch_guide_s_beam_example_prints_what_it_says():
    text = (PROJECT_ROOT / "docs" / "batch.md").read_text()
    code = re.search(r"Use it in your own pipeline:\n\n```python\n(.*?)```", text, re.S).group(1)
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    shown = re.search(r"^# (\('r1'.*)$", code, re.M).group(1)
    printed = next(line for line in done.stdout.splitlines() if line.startswith("('r1'"))
    before, after = shown.split("{...}")
    assert printed.startswith(before) and printed.endswith(after), printed
