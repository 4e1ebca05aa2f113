"""Model lifecycle: aliases, promotion and rollback from the CLI, and online learning that cannot
make the served model worse."""
import json
import shutil

from app import create_app
from tests.conftest import committed_version

REVIEW = "An astonishing, wonderful, brilliant film with a superb cast."
OLD = committed_version("linear_svc")  # the committed version; NEW is a copy of it made by second_version
NEW = str(int(OLD) + 1)
REVIEW_OLD = committed_version("review_sentiment")  # and what `feedback learn` writes next to it
REVIEW_NEW = str(int(REVIEW_OLD) + 1)


def second_version(model_dir, name="linear_svc"):
    """Version NEW of a model: the committed artifacts under a new version number."""
    shutil.copytree(model_dir / name / OLD, model_dir / name / NEW)
    manifest = json.loads((model_dir / name / NEW / "manifest.json").read_text())
    (model_dir / name / NEW / "manifest.json").write_text(json.dumps({**manifest, "version": int(NEW)}))


def fresh_app(tmp_path, model_dir):
    """A new server process, as after a restart or reload."""
    return create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'l.db'}", "MODEL_DIR": str(model_dir)})


def served_version(app, name="linear_svc"):
    return app.test_client().get(f"/models/{name}").json["default_version"]


def test_promote_and_rollback_choose_the_default_version(tmp_path, model_dir):
    second_version(model_dir)
    app = fresh_app(tmp_path, model_dir)
    assert served_version(app) == NEW  # no alias: the newest version
    runner = app.test_cli_runner()
    promoted = runner.invoke(args=["models", "promote", "linear_svc", OLD])
    assert promoted.exit_code == 0 and f"production: (none) -> {OLD}" in promoted.output
    restarted = fresh_app(tmp_path, model_dir)  # aliases live in the model folder: they survive a restart
    assert served_version(restarted) == OLD
    body = restarted.test_client().get("/models/linear_svc").json
    assert body["aliases"] == {"production": OLD} and body["versions"] == [OLD, NEW]
    answer = restarted.test_client().post("/predict", json={"review": "Great", "model": "linear_svc"}).json
    assert answer["model"]["version"] == OLD  # the answer names the version that answered
    assert runner.invoke(args=["models", "promote", "linear_svc", NEW]).exit_code == 0
    assert served_version(fresh_app(tmp_path, model_dir)) == NEW
    back = runner.invoke(args=["models", "rollback", "linear_svc"])
    assert back.exit_code == 0 and f"production: {NEW} -> {OLD}" in back.output
    assert served_version(fresh_app(tmp_path, model_dir)) == OLD
    # Exact versions stay addressable whatever the aliases say.
    assert restarted.test_client().get(f"/v2/models/linear_svc/versions/{NEW}").json["name"] == "linear_svc"
    nothing = runner.invoke(args=["models", "rollback", "linear_svc"])
    assert nothing.exit_code != 0 and "no earlier version" in nothing.output
    unknown = runner.invoke(args=["models", "promote", "linear_svc", "7"])
    assert unknown.exit_code != 0 and "no version '7'" in unknown.output
    listing = runner.invoke(args=["models", "list"])
    assert "default production" in listing.output


def test_models_page_shows_aliases_and_refused_versions(tmp_path, model_dir):
    second_version(model_dir)
    (model_dir / "linear_svc" / NEW / "estimator.joblib").write_bytes(b"tampered")
    runner = fresh_app(tmp_path, model_dir).test_cli_runner()
    assert runner.invoke(args=["models", "promote", "linear_svc", OLD]).exit_code == 0
    page = fresh_app(tmp_path, model_dir).test_client().get("/ui/models").get_data(as_text=True)
    assert '<span class="tag">production</span>' in page and "Refused versions" in page
    assert f"linear_svc/{NEW}" in page and "sha256" in page


def test_feedback_that_lowers_accuracy_is_not_promoted(app_with_model_dir, model_dir, shared_data):
    app = app_with_model_dir
    client = app.test_client()
    from app.training.data import read_imdb_split

    texts, labels = read_imdb_split(shared_data / "imdb", "train")
    glowing = [text for text, label in zip(texts, labels) if label == 1][:40]
    for user, text in enumerate(glowing):  # 40 users each insist a glowing review is negative
        assert client.post("/review/feedback", data={"review": text, "label": "negative"},
                           environ_base={"REMOTE_ADDR": f"10.1.0.{user}"}).status_code == 201
    result = app.test_cli_runner().invoke(args=["feedback", "learn", "--data", str(shared_data)])
    assert result.exit_code == 0, result.output
    new = json.loads((model_dir / "review_sentiment" / REVIEW_NEW / "manifest.json").read_text())["metrics"]["accuracy"]
    old = json.loads((model_dir / "review_sentiment" / REVIEW_OLD / "manifest.json").read_text())["metrics"]["accuracy"]
    assert new < old - 0.001  # measured on the IMDb test split (figures in docs/models.md)
    assert "NOT promoted" in result.output and f"Production stays v{REVIEW_OLD}" in result.output
    assert served_version(fresh_app(model_dir.parent, model_dir), "review_sentiment") == REVIEW_OLD
    assert (model_dir / "review_sentiment" / REVIEW_NEW).is_dir()  # kept, unpromoted, for whoever wants to look


def test_forced_promotion_is_logged(app_with_model_dir, model_dir):
    client = app_with_model_dir.test_client()
    client.post("/review/feedback", data={"review": REVIEW, "label": "negative"})
    result = app_with_model_dir.test_cli_runner().invoke(args=["feedback", "learn", "--data", str(model_dir / "none"),
                                                               "--promote"])
    assert result.exit_code == 0 and "promoted with --promote" in result.output
    assert served_version(fresh_app(model_dir.parent, model_dir), "review_sentiment") == REVIEW_NEW


def test_unmeasured_learning_is_not_promoted(app_with_model_dir, model_dir):
    client = app_with_model_dir.test_client()
    client.post("/review/feedback", data={"review": REVIEW, "label": "negative"})
    result = app_with_model_dir.test_cli_runner().invoke(args=["feedback", "learn", "--data", str(model_dir / "none")])
    assert result.exit_code == 0 and "NOT promoted" in result.output and "no test data" in result.output
    assert served_version(fresh_app(model_dir.parent, model_dir), "review_sentiment") == REVIEW_OLD


def test_feedback_records_the_answering_version_and_can_be_exported_and_deleted(app, tmp_path):
    client = app.test_client()
    stored = client.post("/review/feedback", data={"review": REVIEW, "label": "negative", "version": REVIEW_OLD})
    other = client.post("/review/feedback", data={"review": "Dull.", "label": "negative"})
    assert stored.status_code == other.status_code == 201
    assert client.post("/review/feedback", data={"review": "x", "label": "negative", "version": "9"}).status_code == 400
    runner = app.test_cli_runner()
    assert "wrote 2 feedback rows" in runner.invoke(args=["feedback", "export", str(tmp_path / "f.csv")]).output
    import csv

    with open(tmp_path / "f.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["answered_by_version"] for r in rows] == [REVIEW_OLD] * 2 and rows[0]["review"] == REVIEW
    assert rows[0]["created_at"]
    assert "deleted 1 feedback rows" in runner.invoke(args=["feedback", "delete", rows[0]["id"]]).output
    assert "wrote 1 feedback rows" in runner.invoke(args=["feedback", "export", str(tmp_path / "g.csv")]).output
