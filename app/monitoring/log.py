"""The prediction log: a record of every inference, written off the request path.

``record`` is all a request pays: it puts (model, decoded batch, outputs, latency, request id,
client) on a bounded in-memory queue and returns. A writer thread summarizes each item
(app/monitoring/profile.py), hands the rows to its sink in batches (the database, or Parquet files:
app/monitoring/sinks.py), and keeps the log within its retention (age and rows per model). When the
queue is full, or the sink fails, records are dropped and counted
(``modelserve_prediction_log_dropped_total``), never the request; a clean stop writes what is queued.
The input itself is kept only for the models named in MONITOR_PAYLOADS, for a sampled share of
their requests, up to MONITOR_PAYLOAD_MAX_BYTES each.
"""
from __future__ import annotations

import atexit
import datetime as dt
import hashlib
import json
import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa

from app.jobs.execute import job_inputs
from app.monitoring.sinks import DatabaseSink, ParquetSink, SinkFailed
from app.monitoring.profile import REFERENCE_FILE, Reference, answer_columns, answers, image_features, number_features, text_features
from app.metrics import PREDICTIONS_DROPPED

log = logging.getLogger(__name__)
# How long the writer sleeps while records gather: each write (a transaction, a wake-up) has a cost of its own,
# which fewer, larger batches share; a record is readable this long after its answer at most, or at once after
# flush().
GATHER_SECONDS = 1.0
BATCH_RECORDS = 2000  # the most queued inferences written in one transaction


@dataclass
class MonitorSettings:
    """How much is logged and kept."""

    sample_rate: float = 1.0
    queue_size: int = 2000
    payloads: dict[str, float] = field(default_factory=dict)  # model -> share of its requests whose input is kept
    payload_max_bytes: int = 65536
    retention_seconds: float = 7 * 86400
    max_rows_per_model: int = 100_000
    parquet: str = ""  # a folder or URL: the log is kept as Parquet files there instead of in the database
    parquet_roll_seconds: float = 60.0
    # How often the writer refreshes the drift gauges of the versions it logged, so that an alert sees
    # drift without anyone asking for a report.
    gauge_seconds: float = 60.0

    @classmethod
    def from_settings(cls, settings) -> "MonitorSettings":
        """From the server's MONITOR_* settings (app/config.py)."""
        return cls(settings.monitor_sample_rate, settings.monitor_queue_size, dict(settings.monitor_payloads),
                   settings.monitor_payload_max_bytes, settings.monitor_retention_seconds,
                   settings.monitor_max_rows_per_model, settings.monitor_parquet,
                   settings.monitor_parquet_roll_seconds)


def reference_of(model) -> Reference | None:
    """A model version's reference profile, when its manifest lists one (read once per model object)."""
    cached = getattr(model, "_monitor_reference", False)
    if cached is not False:
        return cached
    reference = None
    if REFERENCE_FILE in model.manifest.artifacts:
        try:
            reference = Reference.read(model.manifest.artifact_path(REFERENCE_FILE))
        except (OSError, ValueError, KeyError) as exc:
            log.warning("model %s v%s: unreadable %s (%s); no drift for it", model.name, model.version,
                        REFERENCE_FILE, exc)
    model._monitor_reference = reference
    return reference


def summarize(model, batch, reference: Reference | None) -> list[dict[str, float]] | None:
    """The features of each item of a decoded batch (None for a model of several inputs, or a batch of a form
    the monitor does not know)."""
    if len(model.inputs) != 1 or not isinstance(batch, Mapping) or model.inputs[0].name not in batch:
        return None
    spec, column = model.inputs[0], batch[model.inputs[0].name]
    if spec.datatype == "BYTES" and spec.content == "image" or getattr(column, "ndim", 0) == 4:
        return image_features(column, getattr(model, "cell_check", None))
    if spec.datatype == "BYTES":
        return text_features(column, reference.vocabulary_set() if reference else None)
    return number_features(column)


def text_column(model, batch) -> list | None:
    """The texts of a decoded batch of a one-input model (what their digests are taken of), else None."""
    column = batch.get(model.inputs[0].name) if isinstance(batch, Mapping) and len(model.inputs) == 1 else None
    return column if isinstance(column, list) else None


def digest(text) -> str | None:
    """The SHA-256 of a text (what review feedback is joined on); None for anything else."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest() if isinstance(text, str) else None


def features_json(features: list[dict[str, float]] | None, count: int) -> list[str]:
    """Each item's features as JSON text, the same as json.dumps gives. The items of a batch share their
    feature names, so one template formats them (json.dumps per item cost the writer more than the rest of
    the row); an item with other names, or a value that is not a finite float (JSON's NaN), takes json.dumps."""
    if not features:
        return ["{}"] * count
    names = tuple(features[0])
    template = "{" + ", ".join(f"{json.dumps(name)}: %r" for name in names) + "}"
    texts = []
    for row in features:
        values = tuple(row.values())
        total = sum(values)  # a float only when every value is one, finite only when every value is
        texts.append(template % values if type(total) is float and total - total == 0.0 and tuple(row) == names
                     else json.dumps(row))
    return texts


def model_groups(entries: list[tuple]) -> list[list[tuple]]:
    """Queued inferences grouped by the model version that answered them, in their order within a group."""
    groups: dict[int, list[tuple]] = {}
    for entry in entries:
        groups.setdefault(id(entry[0]), []).append(entry)
    return list(groups.values())


def merged_outputs(outputs: list[dict], counts: list[int]) -> dict:
    """One inference's output columns from several (the columns every one of them has)."""
    if len(outputs) == 1:
        return outputs[0]
    names = set(outputs[0]).intersection(*outputs[1:])
    return {name: np.concatenate([part[name] for part in outputs])
            if all(isinstance(part[name], np.ndarray) for part in outputs)
            else [value for part in outputs for value in list(part[name])] for name in names}


def as_bytes(item) -> bytes:
    """A raw input as stored: a file's bytes, a text in UTF-8, anything else as JSON."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, str):
        return item.encode("utf-8", "surrogatepass")
    return json.dumps(item, default=str).encode("utf-8")


@dataclass(frozen=True)
class JobPayload:
    """A job's payload in the queue, decoded by the writer (the request that posts the result never decodes it)."""

    payload: bytes


class PredictionLog:
    """A bounded queue of inference records and the thread that writes them."""

    def __init__(self, engine: sa.Engine, settings: MonitorSettings,
                 request_facts: Callable[[], tuple[str | None, str | None]] = lambda: (None, None)):
        """Keep the log in ``engine``'s database, or in the Parquet files ``settings.parquet`` names (feedback stays in
        the database); ``request_facts`` gives the request id and client of the request being served."""
        self.engine, self.settings, self.request_facts = engine, settings, request_facts
        self.sink = ParquetSink(settings.parquet, settings.parquet_roll_seconds) if settings.parquet \
            else DatabaseSink(engine)
        # A plain deque: appending is atomic, and a request pays no lock or condition to queue its record. Only the
        # writer takes from it; ``writing`` counts what it has taken and not yet written.
        self.queue: deque = deque()
        self.writing = 0
        self._wake = threading.Event()  # flush() wakes the writer rather than waiting out its gathering
        self._writer: threading.Thread | None = None
        self._start = threading.Lock()
        self._last_retention = 0.0
        self._last_gauges = time.monotonic()
        self._logged: dict[tuple[str, str], Any] = {}  # versions logged since the gauges were refreshed

    # -- the request path ----------------------------------------------------------------------

    def record(self, model, batch, outputs: dict, seconds: float, protocol: str, raw: Sequence | None = None,
               request_id: str | None = None, client: str | None = None) -> None:
        """Queue one inference (a batch of items; ``raw``: the items as the request sent them, for payload
        capture); never raises, never waits."""
        try:
            if self.settings.sample_rate < 1.0 and random.random() >= self.settings.sample_rate:
                return
            self._ensure_writer()
            if len(self.queue) >= self.settings.queue_size:  # threads racing past the check add one each at most
                PREDICTIONS_DROPPED.labels(model.name).inc(model.batch_length(batch) if batch is not None else 1)
                return
            if request_id is None:
                request_id, client = self.request_facts()
            self.queue.append((model, batch, outputs, seconds, protocol, request_id, client, time.time(),
                               self.captured(model.name, raw)))
        except Exception:  # a log that fails must not fail the answer
            log.exception("prediction log: could not queue a record of %s", model.name)
            PREDICTIONS_DROPPED.labels(model.name).inc()

    def record_job(self, model, payload: bytes, rows: list[dict], seconds: float, job_id: str,
                   client: str | None) -> None:
        """Queue a job's answer (posted by a worker): its payload is decoded by the writer, off the request path."""
        self.record(model, JobPayload(payload), answer_columns(rows), seconds, "job", [payload], job_id, client)

    def captured(self, name: str, raw: Sequence | None) -> list[bytes | None] | None:
        """The inputs kept of a request: a sampled share of a capturing model's items, cut to the size cap
        (taken now, so that the queue never holds a whole upload)."""
        share = self.settings.payloads.get(name, 0.0)
        if not share or raw is None:
            return None
        return [as_bytes(item)[:self.settings.payload_max_bytes] if random.random() < share else None
                for item in raw]

    def _ensure_writer(self) -> None:
        if self._writer is None or not self._writer.is_alive():
            with self._start:
                if self._writer is None or not self._writer.is_alive():
                    self._writer = threading.Thread(target=self._run, name="prediction-log", daemon=True)
                    self._writer.start()
                    atexit.register(self.close)

    # -- the writer ----------------------------------------------------------------------------

    def _run(self) -> None:
        # Sleep while a batch gathers, then take it at once: waiting on the queue for each record would wake this
        # thread (and hand it the GIL) once per request, which costs the requests more than writing their records.
        while True:
            if len(self.queue) < BATCH_RECORDS:
                self._wake.wait(GATHER_SECONDS)
                self._wake.clear()
            if not self.queue:
                self.tick()  # idle: let the sink write what has waited its time
                continue
            self.writing = min(len(self.queue), BATCH_RECORDS)  # counted before taken, so flush() never misses them
            entries = [self.queue.popleft() for _ in range(self.writing)]
            try:
                self.write(entries)
                self.refresh_gauges([entry[0] for entry in entries])
            finally:
                self.writing = 0

    def unwritten(self) -> int:
        """Records queued or being written."""
        return len(self.queue) + self.writing

    def write(self, entries: list[tuple]) -> None:
        """Summarize the entries and hand their rows to the sink; when it fails, count them dropped."""
        rows = [row for group in model_groups(entries) for row in self.rows(group)]
        try:
            if rows:
                self.sink.write(rows)
        except Exception as exc:
            self.lost(exc, Counter(row[0] for row in rows))
        self.tick()
        if time.monotonic() - self._last_retention > 60:
            self._last_retention = time.monotonic()
            try:
                self.sink.enforce_retention(self.settings.retention_seconds, self.settings.max_rows_per_model)
            except Exception as exc:
                log.warning("prediction log: retention not enforced, the store failed: %s", exc)

    def tick(self) -> None:
        """Let the sink write what has waited its time."""
        try:
            self.sink.tick()
        except SinkFailed as exc:
            self.lost(exc, exc.lost)

    def close(self) -> None:
        """Write what is queued and buffered (a clean stop)."""
        self.flush(5.0)
        try:
            self.sink.close()
        except SinkFailed as exc:
            self.lost(exc, exc.lost)

    @staticmethod
    def lost(exc: Exception, counts: Mapping[str, int]) -> None:
        """Count records the sink could not keep."""
        log.warning("prediction log: %d records dropped, the store failed: %s", sum(counts.values()), exc)
        for name, count in counts.items():
            PREDICTIONS_DROPPED.labels(name).inc(count)

    def rows(self, entries: list[tuple]) -> list[tuple]:
        """The table rows (tuples in COLUMNS order) of queued inferences of one model version: their batches
        summarized together, so that the cost per record stays small."""
        model = entries[0][0]
        try:
            batches = [model.decode(job_inputs(model, e[1].payload)[0]) if isinstance(e[1], JobPayload) else e[1]
                       for e in entries]
            counts = [model.batch_length(batch) for batch in batches]
            batch = batches[0] if len(batches) == 1 else model.concat_batches(batches)
            features = summarize(model, batch, reference_of(model))
            labels, scores = answers(merged_outputs([e[2] for e in entries], counts), sum(counts))
        except Exception:
            if len(entries) > 1:  # one odd record must not cost the others theirs
                return [row for entry in entries for row in self.rows([entry])]
            log.exception("prediction log: could not summarize a record of %s", model.name)
            PREDICTIONS_DROPPED.labels(model.name).inc()
            return []
        rows, position, version, texts = [], 0, str(model.version), text_column(model, batch)
        features = features_json(features, sum(counts))
        for (_, _, _, seconds, protocol, request_id, client, when, payloads), count in zip(entries, counts):
            for i in range(count):
                rows.append((model.name, version, when, seconds * 1000.0, protocol, request_id, i, client,
                             digest(texts[position]) if texts is not None else None,
                             features[position], labels[position], scores[position],
                             payloads[i] if payloads and i < len(payloads) else None))
                position += 1
        return rows

    def refresh_gauges(self, models: list) -> None:
        """Every ``gauge_seconds``, recompute the drift of the versions logged since (their default window),
        which sets their Prometheus gauges; a failure is logged and waits for the next turn."""
        from app.monitoring.report import monitoring_report

        for model in models:
            self._logged[(model.name, str(model.version))] = model
        if time.monotonic() - self._last_gauges < self.settings.gauge_seconds:
            return
        self._last_gauges = time.monotonic()
        for model in self._logged.values():
            try:
                monitoring_report(self, model, flush=False)
            except Exception as exc:
                log.warning("prediction log: drift of %s v%s not refreshed: %s", model.name, model.version, exc)
        self._logged.clear()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every queued record is written (tests, and a clean stop)."""
        deadline = time.monotonic() + timeout
        while self.unwritten() and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.01)

    # -- reading -------------------------------------------------------------------------------

    def window(self, model: str, version: str | None = None, last: int | None = None,
               since: dt.datetime | None = None) -> list[dict[str, Any]]:
        """The logged rows of a model (one version, or all), newest first: the last ``last``, or since ``since``."""
        return self.sink.window(model, None if version is None else str(version),
                                last or self.settings.max_rows_per_model, since)
