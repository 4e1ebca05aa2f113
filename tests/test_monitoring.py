"""The prediction log, drift against the reference and live accuracy, on real data and both databases.

Replayed IMDb reviews the reference never saw (the train split) stay under the drift threshold;
reviews cut to a few words, or in words nobody used in training, drift on the right features;
real cells stay, darkened cells drift on their colour. A full queue drops and counts records
while every request is answered; retention deletes what it should.
"""
import csv
import datetime as dt
import gzip
import io
import json
import random

import numpy as np
import pytest
from PIL import Image

from app import create_app
from app.monitoring.log import MonitorSettings, PredictionLog
from app.monitoring.profile import Distribution, psi

REVIEWS = 400


@pytest.fixture
def monitored(database_url, tmp_path):
    """An app on each database with the prediction log on (its default), and its log."""
    app = create_app({"TESTING": True, "DATABASE_URL": database_url})
    yield app, app.extensions["prediction_log"]
    app.extensions["db_engine"].dispose()


def imdb(shared_data, split: str, count: int) -> list[str]:
    """``count`` reviews drawn at random from a whole split (the files are sorted by label)."""
    with gzip.open(shared_data / "imdb" / f"{split}.csv.gz", "rt", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [row["text"] for row in random.Random(0).sample(rows, count)]


def replay(app, log, texts: list[str]) -> dict:
    client = app.test_client()
    for text in texts:
        assert client.post("/review", data={"review": text}).status_code == 200
    log.flush()
    return client.get(f"/models/review_sentiment/monitoring?last={len(texts)}").json


def test_in_domain_reviews_do_not_drift_and_cut_or_foreign_ones_do(monitored, shared_data):
    app, log = monitored
    unseen = imdb(shared_data, "test", REVIEWS)  # held-out reviews, like the reference's
    report = replay(app, log, unseen)
    assert report["requests"] == REVIEWS and report["drift"]["drifted"] is False, report["drift"]
    assert report["drift"]["score"] < 0.2 and report["latency"]["p50_ms"] > 0
    assert set(report["drift"]["features"]) == {"chars", "words", "unknown_word_share"}

    # The reviews the model was fitted on look the same, but it answers them too confidently: flagged.
    fitted = replay(app, log, imdb(shared_data, "train", REVIEWS))["drift"]
    assert not any(f["drifted"] for f in fitted["features"].values())
    assert fitted["drifted"] and fitted["score"] > 0.2

    cut = replay(app, log, [" ".join(text.split()[:4]) for text in unseen])["drift"]
    assert cut["drifted"] and cut["features"]["chars"]["drifted"] and cut["features"]["words"]["drifted"]

    rng = random.Random(1)
    foreign = [" ".join("".join(rng.choice("qxzvkjwy") for _ in range(6)) for _ in text.split()) for text in unseen]
    drift = replay(app, log, foreign)["drift"]
    assert drift["features"]["unknown_word_share"]["drifted"] and not drift["features"]["words"]["drifted"]


def test_darkened_cells_drift_on_colour_and_real_ones_do_not(monitored, shared_data):
    app, log = monitored
    client = app.test_client()
    # Cells of many patients (a few patients' cells alone differ in colour: their slides were stained apart).
    cells = random.Random(0).sample(sorted((shared_data / "malaria_extra").glob("*/*.png")), 120)
    for path in cells:
        assert client.post("/classify", data={"image": (io.BytesIO(path.read_bytes()), "c.png")}).status_code == 200
    log.flush()
    real = client.get("/models/malaria_cell/monitoring?last=120").json["drift"]
    assert not any(f["drifted"] for name, f in real["features"].items() if name in ("red", "green", "blue")), real
    for path in cells:
        dark = Image.fromarray((np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) * 0.55).astype(np.uint8))
        buffer = io.BytesIO()
        dark.save(buffer, "PNG")
        client.post("/classify", data={"image": (io.BytesIO(buffer.getvalue()), "c.png")})
    log.flush()
    dark = client.get("/models/malaria_cell/monitoring?last=120").json["drift"]
    assert dark["drifted"] and dark["features"]["red"]["drifted"] and dark["features"]["green"]["drifted"]


def test_a_full_queue_drops_and_counts_and_every_request_is_answered(database_url, tmp_path, monkeypatch):
    app = create_app({"TESTING": True, "DATABASE_URL": database_url, "MONITOR_QUEUE_SIZE": 1})
    log = app.extensions["prediction_log"]
    monkeypatch.setattr(log, "_ensure_writer", lambda: None)  # a writer stuck on a stalled database
    client = app.test_client()

    def dropped() -> float:
        metrics = client.get("/metrics").get_data(as_text=True)
        return next((float(line.split()[-1]) for line in metrics.splitlines()
                     if line.startswith('modelserve_prediction_log_dropped_total{model="review_sentiment"}')), 0.0)

    before = dropped()
    statuses = [client.post("/review", data={"review": f"Review {i}, fine."}).status_code for i in range(30)]
    assert statuses == [200] * 30
    assert dropped() - before == 29  # the queue held one; the others were counted, and answered
    app.extensions["db_engine"].dispose()


def test_retention_keeps_the_newest_rows_and_drops_old_ones(database_url):
    from app.db import make_engine, predictions
    from app.migrations import upgrade_database

    engine = make_engine(database_url)
    upgrade_database(engine)
    log = PredictionLog(engine, MonitorSettings(retention_seconds=3600, max_rows_per_model=5))
    now = dt.datetime.now(dt.timezone.utc)
    rows = [{"model": model, "version": "1", "created_at": now - dt.timedelta(seconds=age), "latency_ms": 1.0,
             "protocol": "rest", "features": "{}", "label": "a", "score": 0.9}
            for model in ("m", "n") for age in (7200, 10, 9, 8, 7, 6, 5, 4)]
    with engine.begin() as conn:
        conn.execute(predictions.insert(), rows)
        assert log.enforce_retention(conn) == 2 + 2 * 2  # one old row each, then two over the limit each
    for model in ("m", "n"):
        kept = log.window(model)
        assert len(kept) == 5 and all(now - row["created_at"].replace(tzinfo=dt.timezone.utc)
                                      < dt.timedelta(seconds=9) for row in kept)  # ages 4..8 s
    engine.dispose()


def test_live_accuracy_joins_feedback_with_the_logged_answers(monitored):
    app, log = monitored
    client = app.test_client()
    texts = [f"A lovely, moving and funny film number {i}." for i in range(8)]
    for text in texts:
        assert client.post("/review", data={"review": text}).json["label"] == "positive"
    log.flush()
    for i, text in enumerate(texts):  # six users agree, two say the model was wrong
        answer = client.post("/review/feedback", data={"review": text, "label": "positive" if i < 6 else "negative"},
                             environ_base={"REMOTE_ADDR": f"10.1.0.{i}"})
        assert answer.status_code == 201
    accuracy = client.get("/models/review_sentiment/monitoring").json["accuracy"]
    assert accuracy["labelled"] == 8 and accuracy["accuracy"] == 0.75
    low, high = accuracy["interval_95"]
    assert low < 0.75 < high and high - low > 0.3  # eight labels say little, and the interval says so


def test_the_endpoint_the_gauges_and_the_cli_report(monitored, shared_data, tmp_path):
    app, log = monitored
    replay(app, log, imdb(shared_data, "test", 300))
    client = app.test_client()
    report = client.get("/models/review_sentiment/monitoring").json
    assert set(report) >= {"requests", "drift", "predictions", "latency", "accuracy", "window"}
    assert set(report["predictions"]) >= {"live", "reference", "statistic", "drifted"}
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'modelserve_drift_score{model="review_sentiment",version="4"}' in metrics
    assert 'modelserve_drifted{model="review_sentiment",version="4"} 0.0' in metrics
    assert client.get("/models/review_sentiment/monitoring?last=0").status_code == 400
    assert client.get("/models/review_sentiment/monitoring?since=yesterday").status_code == 400
    since = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).isoformat()
    assert client.get("/models/review_sentiment/monitoring", query_string={"since": since}).json["requests"] == 300
    done = app.test_cli_runner().invoke(args=["monitor", "report", "review_sentiment", "--html",
                                              str(tmp_path / "r.html")])
    assert done.exit_code == 0, done.output
    assert "review_sentiment v4: 300 requests" in done.output and "unknown_word_share" in done.output
    page = (tmp_path / "r.html").read_text()
    assert page.count("<svg") == 3 and 'class="ref"' in page and 'class="live"' in page


def test_psi_is_zero_for_the_same_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    reference = Distribution.of(rng.normal(size=20_000))
    assert reference.psi(rng.normal(size=5_000)) < 0.02
    assert 0.1 < reference.psi(rng.normal(0.5, size=5_000)) < reference.psi(rng.normal(1.5, size=5_000))
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0


def test_batch_scoring_is_not_logged_and_a_logged_request_is(monitored, tmp_path):
    app, log = monitored
    from app.batch.core import load_model, score_items
    from tests.conftest import SAVED_MODELS

    with app.app_context():
        score_items(load_model(SAVED_MODELS, "review_sentiment"), ["A fine film."])
    log.flush()
    assert log.window("review_sentiment") == []
    app.test_client().post("/models/review_sentiment/predict", json={"instances": ["A fine film."]})
    app.test_client().post("/v2/models/review_sentiment/infer", json={"inputs": [
        {"name": "review", "datatype": "BYTES", "shape": [1], "data": ["A fine film."]}]})
    log.flush()
    with log.engine.connect() as conn:
        protocols = sorted(r[0] for r in conn.exec_driver_sql("SELECT protocol FROM predictions").all())
    assert protocols == ["rest", "v2"]
    assert json.loads(json.dumps(log.window("review_sentiment")[0]["features"]))["words"] == 3.0
