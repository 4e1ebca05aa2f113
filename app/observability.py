"""Request ids, structured JSON logs and Prometheus metrics (multiprocess-safe under gunicorn).

Under gunicorn, gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before any worker
imports prometheus_client, so every worker writes its samples to files there and
/metrics aggregates them; without it, the process-local registry is used.
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import os
import platform
import queue
import re
import threading
import time
from contextlib import contextmanager

from flask import Flask, Response, current_app, g, has_request_context, request
from prometheus_client import (
    CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess,
)
from pythonjsonlogger.json import JsonFormatter

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Every label takes a bounded set of values: route templates (or "(unmatched)"), these methods
# (any other name a client invents is "other"), and the status codes the app answers.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REQUESTS = Counter("modelserve_http_requests_total", "HTTP requests by route, method and status",
                   ["route", "method", "status"])
REQUEST_SECONDS = Histogram("modelserve_http_request_duration_seconds", "HTTP request latency by route",
                            ["route", "method"], buckets=LATENCY_BUCKETS)
ERRORS = Counter("modelserve_http_errors_total", "HTTP responses with status >= 400, by status", ["status"])
INFERENCE_SECONDS = Histogram("modelserve_inference_duration_seconds", "Model inference latency (one batch)",
                              ["model", "version"], buckets=LATENCY_BUCKETS)
INFERENCE_ITEMS = Counter("modelserve_inference_items_total", "Items (texts, images) predicted",
                          ["model", "version"])
BATCH_SIZE = Histogram("modelserve_inference_batch_size", "Items per prediction (requests merged by batching included)",
                       ["model", "version"], buckets=(1, 2, 4, 8, 16, 32, 64, 128))
IN_FLIGHT = Gauge("modelserve_inference_in_flight", "Inferences running now", ["model", "version"],
                  multiprocess_mode="livesum")
INFERENCE_FAILURES = Counter("modelserve_inference_failures_total", "Inference batches that raised",
                             ["model", "version"])
LAST_INFERENCE = Gauge("modelserve_inference_last_timestamp_ms", "When the model version last ran (ms since epoch)",
                       ["model", "version"], multiprocess_mode="max")
MODEL_LOAD_SECONDS = Gauge("modelserve_model_load_seconds", "Time to load, verify and warm a model version",
                           ["model", "version"], multiprocess_mode="max")
MODEL_STORE_UP = Gauge("modelserve_model_store_up", "1 while the shared model store answers this worker's polls, "
                       "0 during an outage (models keep serving from the cache)", multiprocess_mode="livemin")
MODEL_STORE_REFUSALS = Counter("modelserve_model_store_refusals_total",
                               "Versions in the model store refused by the cache (hash mismatch, missing file...)",
                               ["model", "version"])

JOB_LEASE_EXPIRIES = Counter("modelserve_job_lease_expiries_total",
                             "Leases that ran out before their worker reported (job requeued or failed)")
PREDICTIONS_DROPPED = Counter("modelserve_prediction_log_dropped_total",
                              "Prediction records not logged (the log's queue was full, or its database failed); "
                              "the requests were answered", ["model"])
DRIFT_SCORE = Gauge("modelserve_drift_score", "Largest population stability index of a model version's inputs and "
                    "predictions against its reference, over the last monitoring window", ["model", "version"],
                    multiprocess_mode="mostrecent")
DRIFTED = Gauge("modelserve_drifted", "1 while a model version's live inputs or predictions have drifted from its "
                "reference (a PSI over the threshold), else 0", ["model", "version"], multiprocess_mode="mostrecent")
JOB_LEASES_UNACKNOWLEDGED = Counter("modelserve_job_leases_unacknowledged_total",
                                    "Leases handed out that no worker acknowledged in time (job requeued, uncounted)")
JOB_SECONDS = Histogram("modelserve_job_duration_seconds", "Jobs from submission to their final outcome",
                        ["outcome"], buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600, 86400))
BUILD_INFO = Gauge("modelserve_build_info", "Always 1: the running code's version and Python", ["version", "python"],
                   multiprocess_mode="max")
for outcome in ("succeeded", "failed"):  # the series exist before the first job finishes
    JOB_SECONDS.labels(outcome)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
log = logging.getLogger("app.access")


@functools.lru_cache(maxsize=4096)
def child(metric, *labels: str):
    """metric.labels(*labels), looked up once: prometheus_client's labels() takes a lock and checks
    and converts every value on each call. Every label here takes a bounded set of values."""
    return metric.labels(*labels)


def current_request_id() -> str:
    """The id of the request being served in this thread ("-" outside a request)."""
    from flask import has_request_context

    return g.get("request_id", "-") if has_request_context() else "-"


def current_client() -> str | None:
    """The API key id of the request being served in this thread, when it presented a valid one (never the key)."""
    from flask import has_request_context

    return g.get("client") if has_request_context() else None


def request_facts() -> tuple[str | None, str | None]:
    """(request id, client key id) of the request this thread serves, for the prediction log; (None, None)
    outside a request."""
    if not has_request_context():
        return None, None
    return g.get("request_id"), g.get("client")


def new_request_id() -> str:
    """32 random hex digits (the same form as uuid4().hex, at a fifth of its cost)."""
    return os.urandom(16).hex()


@contextmanager
def track_inference(name: str, version: str, items: int):
    """Time one inference batch and count it, with an in-flight gauge around it."""
    gauge = child(IN_FLIGHT, name, version)
    gauge.inc()
    started = time.perf_counter()
    try:
        yield
    except Exception:
        child(INFERENCE_FAILURES, name, version).inc()
        raise
    else:
        child(INFERENCE_SECONDS, name, version).observe(time.perf_counter() - started)
        child(INFERENCE_ITEMS, name, version).inc(items)
        child(BATCH_SIZE, name, version).observe(items)
    finally:
        child(LAST_INFERENCE, name, version).set(time.time() * 1000)
        gauge.dec()


def all_workers_registry() -> CollectorRegistry:
    """A registry of every worker's samples (gunicorn's multiprocess folder), else of this process."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(ProcessMetrics())
    return registry


class ProcessMetrics:
    """The process-local registry's samples, for a server without gunicorn's multiprocess folder."""

    def collect(self):
        """Everything REGISTRY has."""
        return REGISTRY.collect()


def metric_samples() -> dict[tuple[str, tuple], float]:
    """Every worker's samples by (name, sorted labels)."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in all_workers_registry().collect() for sample in family.samples}


def inference_statistics(name: str, version: str, samples: dict | None = None) -> dict:
    """One model version's statistics in the shape of Triton's statistics extension (all workers together)."""
    samples = metric_samples() if samples is None else samples
    labels = (("model", name), ("version", version))

    def value(metric):
        return samples.get((metric, labels), 0.0)

    executions = int(value("modelserve_inference_duration_seconds_count"))
    nanoseconds = int(value("modelserve_inference_duration_seconds_sum") * 1e9)
    failures = int(value("modelserve_inference_failures_total"))
    nothing = {"count": 0, "ns": 0}
    return {
        "name": name, "version": version, "last_inference": int(value("modelserve_inference_last_timestamp_ms")),
        "inference_count": int(value("modelserve_inference_items_total")), "execution_count": executions,
        "inference_stats": {"success": {"count": executions, "ns": nanoseconds}, "fail": {"count": failures, "ns": 0},
                            "queue": nothing, "compute_input": nothing,
                            "compute_infer": {"count": executions, "ns": nanoseconds}, "compute_output": nothing},
        "batch_stats": [],
    }


def record_model_load(name: str, version: str, seconds: float) -> None:
    """Export how long a model version took to become ready; its inference series start at zero."""
    MODEL_LOAD_SECONDS.labels(name, version).set(seconds)
    INFERENCE_ITEMS.labels(name, version)
    INFERENCE_SECONDS.labels(name, version)
    INFERENCE_FAILURES.labels(name, version)


def record_store_state(up: bool) -> None:
    """Whether the shared model store answered the last sync."""
    MODEL_STORE_UP.set(1 if up else 0)


def record_store_refusal(name: str, version: str) -> None:
    """Count a version the store holds that failed verification."""
    MODEL_STORE_REFUSALS.labels(name, version).inc()


class JobQueueCollector:
    """modelserve_jobs{model, status}, read from the job store when /metrics is scraped (the queue is
    shared by every worker and server, so it is counted once, at the source)."""

    def __init__(self, store):
        """Keep the store."""
        self.store = store

    def collect(self):
        """One gauge family; a database that cannot answer gives modelserve_job_store_up 0 instead."""
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("modelserve_job_store_up", "1 when the job store answered this scrape")
        try:
            counts = self.store.counts_by_model()
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database is away
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily("modelserve_jobs", "Jobs in the store by model and status", labels=["model", "status"])
        for (model, status), count in sorted(counts.items()):
            jobs.add_metric([model, status], count)
        yield jobs


ACCESS_FIELDS = ("request_id", "method", "path", "route", "status", "duration_ms")


class LineFormatter(JsonFormatter):
    """python-json-logger's JSON lines, with the access log's lines (one a request) built directly.

    An access record holds exactly the fields access_log() gives it, all strings and numbers,
    so its line is one json.dumps of them, the same text python-json-logger writes (a test
    checks it), at about half the cost (6.3 -> 3.5 us a line); every other record takes
    python-json-logger's general path.
    """

    _second: tuple[int, str] = (-1, "")  # the last second formatted, and its text

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """logging's default "2026-01-31 12:00:00,123", its date and time worked out once a second."""
        if datefmt:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached = self._second
        if cached[0] != second:
            cached = self._second = (second, time.strftime(self.default_time_format, self.converter(record.created)))
        return self.default_msec_format % (cached[1], record.msecs)

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON object."""
        if record.name != log.name or record.args or record.exc_info or record.stack_info or record.msg != "request":
            return super().format(record)
        try:
            fields = {name: record.__dict__[name] for name in ACCESS_FIELDS}
        except KeyError:
            return super().format(record)
        return json.dumps({"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                           "message": record.msg, **fields})


JSON_FORMATTER = LineFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                               rename_fields={"asctime": "time", "levelname": "level", "name": "logger"})
# How long a log record may wait in memory before it is written.
LOG_WRITE_INTERVAL_SECONDS = 0.05


class LogWriter:
    """One background thread that formats the queued log records and writes them, a batch at a time.

    Request threads only put records on a queue (RecordQueue). Profiling showed them
    spending a fifth of their time in the access log when they wrote it themselves, half
    of it waiting for the stream's lock (benchmarks/results/profile-review-before.md).
    The standard QueueListener then moved the writing to one thread, but it woke for
    every record: a thread switch per request, which cost a /review request 0.21 ms of
    its 1.12 ms in process (benchmarks/README.md, third round). This thread instead
    wakes every LOG_WRITE_INTERVAL_SECONDS, takes whatever is queued and writes it with
    one write and one flush; `stop()` writes the rest.
    """

    def __init__(self, records: queue.SimpleQueue, handler: logging.StreamHandler,
                 interval: float = LOG_WRITE_INTERVAL_SECONDS):
        """Remember the queue, the handler whose formatter and stream are used, and the interval."""
        self.records, self.handler, self.interval = records, handler, interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)

    def start(self) -> None:
        """Start writing in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Write everything queued so far and end the thread."""
        self._stopping.set()
        self._thread.join()
        self.write_queued()

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            self.write_queued()

    def write_queued(self) -> None:
        """Format every record now in the queue and write them all at once."""
        lines = []
        with contextlib.suppress(queue.Empty):
            while True:
                record = self.records.get_nowait()
                try:
                    lines.append(self.handler.format(record) + "\n")
                except Exception:  # a record that cannot be formatted is reported, the others are written
                    self.handler.handleError(record)
        if lines:
            try:
                self.handler.stream.write("".join(lines))
                self.handler.flush()
            except Exception:  # e.g. a closed stderr at exit: nothing better to do than the stdlib's report
                self.handler.handleError(logging.makeLogRecord({"msg": "log write failed"}))


class RecordQueue(logging.Handler):
    """Puts each record on the log writer's queue, as it is: the writer formats it.

    The standard QueueHandler formats the message and copies the record in the request's
    thread (so that the record can cross a process boundary), and takes a lock per record;
    a queue read by a thread of the same process needs neither.
    """

    def __init__(self, records: queue.SimpleQueue):
        """Records go to `records`."""
        super().__init__()
        self.records = records

    def handle(self, record: logging.LogRecord) -> logging.LogRecord | bool:
        """Queue the record unless a filter drops it."""
        kept = self.filter(record)  # a filter may hand back a changed record (Python 3.12)
        if kept:
            self.records.put(kept if isinstance(kept, logging.LogRecord) else record)
        return kept

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the record."""
        self.records.put(record)


_writer: LogWriter | None = None


def configure_json_logging(level: str) -> None:
    """One JSON object per log line on stderr, for the app's loggers, written off the request threads."""
    global _writer
    if _writer is None:
        atexit.register(_stop_writer)  # write what is queued before the process ends
    _stop_writer()  # a second app in the same process (tests): flush and replace
    handler = logging.StreamHandler()
    handler.setFormatter(JSON_FORMATTER)
    records: queue.SimpleQueue = queue.SimpleQueue()
    _writer = LogWriter(records, handler)
    _writer.start()
    logger = logging.getLogger("app")
    logger.handlers[:] = [RecordQueue(records)]
    logger.propagate = False
    logger.setLevel(level)


def _stop_writer() -> None:
    """Write what is queued and stop the log writer thread, if one runs."""
    global _writer
    if _writer is not None:
        _writer.stop()
        _writer = None


def access_log(request_id: str, method: str, path: str, route: str, status: int, elapsed: float) -> None:
    """The request's line in the access log (app.access, INFO), its fields as the record's attributes.

    The record is made and handed to the handlers directly: Logger.info() would first walk the
    stack to find the caller's file and line, which an access line does not report.
    """
    log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, "request", None, None, extra={
        "request_id": request_id, "method": method, "path": path, "route": route, "status": status,
        "duration_ms": round(elapsed * 1000, 2)}))


def metrics_response() -> Response:
    """The Prometheus exposition of every worker's metrics.
    ---
    get:
      summary: Prometheus metrics
      tags: [health]
      responses:
        200:
          description: metrics in the Prometheus text format
          content: {text/plain: {schema: {type: string}}}
    """
    registry = all_workers_registry()
    registry.register(JobQueueCollector(current_app.extensions["job_store"]))
    # content_type, not mimetype: the type already carries its charset (Flask would add a second one)
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    """Request id on every response, a JSON access log line and HTTP metrics per request."""

    @app.before_request
    def start_request():
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else new_request_id()
        g.started = time.perf_counter()

    @app.after_request
    def finish_request(response: Response):
        current, context = request._get_current_object(), g._get_current_object()
        request_id = getattr(context, "request_id", None) or new_request_id()
        response.headers["X-Request-ID"] = request_id
        route = current.url_rule.rule if current.url_rule else "(unmatched)"
        elapsed = time.perf_counter() - getattr(context, "started", time.perf_counter())
        method = current.method if current.method in KNOWN_METHODS else "other"
        status = response.status_code
        child(REQUESTS, route, method, str(status)).inc()
        child(REQUEST_SECONDS, route, method).observe(elapsed)
        if status >= 400:
            child(ERRORS, str(status)).inc()
        if route != "/metrics" and log.isEnabledFor(logging.INFO):
            access_log(request_id, current.method, current.path, route, status, elapsed)
        return response

    app.add_url_rule("/metrics", "metrics", metrics_response)
    from app import __version__

    BUILD_INFO.labels(__version__, platform.python_version()).set(1)
