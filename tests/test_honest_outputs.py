"""Answers say what they are: an ONNX classifier without probabilities answers `decision_scores`, not
"probabilities"; integer class outputs are named with --labels; `models add` says what the model will answer."""
import json

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from app import create_app
from app.batch.core import load_model, result_columns, score_items

IRIS = ["setosa", "versicolor", "virginica"]


@pytest.fixture(scope="module")
def iris_files(tmp_path_factory):
    """Two ONNX exports (skl2onnx, zipmap off): an SVC without probabilities and a logistic regression."""
    from skl2onnx import to_onnx

    root = tmp_path_factory.mktemp("iris")
    X, y = load_iris(return_X_y=True)
    for name, estimator in (("svc", SVC()), ("logistic", LogisticRegression(max_iter=500))):
        model = make_pipeline(StandardScaler(), estimator).fit(X, y)
        (root / f"{name}.onnx").write_bytes(to_onnx(model, X[:1].astype(np.float32),
                                                    options={"zipmap": False}).SerializeToString())
    return root, X[[0, 60, 120]].astype(np.float32)


@pytest.fixture
def iris_app(iris_files, tmp_path):
    root, _ = iris_files
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}",
                      "MODEL_DIR": str(tmp_path / "models")})
    runner = app.test_cli_runner()
    outputs = {}
    for name in ("svc", "logistic"):
        done = runner.invoke(args=["models", "add", f"iris_{name}", str(root / f"{name}.onnx"),
                                   "--labels", ",".join(IRIS)])
        assert done.exit_code == 0, done.output
        outputs[name] = done.output
    app.extensions["model_registry"].load_all()
    yield app, outputs
    app.extensions["db_engine"].dispose()


def raw(iris_files, name):
    root, rows = iris_files
    session = ort.InferenceSession(str(root / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: rows})


def test_decision_scores_are_named_as_such_everywhere(iris_app, iris_files):
    app, printed = iris_app
    assert "decision_scores per label (NOT probabilities" in printed["svc"]
    assert "label (one of setosa, versicolor, virginica)" in printed["svc"]
    client, rows = app.test_client(), iris_files[1]
    labels, scores = raw(iris_files, "svc")
    assert not np.allclose(scores.sum(axis=1), 1)  # what the graph calls "probabilities" is not
    answer = client.post("/models/iris_svc/predict", json={"instances": rows.tolist()}).json
    for got, label, row in zip(answer["predictions"], labels, scores):
        assert set(got) == {"label", "decision_scores"}
        assert got["label"] == IRIS[int(label)]
        assert [got["decision_scores"][name] for name in IRIS] == pytest.approx(row.tolist(), abs=1e-6)
    described = client.get("/models/iris_svc").json
    assert [o["name"] for o in described["outputs"]] == ["label", "decision_scores"]
    assert "not probabilities" in described["outputs"][1]["description"]
    v2 = client.post("/v2/models/iris_svc/infer", json={"inputs": [
        {"name": "X", "datatype": "FP32", "shape": [3, 4], "data": rows.flatten().tolist()}]}).json
    assert [o["name"] for o in v2["outputs"]] == ["label", "decision_scores"]
    assert v2["outputs"][0]["data"] == [IRIS[int(i)] for i in labels]


def test_probabilities_stay_probabilities_with_their_labels(iris_app, iris_files):
    app, printed = iris_app
    assert "probabilities per label" in printed["logistic"] and "NOT" not in printed["logistic"]
    labels, probabilities = raw(iris_files, "logistic")
    answer = app.test_client().post("/models/iris_logistic/predict", json={"instances": iris_files[1].tolist()}).json
    for got, label, row in zip(answer["predictions"], labels, probabilities):
        assert got["label"] == IRIS[int(label)]
        assert [got["probabilities"][name] for name in IRIS] == pytest.approx(row.tolist(), abs=1e-6)


def test_batch_scoring_writes_a_decision_score_column_per_label(iris_app, iris_files):
    app, _ = iris_app
    model = load_model(app.settings.model_dir, "iris_svc")
    assert result_columns(model.manifest) == ["label", *[f"decision_score_{n}" for n in IRIS], "error"]
    [row] = score_items(model, [iris_files[1][0].tolist()])
    assert row["label"] == "setosa" and row["decision_score_setosa"] > row["decision_score_virginica"]


def test_labels_that_do_not_match_the_classes_are_refused(iris_files, tmp_path):
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}",
                      "MODEL_DIR": str(tmp_path / "models")})
    done = app.test_cli_runner().invoke(args=["models", "add", "iris", str(iris_files[0] / "svc.onnx"),
                                              "--labels", "a,b"])
    assert done.exit_code != 0 and "--labels names 2 classes; the graph scores 3" in done.output
    assert not list((tmp_path / "models").rglob("manifest.json"))
    app.extensions["db_engine"].dispose()


def test_the_manifest_records_which_graph_output_is_which(iris_app):
    app, _ = iris_app
    manifest = json.loads((app.settings.model_dir / "iris_svc" / "1" / "manifest.json").read_text())
    assert manifest["config"]["graph_outputs"] == {"label": "label", "decision_scores": "probabilities"}
    assert manifest["config"]["label_by_index"] is True


def test_the_committed_example_onnx_is_what_its_script_makes(tmp_path):
    """examples/iris_svc.onnx (the README's ONNX example) is rebuilt byte for byte by examples/make_iris_onnx.py."""
    import runpy

    from app.config import PROJECT_ROOT

    make = runpy.run_path(str(PROJECT_ROOT / "examples" / "make_iris_onnx.py"))["main"]
    assert make(tmp_path / "iris.onnx").read_bytes() == (PROJECT_ROOT / "examples" / "iris_svc.onnx").read_bytes()
