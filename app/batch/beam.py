"""Any registered model inside an Apache Beam pipeline: a RunInference model handler around the model interface.

    import apache_beam as beam
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
    from app.batch.beam import ModelserveModelHandler

    with beam.Pipeline() as pipeline:
        (pipeline
         | beam.Create([("r1", "A fine, moving film."), ("r2", "Dull and far too long.")])
         | RunInference(KeyedModelHandler(ModelserveModelHandler("review_sentiment")))
         | beam.Map(print))
    # ('r1', PredictionResult(example='A fine, moving film.', inference={'label': 'positive',
    #        'probabilities': {...}}, model_id='review_sentiment:4'))

The version is pinned when the handler is made (the one given, else the one the server
serves by default), so that every worker of a pipeline scores with the same one. Each
worker loads it through the server's own loading code (manifest read, every artifact's
hash verified) from the local folder or the shared store, once per process, and batches
up to the model's own ``max_batch_size`` items. An item the model refuses (an image that
does not decode, an empty text) gets ``{"error": reason}`` as its inference; the pipeline
goes on.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, Sequence


class BeamNoise(logging.Filter):
    """Beam warns on its root logger at import that an optional Google client is missing, and on every batch
    that it cannot read the process's memory when PyTorch is absent (its model manager imports it): neither
    concerns these models, and the second floods a run's log."""

    NOISE = ("apitools not found", "Resource module is not available")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


logging.getLogger().addFilter(BeamNoise())

from apache_beam.ml.inference.base import ModelHandler, PredictionResult  # noqa: E402

from app.batch.core import default_store, find_manifest, load_model, results  # noqa: E402
from app.models.base import Model  # noqa: E402
from app.models.batching import BatchingSettings  # noqa: E402


class ModelserveModelHandler(ModelHandler[Any, PredictionResult, Model]):
    """RunInference's handler for one model of the server's: texts, encoded images (bytes) or feature rows in,
    the model's plain result (as ``/models/NAME/predict`` answers) out."""

    def __init__(self, name: str, version: str | None = None, store: str | None = None,
                 batch_size: int | None = None, onnx_threads: int = 1):
        """``store``: the model folder or a shared store's URL (default: ``MODELSERVE_MODEL_STORE``, else
        saved_models). ``batch_size``: most items per call (default: the model's own ``max_batch_size``).
        ``onnx_threads``: one, since a runner already runs a bundle per core."""
        self.store = str(store or default_store())
        manifest = find_manifest(self.store, name, version)  # here, on the launching machine: fail early
        self.name, self.version, self.onnx_threads = name, manifest.version, onnx_threads
        self.batch_size = batch_size or BatchingSettings.from_dict(manifest.get("batching")).max_batch_size
        self.manifest = manifest
        super().__init__(min_batch_size=1, max_batch_size=self.batch_size)

    def load_model(self) -> Model:
        """The model, hash-verified and loaded (Beam calls this once per worker process and shares it)."""
        return load_model(self.store, self.name, self.version, self.batch_size, onnx_threads=self.onnx_threads)

    def run_inference(self, batch: Sequence[Any], model: Model,
                      inference_args: dict[str, Any] | None = None) -> Iterable[PredictionResult]:
        """One PredictionResult per item, in order; a refused item's inference is {"error": reason}."""
        model_id = f"{self.name}:{self.version}"
        return [PredictionResult(item, answer, model_id) for item, answer in zip(batch, results(model, list(batch)))]

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        """Bytes of a batch, for Beam's metrics: the encoded images' or texts' sizes."""
        return sum(len(item) if isinstance(item, (bytes, str)) else 8 * len(item) if isinstance(item, list) else 0
                   for item in batch)

    def get_metrics_namespace(self) -> str:
        """Beam's metrics for this handler are named modelserve_<model>."""
        return f"modelserve_{self.name}"
