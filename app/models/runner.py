"""One way to call a model: the Runner of a loaded version, which the registry makes beside it.

    runner = registry.runner("review_sentiment")          # or Runner(model) outside a server
    answer = runner.serve({"review": [text]}, explain=False, protocol="rest", admission=admission)
    answer.rows                                             # plain per-item answers (postprocess, explanations)
    answer.outputs                                          # the output columns (V2 tensors, jobs)

The runner holds what every caller needs around ``Model.predict``: the model's batcher (one prediction
at a time, merging requests that queue meanwhile), the inference metrics, the mapping of a runtime's
input errors to 422, and the prediction log. Views, V2, jobs, batch scoring and the pull worker call
``serve``; what the admission gate knows of a request (its deadline, its place among the worker's
arrivals) is passed in as ``admission``, never read from the side.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from collections.abc import Mapping, Sequence
from typing import Any

from app.errors import APIError, BadRequest
from app.metrics import track_inference
from app.models.base import Model, rejected_input
from app.models.batching import Admission, Batcher

log = logging.getLogger(__name__)


@dataclass
class Answer:
    """What one call of a model gave: the decoded batch, the output columns, and the rows made of them."""

    model: Model
    batch: Any
    outputs: dict[str, Any]
    explain: bool = False

    @property
    def rows(self) -> list[dict]:
        """Plain values per item; with ``explain``, each holds the runtime's explanation where it has one."""
        rows = self.model.postprocess(self.outputs)
        for row, extra in zip(rows, (self.model.explain(self.batch, self.outputs) or []) if self.explain else []):
            row.update(extra)
        return rows


class Runner:
    """Serves one loaded model version: decode, predict through its batcher inside the metrics, log."""

    def __init__(self, model: Model, prediction_log=None):
        """The model (loaded) and the prediction log its served answers are recorded in (None: nowhere)."""
        self.model = model
        self.prediction_log = prediction_log
        self.batcher = Batcher(self._predict, model.batching, model.concat_batches, model.split_outputs)

    def serve(self, inputs: Mapping[str, Any], explain: bool = False, protocol: str | None = None,
              admission: Admission | None = None) -> Answer:
        """The model's answer to ``inputs`` ({input name: column}), checked by ``Model.decode`` (4xx for bad
        input); recorded in the prediction log under ``protocol`` (None: not recorded, as batch scoring)."""
        model = self.model
        batch = model.decode(inputs)
        started = time.perf_counter()
        outputs = self.batcher.run(batch, model.batch_length(batch), admission)
        if protocol is not None and self.prediction_log is not None:
            raw = inputs.get(model.inputs[0].name) if len(model.inputs) == 1 else None  # captured as sent
            self.prediction_log.record(model, batch, outputs, time.perf_counter() - started, protocol, raw)
        return Answer(model, batch, outputs, explain)

    def _predict(self, batch) -> dict[str, Any]:
        """predict() inside the inference metrics (what the batcher calls, once per merged batch). An error
        the input explains is a 422; any other is logged with the model, version and request and stays a 500."""
        model = self.model
        with track_inference(model.name, model.version, model.batch_length(batch)):
            try:
                return model.predict(batch)
            except APIError:
                raise
            except model.input_errors as exc:
                raise rejected_input(model.name, model.version, f"{type(exc).__name__}: {exc}") from exc
            except Exception:
                log.exception("model %s v%s failed", model.name, model.version)  # the record holds the request id
                raise


def items_of(model: Model, items: Sequence) -> dict[str, list]:
    """The inputs of a single-input model given as its items (texts, files, rows): {input name: items}."""
    if len(model.inputs) != 1:
        raise BadRequest(f"model {model.name!r} takes several inputs {[s.name for s in model.inputs]}")
    return {model.inputs[0].name: list(items)}
