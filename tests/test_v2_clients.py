"""Real third-party V2 clients against gunicorn: tritonclient[http] and the kserve SDK."""
import asyncio
import json

import numpy as np
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

from tests.conftest import SAVED_MODELS, SHARED_DATA, committed_version

CELL_SIZE = json.loads((SAVED_MODELS / "malaria_cell" / committed_version("malaria_cell") / "manifest.json").read_text())[
    "preprocessing"]["input_size"]


@pytest.fixture(scope="module")
def triton_client(live_server):
    client = triton.InferenceServerClient(url=live_server.removeprefix("http://"))
    yield client
    client.close()


def cell_png() -> bytes:
    path = next((SHARED_DATA / "malaria" / "Parasitized").glob("*.png"))
    return path.read_bytes()


def test_triton_server_live_ready_and_metadata(triton_client):
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    assert "binary_tensor_data" in triton_client.get_server_metadata()["extensions"]
    for name in ("review_sentiment", "malaria_cell", "logistic_regression"):
        assert triton_client.is_model_ready(name)
        metadata = triton_client.get_model_metadata(name, model_version=committed_version(name))
        assert metadata["name"] == name


@pytest.mark.parametrize("binary", [True, False])
def test_triton_text_infer(triton_client, binary):
    review = triton.InferInput("review", [2], "BYTES")
    review.set_data_from_numpy(np.array([b"A beautiful, moving film.", b"Boring and stupid."], dtype=object),
                               binary_data=binary)
    outputs = [triton.InferRequestedOutput("label", binary_data=binary),
               triton.InferRequestedOutput("probabilities", binary_data=binary)]
    result = triton_client.infer("review_sentiment", [review], outputs=outputs)
    labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label")]
    assert labels == ["positive", "negative"]
    assert result.as_numpy("probabilities").shape == (2, 2)


def test_triton_default_binary_output_without_requested_outputs(triton_client):
    review = triton.InferInput("review", [1], "BYTES")
    review.set_data_from_numpy(np.array([b"Great acting and a clever plot."], dtype=object))
    result = triton_client.infer("review_sentiment", [review])
    assert result.as_numpy("label")[0] == b"positive"


@pytest.mark.parametrize("binary", [True, False])
def test_triton_image_infer_with_tensor(triton_client, binary):
    from app.preprocessing.image import prepare_image

    size = CELL_SIZE  # the CNN's input side (manifest preprocessing.input_size)
    array = prepare_image(cell_png(), size)[None]
    image = triton.InferInput("image", list(array.shape), "FP32")
    image.set_data_from_numpy(array, binary_data=binary)
    result = triton_client.infer("malaria_cell", [image],
                                 outputs=[triton.InferRequestedOutput("probabilities", binary_data=binary)])
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (1, 2) and abs(float(probabilities.sum()) - 1) < 1e-5


def test_triton_image_infer_with_encoded_file(triton_client):
    image = triton.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([cell_png()], dtype=object), binary_data=True)
    result = triton_client.infer("malaria_cell", [image])
    assert result.as_numpy("label")[0] in (b"Parasitized", b"Uninfected")


def test_triton_error_is_raised_with_message(triton_client):
    bad = triton.InferInput("text", [1], "BYTES")
    bad.set_data_from_numpy(np.array([b"x"], dtype=object))
    with pytest.raises(triton.InferenceServerException, match="takes inputs \\['review'\\]"):
        triton_client.infer("review_sentiment", [bad])


def test_kserve_rest_client_v2(live_server):
    async def run():
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=1))
        try:
            assert await client.is_server_live(live_server)
            assert await client.is_server_ready(live_server)
            assert await client.is_model_ready(live_server, "review_sentiment")
            review = InferInput("review", [1], "BYTES", ["What a waste of time, truly terrible."])
            response = await client.infer(live_server, InferRequest("review_sentiment", [review]),
                                          model_name="review_sentiment")
            return {o.name: o for o in response.outputs}
        finally:
            await client.close()

    outputs = asyncio.run(run())
    assert outputs["label"].as_numpy()[0] in ("negative", b"negative")
    assert outputs["probabilities"].as_numpy().shape == (1, 2)


def test_triton_statistics_count_every_worker(triton_client):
    """The statistics extension through tritonclient: counts from both gunicorn workers together."""
    def executions():
        stats = triton_client.get_inference_statistics(
            "logistic_regression", model_version=committed_version("logistic_regression"))["model_stats"]
        return stats[0]["execution_count"], stats[0]["inference_count"]

    before = executions()
    review = triton.InferInput("review", [2], "BYTES")
    review.set_data_from_numpy(np.array([b"Fine.", b"Awful."], dtype=object))
    for _ in range(6):  # spread over both workers
        triton_client.infer("logistic_regression", [review])
    after = executions()
    assert after[0] - before[0] == 6 and after[1] - before[1] == 12
    assert "statistics" in triton_client.get_server_metadata()["extensions"]
