"""Batch scoring: `flask score` and the Spark job (for real, local[2]) answer as the HTTP server does.

On a sample of real malaria cells (both folders) and IMDb test reviews, with an unreadable
image and an empty review among them: the same labels and probabilities from all three
paths, bad rows in the error column, and an interrupted run that resumes.
"""
import csv

import pytest

from app.batch import local
from app.batch.core import load_model
from app.batch.local import score_dataset
from tests.conftest import SAVED_MODELS, assert_cells_answered_as_http, assert_reviews_answered_as_http, rows_by_key


def spark_score(*args):
    from app.batch.spark_score import main

    assert main(["--master", "local[2]", "--model-dir", str(SAVED_MODELS), *args]) == 0


def test_cells_agree_between_local_spark_and_http(cells, tmp_path, client):
    model = load_model(SAVED_MODELS, "malaria_cell", batch_size=1)
    summary = score_dataset(model, cells, tmp_path / "local.parquet", batch_size=1, progress=False)
    assert (summary.scored, summary.errors) == (31, 1)
    spark_score("--model", "malaria_cell", "--input", str(cells), "--output", str(tmp_path / "spark"),
                "--batch-size", "1")
    ours, theirs = rows_by_key(tmp_path / "local.parquet"), rows_by_key(tmp_path / "spark")
    assert set(ours) == set(theirs) and len(ours) == 31
    assert theirs["broken.png"]["error"] == ours["broken.png"]["error"]
    for answers in (ours, theirs):
        assert_cells_answered_as_http(answers, cells, client)


def test_bigger_batches_change_only_rounding(cells, tmp_path):
    """ONNX Runtime sums a batch of one in another order than a larger batch: same labels, tiny differences."""
    one = load_model(SAVED_MODELS, "malaria_cell", batch_size=1)
    many = load_model(SAVED_MODELS, "malaria_cell", batch_size=64)
    score_dataset(one, cells, tmp_path / "one.csv", batch_size=1, progress=False)
    score_dataset(many, cells, tmp_path / "many.csv", batch_size=64, progress=False)
    with open(tmp_path / "one.csv") as a, open(tmp_path / "many.csv") as b:
        first, second = {r["key"]: r for r in csv.DictReader(a)}, {r["key"]: r for r in csv.DictReader(b)}
    assert first.keys() == second.keys()
    for key, row in first.items():
        assert row["label"] == second[key]["label"] and row["error"] == second[key]["error"]
        if not row["error"]:
            assert float(row["probability_Parasitized"]) == pytest.approx(float(second[key]["probability_Parasitized"]),
                                                                          abs=1e-3)


def test_reviews_agree_between_local_spark_and_http(reviews, tmp_path, client, runner):
    done = runner.invoke(args=["score", "review_sentiment", str(reviews), str(tmp_path / "local.parquet"),
                               "--key", "id", "--column", "text", "--no-progress"])
    assert done.exit_code == 0, done.output
    assert "scored 41 items" in done.output and "1 error;" in done.output
    spark_score("--model", "review_sentiment", "--input", str(reviews), "--output", str(tmp_path / "spark"),
                "--key", "id", "--column", "text")
    ours, theirs = rows_by_key(tmp_path / "local.parquet"), rows_by_key(tmp_path / "spark")
    assert set(ours) == set(theirs) == {f"r{i}" for i in range(40)} | {"empty"}
    assert theirs["empty"]["error"] == ours["empty"]["error"]
    for answers in (ours, theirs):
        assert_reviews_answered_as_http(answers, reviews, client)


def test_an_interrupted_run_resumes(reviews, tmp_path, monkeypatch):
    model = load_model(SAVED_MODELS, "review_sentiment", batch_size=8)
    output = tmp_path / "scores.csv"
    fresh = score_dataset(model, reviews, tmp_path / "fresh.csv", batch_size=8, key="id", progress=False)
    real, calls = local.score_items, []

    def dies_on_the_fourth_batch(model, items):
        calls.append(len(items))
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(model, items)

    monkeypatch.setattr(local, "score_items", dies_on_the_fourth_batch)
    monkeypatch.setattr(local.ResumableWriter, "__init__", with_small_parts(local.ResumableWriter.__init__))
    with pytest.raises(KeyboardInterrupt):
        score_dataset(model, reviews, output, batch_size=8, key="id", progress=False)
    assert not output.exists() and (tmp_path / "scores.csv.partial").is_dir()
    monkeypatch.setattr(local, "score_items", real)
    resumed = score_dataset(model, reviews, output, batch_size=8, key="id", progress=False)
    assert resumed.skipped == 24 and resumed.scored == 41 - 24 and fresh.scored == 41
    assert output.read_text() .splitlines()[1:] and sorted(output.read_text().splitlines()) == \
        sorted((tmp_path / "fresh.csv").read_text().splitlines())
    assert not (tmp_path / "scores.csv.partial").exists()


def with_small_parts(init):
    """ResumableWriter.__init__ with a part file per batch of 8 rows."""
    def small(self, output, columns, rows_per_part=4096, scored_by=None):
        init(self, output, columns, rows_per_part=8, scored_by=scored_by)
    return small
