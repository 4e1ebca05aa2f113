"""POST /review end to end with the committed model, and every bad input."""
import pytest

from tests.conftest import committed_version

POSITIVE = "One of the best films I have seen this year: moving, funny and beautifully acted. :)"
NEGATIVE = "Dreadful. The plot made no sense, the acting was wooden and I wanted my money back."


def test_describe_endpoint(client):
    body = client.get("/review").json
    assert body["endpoint"] == "POST /review"
    assert body["model"]["name"] == "review_sentiment"
    assert body["model"]["metrics"]["accuracy"] >= 0.90


@pytest.mark.parametrize("text, label", [(POSITIVE, "positive"), (NEGATIVE, "negative")])
def test_form_post_gives_sensible_prediction(client, text, label):
    response = client.post("/review", data={"review": text})
    assert response.status_code == 200
    body = response.json
    assert body["label"] == label
    p = body["probability_positive"]
    assert (p > 0.8) if label == "positive" else (p < 0.2)
    assert body["model"] == {"name": "review_sentiment", "version": committed_version("review_sentiment")}


def test_json_post_matches_form_post(client):
    form = client.post("/review", data={"review": POSITIVE}).json
    as_json = client.post("/review", json={"review": POSITIVE}).json
    assert form == as_json


def test_multipart_form_is_accepted(client):
    response = client.post("/review", data={"review": NEGATIVE}, content_type="multipart/form-data")
    assert response.status_code == 200 and response.json["label"] == "negative"


def test_accuracy_on_a_slice_of_the_real_test_set(client, shared_data):
    from app.training.data import read_imdb_split

    texts, labels = read_imdb_split(shared_data / "imdb", "test")
    picks = list(range(0, 25000, 125))  # 200 reviews, both classes
    correct = 0
    for i in picks:
        body = client.post("/review", json={"review": texts[i]}).json
        correct += body["label"] == ("positive" if labels[i] == 1 else "negative")
    assert correct / len(picks) >= 0.85


@pytest.mark.parametrize(
    "kwargs, status, fragment",
    [
        ({"data": {"text": "wrong field"}}, 400, "missing field 'review'"),
        ({"data": {"review": ""}}, 422, "is empty"),
        ({"data": {"review": "   \n "}}, 422, "is empty"),
        ({"data": {"review": "x" * 1_000_000}}, 413, "limit is"),
        ({"json": {"review": 42}}, 400, "must be a string"),
        ({"json": ["review"]}, 400, "must be an object"),
        ({"data": b'{"review": "bad', "content_type": "application/json"}, 400, "not valid JSON"),
        ({"data": b'{"review": "caf\xe9"}', "content_type": "application/json"}, 400, "not valid JSON"),
        ({"data": b"review=caf%E9", "content_type": "application/x-www-form-urlencoded"}, 400, "UTF-8"),
        ({"data": "review=hello", "content_type": "text/plain"}, 415, "unsupported content type"),
        ({}, 415, "unsupported content type"),
    ],
)
def test_bad_input_gets_clear_json_4xx(client, kwargs, status, fragment):
    response = client.post("/review", **kwargs)
    assert response.status_code == status
    assert response.is_json
    assert fragment in response.json["error"]


def test_body_over_max_content_length_is_413(app):
    app.config["MAX_CONTENT_LENGTH"] = 1000
    response = app.test_client().post("/review", data={"review": "y" * 5000})
    assert response.status_code == 413
    assert "limit of 1000 bytes" in response.json["error"]


def test_refused_model_answers_503_not_500(app_with_model_dir, model_dir):
    (model_dir / "review_sentiment" / committed_version("review_sentiment") / "stopwords.pkl").write_bytes(b"tampered")
    response = app_with_model_dir.test_client().post("/review", data={"review": POSITIVE})
    assert response.status_code == 503
    assert "verification failed" in response.json["error"]
