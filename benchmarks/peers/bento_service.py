"""BentoML service with the same two endpoints (`bentoml serve benchmarks.peers.bento_service:Models`)."""
from __future__ import annotations

import os
from pathlib import Path

import bentoml

from benchmarks.peers.common import Models as LoadedModels


@bentoml.service(workers=int(os.environ.get("BENCH_PROCESSES", "2")), traffic={"timeout": 30})
class Models:
    """Both models in one service, like the other servers."""

    def __init__(self) -> None:
        """Load the models once per worker."""
        self.models = LoadedModels()

    @bentoml.api
    def classify(self, image: Path) -> dict:
        """Multipart field `image` (BentoML stores uploads as files) -> label and probabilities."""
        return self.models.classify(image.read_bytes())

    @bentoml.api
    def review(self, review: str) -> dict:
        """JSON {"review": text} -> sentiment."""
        return self.models.sentiment(review)
