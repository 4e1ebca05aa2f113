"""Turn V2 tensors into model inputs and model predictions into V2 tensors (per runtime)."""
from __future__ import annotations

import numpy as np

from app.codecs.v2 import ProtocolError, Tensor
from app.models.base import Model
from app.preprocessing.image import ImageError, prepare_image


def _single_input(model: Model, inputs: list[Tensor]) -> Tensor:
    """The one input the model takes, by name."""
    expected = [i["name"] for i in model.manifest.data.get("inputs", [])]
    if len(inputs) != 1 or inputs[0].name not in expected:
        got = [t.name for t in inputs]
        raise ProtocolError(f"model {model.name!r} takes one input named {expected[0]!r}; got {got}")
    return inputs[0]


def text_batch(model: Model, inputs: list[Tensor], max_chars: int) -> list[str]:
    """UTF-8 strings from a BYTES input."""
    tensor = _single_input(model, inputs)
    if tensor.datatype != "BYTES":
        raise ProtocolError(f"input {tensor.name!r} must be BYTES (UTF-8 text), not {tensor.datatype}")
    texts = []
    for item in tensor.data:
        try:
            text = item.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"input {tensor.name!r}: element is not valid UTF-8") from exc
        if not text.strip():
            raise ProtocolError(f"input {tensor.name!r}: empty text")
        if len(text) > max_chars:
            raise ProtocolError(f"input {tensor.name!r}: text of {len(text)} characters is over the limit of {max_chars}")
        texts.append(text)
    return texts


def image_batch(model: Model, inputs: list[Tensor], max_pixels: int) -> np.ndarray:
    """(N, S, S, 3) float32 from encoded files (BYTES) or a UINT8/FP32 tensor of the input shape."""
    tensor = _single_input(model, inputs)
    size = model.input_size
    if tensor.datatype == "BYTES":
        try:
            return np.stack([prepare_image(item, size, max_pixels) for item in tensor.data])
        except ImageError as exc:
            raise ProtocolError(f"input {tensor.name!r}: {exc.reason}") from exc
    if tensor.datatype not in ("UINT8", "FP32"):
        raise ProtocolError(f"input {tensor.name!r} must be BYTES, UINT8 or FP32, not {tensor.datatype}")
    if len(tensor.shape) != 4 or tensor.shape[1:] != [size, size, 3]:
        raise ProtocolError(f"input {tensor.name!r}: shape must be [N, {size}, {size}, 3], got {tensor.shape}")
    if tensor.datatype == "UINT8":
        return tensor.data.astype(np.float32) / 255.0
    return np.asarray(tensor.data, dtype=np.float32)


def output_tensors(model: Model, predictions: list[dict]) -> list[Tensor]:
    """label (BYTES) plus probabilities or decision_score, as the manifest declares them."""
    n = len(predictions)
    outputs = [Tensor("label", "BYTES", [n], [p["label"].encode("utf-8") for p in predictions])]
    if "probabilities" in predictions[0]:
        declared = {o["name"]: o["datatype"] for o in model.manifest.data.get("outputs", [])}
        datatype = declared.get("probabilities", "FP32")
        values = np.array([[p["probabilities"][label] for label in model.labels] for p in predictions])
        outputs.append(Tensor("probabilities", datatype, [n, len(model.labels)], values))
    else:
        values = np.array([p["decision_score"] for p in predictions], dtype=np.float64)
        outputs.append(Tensor("decision_score", "FP64", [n], values))
    return outputs
