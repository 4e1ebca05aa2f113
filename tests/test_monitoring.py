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
    from app.database import make_engine, predictions
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
    assert log.sink.enforce_retention(3600, 5) == 2 + 2 * 2  # one old row each, then two over the limit each
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


def test_feedback_by_request_id_gives_live_accuracy_per_version(monitored):
    app, log = monitored
    client = app.test_client()
    texts = ["A wonderful, moving film.", "Dull, slow and far too long.", "Great cast, great story."]
    answer = client.post("/models/logistic_regression/predict", json={"instances": texts})
    request_id, labels = answer.headers["X-Request-ID"], [row["label"] for row in answer.json["predictions"]]
    truths = labels[:2] + ["negative" if labels[2] == "positive" else "positive"]  # the third answer was wrong

    def send(item, label, rid=request_id, name="logistic_regression"):
        return client.post(f"/models/{name}/feedback", json={"request_id": rid, "item": item, "label": label})

    for item, truth in enumerate(truths):  # sent at once: the records may still be queued, and are waited for
        stored = send(item, truth)
        assert stored.status_code == 201, stored.json
        assert stored.json["answered"] == {"version": answer.json["model"]["version"], "label": labels[item],
                                           "correct": item < 2}
    again = send(0, truths[0])
    assert again.status_code == 200 and again.json["stored"] is False
    assert send(0, "negative" if truths[0] == "positive" else "positive").status_code == 409
    assert send(0, truths[0], rid="no-such-request").status_code == 404
    assert send(3, truths[0]).status_code == 404  # the request had three items
    assert send(0, truths[0], name="review_sentiment").status_code == 404  # another model's answer
    assert send(0, "maybe").status_code == 400 and "positive" in send(0, "maybe").json["error"]
    assert send(-1, "positive").status_code == 400 and send("one", "positive").status_code == 400
    assert client.post("/models/logistic_regression/feedback", json={"label": "positive"}).status_code == 400
    assert client.post("/models/nope/feedback", json={"request_id": request_id, "label": "x"}).status_code == 404

    accuracy = client.get("/models/logistic_regression/monitoring").json["accuracy"]
    assert accuracy["labelled"] == 3 and accuracy["accuracy"] == round(2 / 3, 4)


def test_a_job_answer_is_logged_under_its_job_id_and_can_be_labelled(database_url):
    from app.jobs.execute import execute
    from tests.conftest import PROJECT_ROOT

    app = create_app({"TESTING": True, "DATABASE_URL": database_url, "WORKER_TOKEN": "t"})
    client, log, worker = app.test_client(), app.extensions["prediction_log"], {"Authorization": "Bearer t"}
    cell = next((PROJECT_ROOT / "examples" / "cells" / "Parasitized").iterdir()).read_bytes()
    job_id = client.post("/jobs", data={"model": "malaria_cell", "image": (io.BytesIO(cell), "cell.png")},
                         content_type="multipart/form-data").json["id"]
    leased = client.post("/jobs/lease", json={"worker": "w", "wait": 0}, headers=worker).json
    runner = app.extensions["model_registry"].runner("malaria_cell")
    result = execute(runner, cell)  # what the built-in worker posts
    posted = client.post(f"/jobs/{job_id}/result", json={"lease_id": leased["lease_id"], "result": result},
                         headers=worker)
    assert posted.status_code == 200 and posted.json["recorded"]
    log.flush()
    with log.engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT protocol, request_id, label, version FROM predictions").one()
    assert tuple(row) == ("job", job_id, result["label"], str(runner.model.version))
    features = log.window("malaria_cell")[0]["features"]
    assert set(features) >= {"red", "cell_distance"} and 0 < features["red"] < 1, features
    labelled = client.post("/models/malaria_cell/feedback", json={"request_id": job_id, "label": "Parasitized"})
    assert labelled.status_code == 201 and labelled.json["answered"]["label"] == result["label"]
    assert client.get("/models/malaria_cell/monitoring").json["accuracy"]["labelled"] == 1
    app.extensions["db_engine"].dispose()


def test_payloads_are_kept_only_for_the_models_named_and_cut_at_the_cap(database_url):
    from tests.conftest import PROJECT_ROOT

    app = create_app({"TESTING": True, "DATABASE_URL": database_url, "MONITOR_PAYLOADS": "malaria_cell:1.0",
                      "MONITOR_PAYLOAD_MAX_BYTES": 1000})
    client, log = app.test_client(), app.extensions["prediction_log"]
    cell = next((PROJECT_ROOT / "examples" / "cells" / "Uninfected").iterdir()).read_bytes()
    assert len(cell) > 1000
    assert client.post("/classify", data={"image": (io.BytesIO(cell), "c.png")}).status_code == 200
    assert client.post("/review", data={"review": "A fine film."}).status_code == 200
    log.flush()
    with log.engine.connect() as conn:
        kept = dict(conn.exec_driver_sql("SELECT model, payload FROM predictions").all())
    assert bytes(kept["malaria_cell"]) == cell[:1000] and kept["review_sentiment"] is None
    app.extensions["db_engine"].dispose()

    app = create_app({"TESTING": True, "DATABASE_URL": database_url, "MONITOR_PAYLOADS": "review_sentiment:1.0"})
    app.test_client().post("/v2/models/review_sentiment/infer", json={"inputs": [
        {"name": "review", "datatype": "BYTES", "shape": [2], "data": ["Lovely.", "Awful."]}]})
    app.extensions["prediction_log"].flush()
    with app.extensions["db_engine"].connect() as conn:
        kept = [bytes(r[0]) for r in conn.exec_driver_sql(
            "SELECT payload FROM predictions WHERE protocol = 'v2' ORDER BY item").all()]
    assert kept == [b"Lovely.", b"Awful."]
    app.extensions["db_engine"].dispose()


def test_models_add_writes_a_hashed_reference_that_drift_is_measured_against(tmp_path):
    """`models add --reference` profiles held-out rows into the version; the served version then sees rows like
    them as undrifted and rows with one feature shifted as drifted on that feature. Bad data publishes nothing."""
    from sklearn.datasets import load_wine

    from app.models.base import sha256_of
    from tests.test_model_store import wine_model

    features, _ = load_wine(return_X_y=True)
    rows = features[random.Random(0).sample(range(len(features)), len(features))]
    held_out = tmp_path / "held_out.csv"
    held_out.write_text("\n".join([",".join(f"f{i}" for i in range(13))] + [",".join(map(str, r)) for r in rows[:120]]))
    models = tmp_path / "models"
    models.mkdir()
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'm.db'}", "MODEL_DIR": str(models)})
    runner = app.test_cli_runner()
    empty = tmp_path / "empty.csv"
    empty.write_text(",".join(f"f{i}" for i in range(13)) + "\n")
    refused = runner.invoke(args=["models", "add", "wine", str(wine_model(tmp_path / "wine.skops")),
                                  "--reference", str(empty)])
    assert refused.exit_code != 0 and "--reference" in refused.output and not (models / "wine" / "1").exists()
    added = runner.invoke(args=["models", "add", "wine", str(tmp_path / "wine.skops"), "--reference", str(held_out)])
    assert added.exit_code == 0, added.output
    assert "reference profile: from held_out.csv" in added.output
    manifest = json.loads((models / "wine" / "1" / "manifest.json").read_text())
    assert manifest["artifacts"]["reference.json"]["sha256"] == sha256_of(models / "wine" / "1" / "reference.json")
    assert json.loads((models / "wine" / "1" / "reference.json").read_text())["examples"] == 120

    client, log = app.test_client(), app.extensions["prediction_log"]

    def send(instances):
        for start in range(0, len(instances), 32):
            assert client.post("/models/wine/predict", json={"instances": instances[start:start + 32]}).status_code == 200
        log.flush()

    like = rows.tolist() * 2  # the held-out rows again, and the rows the reference never saw
    send(like)
    report = client.get(f"/models/wine/monitoring?last={len(like)}").json
    assert report["requests"] == len(like) and report["drift"]["drifted"] is False, report["drift"]
    shifted = [[v * 3 if i == 9 else v for i, v in enumerate(r)] for r in rows.tolist()] * 2  # colour intensity
    send(shifted)
    drift = client.get(f"/models/wine/monitoring?last={len(shifted)}").json["drift"]
    assert drift["drifted"] and drift["features"]["x9"]["drifted"]
    assert not any(f["drifted"] for name, f in drift["features"].items() if name != "x9"), drift["features"]
    app.extensions["db_engine"].dispose()


def test_the_writer_keeps_the_drift_gauges_current_without_a_report(monitored):
    from app.metrics import DRIFT_SCORE

    app, log = monitored
    log.settings.gauge_seconds = 0
    version = str(app.extensions["model_registry"].get("linear_svc").version)
    if ("linear_svc", version) in {tuple(labels) for labels in DRIFT_SCORE._metrics}:
        DRIFT_SCORE.remove("linear_svc", version)  # set by an earlier test in this process
    client = app.test_client()
    for text in ("A fine film.", "Dull and long.", "Loved every minute."):
        assert client.post("/predict", json={"review": text, "model": "linear_svc"}).status_code == 200
    log.flush()
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f'modelserve_drift_score{{model="linear_svc",version="{version}"}}' in metrics
    assert f'modelserve_drifted{{model="linear_svc",version="{version}"}}' in metrics


def test_features_are_written_as_json_dumps_writes_them():
    """The writer formats a batch's features from one template: the text must be json.dumps's, whatever the
    values (huge, not finite, not floats) and names (quotes, another set in the same batch)."""
    from app.monitoring.log import features_json

    rows = [{"chars": 94.0, "words": 17.0, "share": 1 / 17}, {"chars": 1e308, "words": 1e308, "share": 0.0},
            {"chars": float("nan"), "words": 2.0, "share": 0.0}, {"chars": 3, "words": 2.0, "share": -0.0},
            {"chars": np.float64(2.5), "words": 1.0, "share": 0.5}, {"x\"y": 1.0}, {"share": 0.5, "chars": 1.0, "words": 1.0}]
    assert features_json(rows, len(rows)) == [json.dumps(row) for row in rows]
    assert features_json(None, 2) == ["{}", "{}"]


def test_the_database_sink_writes_a_batch_of_any_size_in_few_statements(database_url):
    from app.database import make_engine
    from app.migrations import upgrade_database
    from app.monitoring.sinks import DatabaseSink

    engine = make_engine(database_url)
    upgrade_database(engine)
    sink, now = DatabaseSink(engine), dt.datetime.now(dt.timezone.utc).timestamp()
    rows = [("m", "2", now - 1000 + i, float(i), "rest", f"r{i}", i % 3, "key-1", None, json.dumps({"x": float(i)}),
             "a" if i % 2 else "b", i / 1000, b"\x00" if i == 7 else None) for i in range(1000)]
    assert [len(values) // 13 for _, values in sink.inserts(rows, "?")] == [512, 256, 128, 64, 32, 8]
    sink.write(rows)
    window = sink.window("m", "2", 1000, None)
    assert len(window) == 1000 and [row["latency_ms"] for row in window[:3]] == [999.0, 998.0, 997.0]  # newest first
    assert window[998]["features"] == {"x": 1.0} and window[998]["label"] == "a" and window[998]["score"] == 0.001
    assert abs(window[5]["created_at"].timestamp() - (now - 6)) < 1e-3
    assert sink.answers("m", "2", [("r7", 1), ("r7", 0)]) == {("r7", 1): ("2", "a")}
    engine.dispose()
