"""Models chosen by name: GET/POST /predict with the committed scikit-learn trio."""
import json

import pytest

from tests.conftest import SAVED_MODELS, committed_version

TRIO = ("logistic_regression", "linear_svc", "decision_tree")


def test_welcome_lists_models(client):
    body = client.get("/predict").json
    assert "Welcome" in body["message"] and body["default_model"] == "logistic_regression"
    names = {m["name"] for m in body["models"]}
    assert set(TRIO) <= names
    svc = next(m for m in body["models"] if m["name"] == "linear_svc")
    assert svc["reports"] == "decision_score"


@pytest.mark.parametrize("name", TRIO)
def test_each_trio_model_has_measured_test_accuracy(name):
    manifest = json.loads((SAVED_MODELS / name / committed_version(name) / "manifest.json").read_text())
    assert manifest["metrics"]["examples"] == 25000
    assert manifest["metrics"]["dataset"].startswith("IMDb official test split")
    assert 0.5 < manifest["metrics"]["accuracy"] <= 1


def test_default_model_is_logistic_regression(client):
    body = client.post("/predict", json={"review": "A superb, moving film with a wonderful cast."}).json
    assert body["model"]["name"] == "logistic_regression"
    assert body["label"] == "positive" and body["probability_positive"] > 0.5


def test_linear_svc_reports_decision_score_not_probability(client):
    body = client.post("/predict", json={"model": "linear_svc", "review": "Awful, boring, a total mess."}).json
    assert body["label"] == "negative" and body["decision_score"] < 0
    assert "probability_positive" not in body and "not a calibrated probability" in body["note"]


def test_decision_tree_by_name(client):
    body = client.post("/predict", data={"model": "decision_tree", "review": "Great film."}).json
    assert body["model"]["name"] == "decision_tree" and 0 <= body["probability_positive"] <= 1


def test_unknown_model_is_404_listing_valid_names(client):
    response = client.post("/predict", json={"model": "random_forest", "review": "ok"})
    assert response.status_code == 404
    assert "random_forest" in response.json["error"]
    assert set(TRIO) <= set(response.json["available"])


def test_image_model_is_not_a_text_model(client):
    response = client.post("/predict", json={"model": "malaria_cell", "review": "ok"})
    assert response.status_code == 404


@pytest.mark.parametrize("body, status", [({"model": 5, "review": "x"}, 400), ({"model": "linear_svc"}, 400),
                                          ({"review": ""}, 422)])
def test_bad_predict_requests(client, body, status):
    assert client.post("/predict", json=body).status_code == status
