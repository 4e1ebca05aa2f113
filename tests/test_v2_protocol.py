"""Open Inference Protocol V2 over the test client: JSON, binary tensor data, errors, schemas."""
import io
import json
import struct

import numpy as np
import pytest
from kserve.protocol.rest import v2_datamodels as schema
from PIL import Image

from app.codecs.v2 import HEADER_LENGTH

from tests.conftest import SAVED_MODELS, committed_version

TEXT_MODEL = "review_sentiment"
IMAGE_MODEL = "malaria_cell"
SIZE = json.loads((SAVED_MODELS / IMAGE_MODEL / committed_version(IMAGE_MODEL) / "manifest.json").read_text())["preprocessing"]["input_size"]


def png(color=(190, 120, 160), size=(90, 110)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def split_binary(response):
    """(json header, binary tail) of a binary-extension response."""
    length = int(response.headers[HEADER_LENGTH])
    return json.loads(response.data[:length]), response.data[length:]


def test_server_metadata_advertises_binary_extension(client):
    body = client.get("/v2").json
    schema.ServerMetadataResponse.model_validate(body)
    assert "binary_tensor_data" in body["extensions"]


def test_health(client):
    assert schema.ServerLiveResponse.model_validate(client.get("/v2/health/live").json).live
    assert client.get("/v2/health/ready").status_code == 503  # models not loaded yet
    client.application.extensions["model_registry"].load_all()
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200
    schema.ServerReadyResponse.model_validate(ready.json)


@pytest.mark.parametrize("name", [TEXT_MODEL, IMAGE_MODEL, "linear_svc"])
def test_model_metadata_and_ready(client, name):
    body = client.get(f"/v2/models/{name}").json
    schema.ModelMetadataResponse.model_validate(body)
    version = committed_version(name)
    assert body["name"] == name and body["versions"] == [version]
    version_body = client.get(f"/v2/models/{name}/versions/{version}").json
    assert version_body["name"] == name
    ready = client.get(f"/v2/models/{name}/versions/{version}/ready")
    assert ready.status_code == 200
    schema.ModelReadyResponse.model_validate(ready.json)


def test_unknown_model_and_version_are_404(client):
    assert client.get("/v2/models/nope").status_code == 404
    assert client.get("/v2/models/nope/ready").status_code == 404
    response = client.get(f"/v2/models/{TEXT_MODEL}/versions/9")
    assert response.status_code == 404 and "error" in response.json


def test_text_infer_json(client):
    request = {"id": "r1", "inputs": [{"name": "review", "datatype": "BYTES", "shape": [2],
                                       "data": ["Wonderful, moving film.", "Awful. Boring and far too long."]}]}
    response = client.post(f"/v2/models/{TEXT_MODEL}/infer", json=request)
    assert response.status_code == 200
    body = schema.InferenceResponse.model_validate(response.json)
    assert body.id == "r1" and body.model_name == TEXT_MODEL
    outputs = {o.name: o for o in body.outputs}
    assert outputs["label"].data == ["positive", "negative"]
    probabilities = np.array(outputs["probabilities"].data).reshape(outputs["probabilities"].shape)
    assert probabilities.shape == (2, 2) and np.allclose(probabilities.sum(axis=1), 1)


def test_linear_svc_reports_decision_score(client):
    request = {"inputs": [{"name": "review", "datatype": "BYTES", "shape": [1], "data": ["A great film."]}]}
    body = client.post("/v2/models/linear_svc/infer", json=request).json
    names = [o["name"] for o in body["outputs"]]
    assert names == ["label", "decision_score"]


def test_text_infer_binary_in_and_out(client):
    texts = [b"Brilliant and funny.", b"A dull, lifeless mess."]
    tensor = b"".join(struct.pack("<I", len(t)) + t for t in texts)
    header = json.dumps({
        "inputs": [{"name": "review", "datatype": "BYTES", "shape": [2],
                    "parameters": {"binary_data_size": len(tensor)}}],
        "outputs": [{"name": "label", "parameters": {"binary_data": True}},
                    {"name": "probabilities", "parameters": {"binary_data": True}}],
    }).encode()
    response = client.post(f"/v2/models/{TEXT_MODEL}/infer", data=header + tensor,
                           headers={HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"})
    assert response.status_code == 200
    doc, tail = split_binary(response)
    label_size = doc["outputs"][0]["parameters"]["binary_data_size"]
    labels_raw, probs_raw = tail[:label_size], tail[label_size:]
    assert labels_raw == struct.pack("<I", 8) + b"positive" + struct.pack("<I", 8) + b"negative"
    probs = np.frombuffer(probs_raw, dtype="<f8").reshape(2, 2)
    assert probs[0, 1] > 0.5 > probs[1, 1]


def test_image_infer_bytes_and_tensor_agree(client):
    data = png()
    tensor = struct.pack("<I", len(data)) + data
    header = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                     "parameters": {"binary_data_size": len(tensor)}}]}).encode()
    binary = client.post(f"/v2/models/{IMAGE_MODEL}/infer", data=header + tensor,
                         headers={HEADER_LENGTH: str(len(header))})
    assert binary.status_code == 200
    from_file = binary.json["outputs"][1]["data"]

    from app.preprocessing.image import prepare_image

    array = prepare_image(data, SIZE)[None]
    as_uint8 = np.round(array * 255).astype(np.uint8)
    fp32 = client.post(f"/v2/models/{IMAGE_MODEL}/infer", json={
        "inputs": [{"name": "image", "datatype": "FP32", "shape": list(array.shape), "data": array.ravel().tolist()}]})
    u8 = client.post(f"/v2/models/{IMAGE_MODEL}/infer", json={
        "inputs": [{"name": "image", "datatype": "UINT8", "shape": list(array.shape), "data": as_uint8.ravel().tolist()}]})
    assert np.allclose(fp32.json["outputs"][1]["data"], from_file, atol=1e-5)
    assert np.allclose(u8.json["outputs"][1]["data"], from_file, atol=1e-3)


@pytest.mark.parametrize(
    "request_body, fragment",
    [
        ({}, "non-empty 'inputs'"),
        ({"inputs": [{"name": "review", "datatype": "BYTES", "shape": [2], "data": ["one"]}]}, "do not fill"),
        ({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}, "takes inputs ['review']"),
        ({"inputs": [{"name": "review", "datatype": "FP32", "shape": [1], "data": [1.0]}]}, "takes text"),
        ({"inputs": [{"name": "review", "datatype": "WHAT", "shape": [1], "data": [1]}]}, "unknown datatype"),
        ({"inputs": [{"name": "review", "datatype": "BYTES", "shape": "1", "data": ["x"]}]}, "shape must be"),
        ({"inputs": [{"name": "review", "datatype": "BYTES", "shape": [1], "data": ["x"]}],
          "outputs": [{"name": "nope"}]}, "unknown output"),
    ],
)
def test_bad_infer_requests_are_400(client, request_body, fragment):
    response = client.post(f"/v2/models/{TEXT_MODEL}/infer", json=request_body)
    assert response.status_code == 400
    assert fragment in response.json["error"]


@pytest.mark.parametrize(
    "body, header, fragment",
    [
        (b"not json", None, "not valid JSON"),
        (b'{"inputs": []}xxxx', "999", "does not fit"),
        (b'{"inputs": []}', "abc", "must be an integer"),
    ],
)
def test_malformed_bodies_are_400(client, body, header, fragment):
    headers = {HEADER_LENGTH: header} if header else {}
    response = client.post(f"/v2/models/{TEXT_MODEL}/infer", data=body, headers=headers)
    assert response.status_code == 400 and fragment in response.json["error"]


def test_binary_size_mismatch_is_400(client):
    header = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, SIZE, SIZE, 3],
                                     "parameters": {"binary_data_size": 12}}]}).encode()
    response = client.post(f"/v2/models/{IMAGE_MODEL}/infer", data=header + b"\x00" * 12,
                           headers={HEADER_LENGTH: str(len(header))})
    assert response.status_code == 400 and "do not hold shape" in response.json["error"]


def test_wrong_image_tensor_shape_is_400(client):
    response = client.post(f"/v2/models/{IMAGE_MODEL}/infer", json={
        "inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 2, 2, 3], "data": [0.0] * 12}]})
    assert response.status_code == 400 and f"must have shape [N, {SIZE}, {SIZE}, 3]" in response.json["error"]


REVIEW_INPUT = {"name": "review", "datatype": "BYTES", "shape": [1], "data": ["fine"]}


@pytest.mark.parametrize("model, request_body, fragment", [
    (TEXT_MODEL, {"inputs": [REVIEW_INPUT], "parameters": "text"}, "request: 'parameters' must be an object"),
    (TEXT_MODEL, {"inputs": [{**REVIEW_INPUT, "parameters": [1]}]}, "'parameters' must be an object"),
    (TEXT_MODEL, {"inputs": [REVIEW_INPUT], "outputs": [{"name": ["label"]}]}, "string 'name'"),
    (TEXT_MODEL, {"inputs": [REVIEW_INPUT], "outputs": [{"name": {"a": 1}}]}, "string 'name'"),
    (TEXT_MODEL, {"inputs": [REVIEW_INPUT], "outputs": [{"name": "label", "parameters": "x"}]}, "must be an object"),
    (IMAGE_MODEL, {"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1], "data": [-1]}]}, "out of its range"),
    (IMAGE_MODEL, {"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1], "data": [300]}]}, "out of its range"),
    (TEXT_MODEL, {"inputs": [{"name": "review", "datatype": "INT64", "shape": [1], "data": [2 ** 70]}]}, "out of its range"),
    (TEXT_MODEL, {"inputs": [{"name": "review", "datatype": "BYTES", "shape": [0], "data": []}]}, "empty"),
])
def test_malformed_v2_requests_are_400_not_500(client, model, request_body, fragment):
    response = client.post(f"/v2/models/{model}/infer", json=request_body)
    assert response.status_code == 400, response.json
    assert fragment in response.json["error"]


def test_model_metadata_matches_its_documented_schema(client):
    """Metadata shapes use -1 for "any size" (found by the fuzz battery: the schema said minimum 0)."""
    import jsonschema

    schema = client.get("/openapi.json").json["components"]["schemas"]["V2TensorMetadata"]
    metadata = client.get("/v2/models/logistic_regression").json
    assert -1 in metadata["inputs"][0]["shape"]
    for tensor in metadata["inputs"] + metadata["outputs"]:
        jsonschema.validate(tensor, schema)


def test_statistics_extension(client):
    def stats(path):
        return client.get(path).json["model_stats"]

    path = f"/v2/models/review_sentiment/versions/{committed_version('review_sentiment')}/stats"
    before = stats(path)[0]
    for text in ("Great", "Bad", "Fine"):
        client.post("/review", data={"review": text})
    after = stats(path)[0]
    assert after["execution_count"] - before["execution_count"] == 3
    assert after["inference_stats"]["success"]["ns"] > before["inference_stats"]["success"]["ns"]
    assert after["last_inference"] >= before["last_inference"] and after["last_inference"] > 0
    assert {s["name"] for s in stats("/v2/models/stats")} >= {"review_sentiment", "malaria_cell"}
    assert client.get("/v2/models/nope/stats").status_code == 404
    assert "statistics" in client.get("/v2").json["extensions"]


def test_model_repository_extension(app_with_model_dir):
    client = app_with_model_dir.test_client()
    admin = {"Authorization": f"Bearer {app_with_model_dir.extensions['worker_token']}"}
    infer = {"inputs": [{"name": "review", "datatype": "BYTES", "shape": [1], "data": ["Fine film"]}]}
    index = client.post("/v2/repository/index", json={"ready": True}).json
    assert {"name": "linear_svc", "version": committed_version("linear_svc"), "state": "READY", "reason": ""} in index
    assert client.post("/v2/repository/models/linear_svc/unload").status_code == 401  # an operator's act
    assert client.post("/v2/repository/models/linear_svc/unload", headers=admin).status_code == 200
    assert client.post("/v2/models/linear_svc/infer", json=infer).status_code == 404
    assert {"name": "linear_svc", "state": "UNAVAILABLE", "reason": "unloaded"} in client.post("/v2/repository/index").json
    assert client.post("/v2/repository/models/linear_svc/load", headers=admin).status_code == 200
    assert client.post("/v2/models/linear_svc/infer", json=infer).status_code == 200
    assert client.post("/v2/repository/models/nope/load", headers=admin).status_code == 404
    assert "model_repository" in client.get("/v2").json["extensions"]


def test_json_bytes_input_can_carry_a_base64_image(client):
    """MLServer's convention: a BYTES input with parameters.content_type "base64" holds encoded files."""
    import base64

    from tests.conftest import SHARED_DATA

    cell = next((SHARED_DATA / "malaria" / "Parasitized").glob("*.png")).read_bytes()
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"content_type": "base64"},
                        "data": [base64.b64encode(cell).decode()]}]}
    answer = client.post("/v2/models/malaria_cell/infer", json=body)
    assert answer.status_code == 200
    direct = client.post("/classify", data={"image": (__import__("io").BytesIO(cell), "c.png")}).json
    assert answer.json["outputs"][0]["data"] == [direct["label"]]
    body["inputs"][0]["data"] = ["***not base64***"]
    refused = client.post("/v2/models/malaria_cell/infer", json=body)
    assert refused.status_code == 400 and "base64" in refused.json["error"]
