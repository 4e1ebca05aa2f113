"""The prediction log kept as Parquet files (MODELSERVE_MONITOR_PARQUET): in a folder and in an S3 bucket (moto's
server), read back by the report, by live accuracy and by another instance, kept within its retention, and a store
that fails costs records (counted), never answers."""
from __future__ import annotations

import datetime as dt
import time

import pyarrow.parquet as pq
import pytest

from app import create_app
from app.config import SettingsError, load_settings
from app.monitoring.log import MonitorSettings, PredictionLog
from app.monitoring.sinks import COLUMNS, ParquetSink
from tests.conftest import new_store

TEXTS = [f"A lovely, moving and funny film number {i}." for i in range(6)] + ["Dull, slow and far too long."] * 2


def parquet_app(tmp_path, url: str, **settings):
    return create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'm.db'}", "MONITOR_PARQUET": url,
                       **settings})


def post_reviews(app) -> list[str]:
    """Post TEXTS to /review; their request ids."""
    client = app.test_client()
    answers = [client.post("/review", data={"review": text}) for text in TEXTS]
    assert [answer.status_code for answer in answers] == [200] * len(TEXTS)
    return [answer.headers["X-Request-ID"] for answer in answers]


def test_the_log_is_written_as_parquet_files_that_another_instance_and_pandas_read(tmp_path):
    folder = tmp_path / "predictions"
    app = parquet_app(tmp_path, str(folder))
    log = app.extensions["prediction_log"]
    request_ids = post_reviews(app)
    report = app.test_client().get("/models/review_sentiment/monitoring").json
    assert report["requests"] == len(TEXTS)  # this process reads its own rows before any file is written
    assert not list(folder.rglob("*.parquet"))
    log.close()  # a clean stop writes them

    files = list(folder.rglob("*.parquet"))
    assert len(files) == 1 and files[0].parent.relative_to(folder).as_posix() == "model=review_sentiment/version=4"
    first, last, rows, _ = files[0].name.split("_", 3)
    assert int(rows) == len(TEXTS) and first <= last
    table = pq.ParquetFile(files[0]).read()  # the file alone: model and version are its folders
    assert table.num_rows == len(TEXTS) and sorted(table.column("request_id").to_pylist()) == sorted(request_ids)
    assert set(table.column_names) == set(COLUMNS) - {"model", "version"}
    import pandas

    frame = pandas.read_parquet(folder)  # the Hive folders are columns
    assert frame.groupby(["model", "version"], observed=True).size().to_dict() == {("review_sentiment", 4): len(TEXTS)}

    other = parquet_app(tmp_path, str(folder))  # another instance (a pod) on the same folder
    seen = other.test_client().get("/models/review_sentiment/monitoring?last=5").json
    assert seen["requests"] == 5 and seen["latency"]["p50_ms"] > 0
    since = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)).isoformat()
    assert other.test_client().get("/models/review_sentiment/monitoring", query_string={"since": since}).json[
        "requests"] == len(TEXTS)
    assert other.test_client().get("/models/review_sentiment/monitoring", query_string={
        "since": dt.datetime.now(dt.timezone.utc).isoformat()}).json["requests"] == 0


def test_feedback_finds_answers_in_the_files_and_gives_live_accuracy(tmp_path):
    app = parquet_app(tmp_path, str(tmp_path / "predictions"), MONITOR_PARQUET_ROLL_SECONDS=0.01)
    client = app.test_client()
    answer = client.post("/models/logistic_regression/predict", json={"instances": TEXTS[:3]})
    request_id, labels = answer.headers["X-Request-ID"], [row["label"] for row in answer.json["predictions"]]
    app.extensions["prediction_log"].flush()
    time.sleep(0.05)
    app.extensions["prediction_log"].tick()  # written as a file: what follows reads it back
    assert list((tmp_path / "predictions").rglob("*.parquet"))
    truths = labels[:2] + ["negative" if labels[2] == "positive" else "positive"]
    for item, truth in enumerate(truths):
        stored = client.post("/models/logistic_regression/feedback",
                             json={"request_id": request_id, "item": item, "label": truth})
        assert stored.status_code == 201 and stored.json["answered"]["correct"] is (item < 2), stored.json
    assert client.post("/models/logistic_regression/feedback",
                       json={"request_id": "nobody", "label": truths[0]}).status_code == 404
    accuracy = client.get("/models/logistic_regression/monitoring").json["accuracy"]
    assert accuracy["labelled"] == 3 and accuracy["accuracy"] == round(2 / 3, 4)

    for i, text in enumerate(TEXTS[3:5]):  # review feedback, joined by the text's digest
        assert client.post("/review", data={"review": text}).status_code == 200
        assert client.post("/review/feedback", data={"review": text, "label": "positive"},
                           environ_base={"REMOTE_ADDR": f"10.2.0.{i}"}).status_code == 201
    assert client.get("/models/review_sentiment/monitoring").json["accuracy"]["labelled"] == 2


def test_retention_deletes_old_files_and_a_model_s_oldest_beyond_its_rows(tmp_path):
    sink = ParquetSink(str(tmp_path / "log"))
    now = time.time()

    def file_of(model: str, age: float, count: int) -> None:
        sink.write([(model, "1", now - age + i * 0.001, 1.0, "rest", f"r{age}-{i}", 0, None, None, "{}", "a", 0.9,
                     None) for i in range(count)])
        sink.close()

    for model in ("m", "n"):
        for age in (7200, 40, 30, 20, 10):
            file_of(model, age, 2)
    assert sink.enforce_retention(3600, 5) == 2 * (2 + 2)  # the old file, then the one beyond 5 rows (3 files kept)
    for model in ("m", "n"):
        kept = sink.files(model)
        assert sum(file.rows for file in kept) == 6 and min(file.last for file in kept) > now - 31
        assert len(sink.window(model, None, 100, None)) == 6
    assert sink.enforce_retention(3600, 5) == 0
    (tmp_path / "log" / "model=m" / "version=1" / "notes.parquet").write_bytes(b"someone else's")
    assert sum(file.rows for file in sink.files("m")) == 6  # not the log's: left alone


def test_in_an_s3_bucket_and_through_a_store_outage(tmp_path, s3):
    url = new_store(s3).replace("/store", "/predictions")
    app = parquet_app(tmp_path, url, MONITOR_PARQUET_ROLL_SECONDS=0.01)
    log = app.extensions["prediction_log"]
    post_reviews(app)
    log.flush()
    time.sleep(0.05)
    log.tick()
    assert len(log.sink.files("review_sentiment")) >= 1
    other = PredictionLog(None, MonitorSettings(parquet=url))  # another instance reading the bucket
    assert len(other.window("review_sentiment", "4")) == len(TEXTS)

    s3.stop()
    try:
        def dropped() -> float:
            metrics = app.test_client().get("/metrics").get_data(as_text=True)
            return next((float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(
                'modelserve_prediction_log_dropped_total{model="review_sentiment"}')), 0.0)

        before = dropped()
        post_reviews(app)  # every request is answered while the bucket is gone
        log.flush()
        time.sleep(0.05)
        log.tick()
        assert dropped() - before == len(TEXTS)
    finally:
        s3.start()
    post_reviews(app)
    log.close()
    assert len(other.window("review_sentiment", "4")) == 2 * len(TEXTS)


@pytest.mark.parametrize("value, message", [("ftp://host/logs", "file://, s3:// or gs://"),
                                           ("s3://bucket/logs", None)])
def test_the_setting_is_checked_at_start(value, message):
    if message is None:
        assert load_settings({"MONITOR_PARQUET": value}).monitor_parquet == value
    else:
        with pytest.raises(SettingsError, match="MONITOR_PARQUET") as raised:
            load_settings({"MONITOR_PARQUET": value})
        assert message in str(raised.value)
