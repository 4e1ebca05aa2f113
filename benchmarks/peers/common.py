"""The exact prediction path every server in the comparison runs: our decode + preprocessing + model.

Each peer loads the committed model versions through the project's own Model
classes, so that only the serving stack differs between the rows of the table.
"""
from __future__ import annotations

from pathlib import Path

from app.batch.core import find_manifest
from app.models.registry import build_model

ROOT = Path(__file__).resolve().parents[2]


class Models:
    """The malaria CNN (ONNX Runtime, 1 thread) and the review pipeline, loaded and warmed up."""

    def __init__(self, model_dir: Path = ROOT / "saved_models", only: tuple[str, ...] = ("cell", "review")):
        """Load the models (both unless `only` names one) from their manifests (hashes verified)."""
        if "cell" in only:
            self.cell = build_model(find_manifest(model_dir, "malaria_cell"), {"onnx_threads": 1})
            self.cell.load()
        if "review" in only:
            self.review = build_model(find_manifest(model_dir, "review_sentiment"))
            self.review.load()

    @staticmethod
    def predict(model, items: list) -> list[dict]:
        """The model interface's steps called directly (decode, predict, postprocess): no batcher, metrics
        or other feature of this server, which the peers do not have."""
        return model.postprocess(model.predict(model.decode({model.inputs[0].name: items})))

    def classify(self, image: bytes) -> dict:
        """Decode, preprocess and classify one encoded image."""
        return self.predict(self.cell, [image])[0]

    def sentiment(self, text: str) -> dict:
        """Sentiment of one review."""
        return self.predict(self.review, [text])[0]
