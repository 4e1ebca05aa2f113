"""POST /classify with the committed ONNX model on real held-out cells, and bad uploads."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import SAVED_MODELS, committed_version

MODEL_DIR = SAVED_MODELS / "malaria_cell" / committed_version("malaria_cell")


def held_out_rows(shared_data):
    """Every cell of the patients the committed model held out for testing."""
    from app.training.malaria import read_manifest

    split = json.loads((MODEL_DIR / "split.json").read_text())
    test_patients = set(split["test"])
    return [r for r in read_manifest(shared_data / "malaria") if r["patient"] in test_patients]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def post_image(client, data: bytes, field: str = "image", filename: str = "cell.png"):
    return client.post("/classify", data={field: (io.BytesIO(data), filename)}, content_type="multipart/form-data")


def test_split_keeps_patients_apart():
    split = json.loads((MODEL_DIR / "split.json").read_text())
    train, val, test = (set(split[k]) for k in ("train", "validation", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(test) >= 20


def test_held_out_accuracy_through_the_endpoint(client, shared_data):
    rows = held_out_rows(shared_data)
    assert len(rows) > 1000
    correct, parasitized_scores, truths = 0, [], []
    for row in rows:
        response = post_image(client, (shared_data / "malaria" / row["path"]).read_bytes())
        assert response.status_code == 200
        body = response.json
        correct += body["label"] == row["label"]
        parasitized_scores.append(body["probabilities"]["Parasitized"])
        truths.append(row["label"] == "Parasitized")
    accuracy = correct / len(rows)
    from sklearn.metrics import roc_auc_score

    assert accuracy >= 0.965, accuracy
    assert roc_auc_score(truths, parasitized_scores) >= 0.99
    manifest = json.loads((MODEL_DIR / "manifest.json").read_text())
    assert accuracy == pytest.approx(manifest["metrics"]["accuracy"], abs=1e-4)


def test_training_and_serving_preprocess_identically(client, app, shared_data):
    from app.preprocessing.image import prepare_image
    from app.training.malaria import INPUT_SIZE, load_images

    rows = held_out_rows(shared_data)[:16]
    training_arrays, _ = load_images(shared_data / "malaria", rows, INPUT_SIZE, "parity")
    model = app.extensions["model_registry"].get("malaria_cell")
    assert model.input_size == (INPUT_SIZE, INPUT_SIZE)
    for row, trained_on in zip(rows, training_arrays):
        data = (shared_data / "malaria" / row["path"]).read_bytes()
        assert np.array_equal(prepare_image(data, INPUT_SIZE), trained_on)
        # The served model's configured preprocessing (onnx-image runtime) gives the training arrays too.
        assert np.array_equal(model.decode({"image": [data]})["image"][0], trained_on)
        served = post_image(client, data).json["probabilities"]["Parasitized"]
        assert served == pytest.approx(float(model.probabilities(trained_on[None])[0, 0]), abs=1e-6)


def test_jpeg_is_accepted(client, shared_data):
    row = held_out_rows(shared_data)[0]
    image = Image.open(shared_data / "malaria" / row["path"]).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95)
    response = post_image(client, buffer.getvalue(), filename="cell.jpg")
    assert response.status_code == 200
    assert set(response.json["probabilities"]) == {"Parasitized", "Uninfected"}


def test_describe(client):
    body = client.get("/classify").json
    assert body["model"]["name"] == "malaria_cell"
    assert body["model"]["metrics"]["accuracy"] >= 0.965


@pytest.mark.parametrize(
    "data, status, fragment",
    [
        (b"", 422, "empty"),
        (b"definitely not an image", 422, "not a PNG or JPEG"),
    ],
)
def test_unusable_uploads(client, data, status, fragment):
    response = post_image(client, data)
    assert response.status_code == status
    assert fragment in response.json["error"]


def test_truncated_upload(client, shared_data):
    row = held_out_rows(shared_data)[0]
    data = (shared_data / "malaria" / row["path"]).read_bytes()
    response = post_image(client, data[: len(data) // 3])
    assert response.status_code == 422
    assert "truncated or corrupt" in response.json["error"]


def test_decompression_bomb_upload_is_413_and_worker_keeps_serving(client):
    response = post_image(client, png_bytes(Image.new("1", (20000, 20000))))
    assert response.status_code == 413
    assert "pixels" in response.json["error"]
    ok = post_image(client, png_bytes(Image.new("RGB", (100, 100), (200, 120, 150))))
    assert ok.status_code == 200


def test_wrong_field_name(client):
    response = post_image(client, png_bytes(Image.new("RGB", (10, 10))), field="file")
    assert response.status_code == 400
    assert response.json["error"] == "missing file field 'image'"
    assert response.json["received_fields"] == ["file"]


def test_not_multipart(client):
    response = client.post("/classify", data=b"\x89PNG...", content_type="image/png")
    assert response.status_code == 415
    assert "multipart/form-data" in response.json["error"]


def test_upload_over_limit_is_413(app):
    app.config["MAX_CONTENT_LENGTH"] = 50_000
    response = post_image(app.test_client(), np.random.default_rng(0).bytes(200_000))
    assert response.status_code == 413
    assert "limit of 50000 bytes" in response.json["error"]


def test_onnx_graph_costs_at_most_150m_multiply_adds():
    from app.training.onnx_macs import onnx_multiply_adds

    macs = onnx_multiply_adds(MODEL_DIR / "model.onnx")
    manifest = json.loads((MODEL_DIR / "manifest.json").read_text())
    assert macs <= 150_000_000
    assert macs == manifest["multiply_adds_per_image"]


def test_keras_and_onnx_exports_agree(tmp_path):
    """Export path parity: needs TensorFlow (requirements-train.txt), absent from the serving env."""
    pytest.importorskip("tensorflow", reason="TensorFlow is a training-only dependency")
    from app.training.malaria import build_model, export_onnx

    model = build_model(32)
    images = np.random.default_rng(0).random((8, 32, 32, 3), dtype=np.float32)
    _, max_diff = export_onnx(model, tmp_path / "m.onnx", images)
    assert max_diff < 1e-4


def test_nameless_form_part_is_400_not_500(client):
    body = b'--b\r\nContent-Disposition: form-data; name=""\r\n\r\ntrue\r\n--b--\r\n'
    response = client.post("/classify", data=body, content_type="multipart/form-data; boundary=b")
    assert response.status_code == 400 and "missing file field 'image'" in response.json["error"]
