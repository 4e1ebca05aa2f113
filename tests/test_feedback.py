"""Feedback round trip: store it, learn it with partial_fit into a new version."""
import json

import sqlalchemy as sa

from app.database import review_feedback
from tests.conftest import committed_version

REVIEW = "An astonishing, wonderful, brilliant film with a superb cast."
OLD = committed_version("review_sentiment")
NEW = str(int(OLD) + 1)


def test_feedback_is_stored(client, app):
    response = client.post("/review/feedback", data={"review": REVIEW, "label": "negative"})
    assert response.status_code == 201
    assert response.json["stored"] is True
    with app.extensions["db_engine"].connect() as conn:
        rows = conn.execute(sa.select(review_feedback)).all()
    assert [(r.review, r.label, r.learned_in_version) for r in rows] == [(REVIEW, "negative", None)]


def test_feedback_rejects_bad_label(client):
    response = client.post("/review/feedback", json={"review": REVIEW, "label": "meh"})
    assert response.status_code == 400
    assert "label" in response.json["error"]


def test_feedback_requires_review(client):
    response = client.post("/review/feedback", json={"label": "positive"})
    assert response.status_code == 400


def test_learn_writes_new_version_and_keeps_old(app_with_model_dir, model_dir, tmp_path):
    app = app_with_model_dir
    client = app.test_client()
    before = client.post("/review", data={"review": REVIEW}).json
    for user in range(30):  # 30 users disagree (one user's repeats are stored once)
        assert client.post("/review/feedback", data={"review": REVIEW, "label": "negative"},
                           environ_base={"REMOTE_ADDR": f"10.0.0.{user}"}).status_code == 201

    # No test data to measure it here, so the gate would keep the old version: --promote serves the new version anyway.
    result = app.test_cli_runner().invoke(args=["feedback", "learn", "--data", str(tmp_path / "no-data"), "--promote"])
    assert result.exit_code == 0, result.output
    assert f"learned 30 feedback rows into review_sentiment version {NEW}" in result.output

    assert (model_dir / "review_sentiment" / OLD / "manifest.json").exists()
    manifest = json.loads((model_dir / "review_sentiment" / NEW / "manifest.json").read_text())
    assert manifest["version"] == int(NEW)
    assert manifest["training"]["online_update"] == {
        "from_version": OLD, "feedback_examples": 30, "method": "SGDClassifier.partial_fit"}

    with app.extensions["db_engine"].connect() as conn:
        versions = conn.execute(sa.select(review_feedback.c.learned_in_version)).scalars().all()
    assert set(versions) == {NEW}

    # A fresh worker serves the new version by default; it moved towards the feedback.
    from app import create_app

    fresh = create_app({"TESTING": True, "MODEL_DIR": str(model_dir),
                        "DATABASE_URL": app.settings.database_url})
    after = fresh.test_client().post("/review", data={"review": REVIEW}).json
    assert after["model"]["version"] == NEW
    assert after["probability_positive"] < before["probability_positive"]

    again = app.test_cli_runner().invoke(args=["feedback", "learn"])
    assert "no new feedback" in again.output
