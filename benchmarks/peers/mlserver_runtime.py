"""Seldon MLServer custom runtimes (MLServer has no ONNX runtime of its own) for the same two models.

Requests are V2 JSON: the image as one base64 BYTES element, the review as one BYTES string.
"""
from __future__ import annotations

import base64

from mlserver import MLModel
from mlserver.codecs import StringCodec
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

from benchmarks.peers.common import Models

_models: Models | None = None


def models() -> Models:
    """Both models, loaded once per process."""
    global _models
    if _models is None:
        _models = Models()
    return _models


class CellRuntime(MLModel):
    """The malaria CNN: base64 image in, label and probability of each class out."""

    async def load(self) -> bool:
        """Load (shared with the text runtime in the same process)."""
        models()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Decode, preprocess, classify."""
        data = payload.inputs[0].data[0]
        image = base64.b64decode(data if isinstance(data, (bytes, str)) else str(data))
        result = models().classify(image)
        return InferenceResponse(model_name=self.name, outputs=[
            ResponseOutput(name="label", shape=[1], datatype="BYTES", data=[result["label"]]),
            ResponseOutput(name="probabilities", shape=[1, len(result["probabilities"])], datatype="FP32",
                           data=list(result["probabilities"].values())),
        ])


class ReviewRuntime(MLModel):
    """The review pipeline: one text in, label and probabilities out."""

    async def load(self) -> bool:
        """Load (shared with the image runtime in the same process)."""
        models()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Sentiment of the first text."""
        text = StringCodec.decode_input(payload.inputs[0])[0]
        result = models().sentiment(text)
        return InferenceResponse(model_name=self.name, outputs=[
            ResponseOutput(name="label", shape=[1], datatype="BYTES", data=[result["label"]]),
            ResponseOutput(name="probabilities", shape=[1, len(result["probabilities"])], datatype="FP32",
                           data=list(result["probabilities"].values())),
        ])
