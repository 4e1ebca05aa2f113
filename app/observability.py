"""The web side of observability: request ids, structured JSON logs, the access log and HTTP metrics per
request, and /metrics (the metrics themselves: app/metrics.py)."""
from __future__ import annotations

import atexit
import contextlib
import json
import logging
import platform
import queue
import re
import threading
import time

from flask import Flask, Response, current_app, g, has_request_context, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pythonjsonlogger.json import JsonFormatter

from app.ids import time_ordered_id
from app.metrics import (
    BUILD_INFO, ERRORS, KNOWN_METHODS, REQUEST_SECONDS, REQUESTS, JobQueueCollector, all_workers_registry, child,
)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
log = logging.getLogger("app.access")


def current_request_id() -> str:
    """The id of the request being served in this thread ("-" outside a request)."""
    return g.get("request_id", "-") if has_request_context() else "-"


def current_client() -> str | None:
    """The API key id of the request being served in this thread, when it presented a valid one (never the key)."""
    return g.get("client") if has_request_context() else None


def with_request_id(make_record):
    """A log record factory that adds the id of the request being served (``request_id``) to every record made
    while one is, so that a line logged below the views (a model's failure) says which request it was."""

    def make(*args, **kwargs):
        record = make_record(*args, **kwargs)
        if has_request_context() and "request_id" in g:
            record.request_id = g.request_id
        return record

    make.request_ids = True
    return make


def request_facts() -> tuple[str | None, str | None]:
    """(request id, client key id) of the request this thread serves, for the prediction log; (None, None)
    outside a request."""
    if not has_request_context():
        return None, None
    return g.get("request_id"), g.get("client")


ACCESS_FIELDS = ("request_id", "method", "path", "route", "status", "duration_ms")


class LineFormatter(JsonFormatter):
    """python-json-logger's JSON lines, with the access log's lines (one a request) built directly.

    An access record holds exactly the fields access_log() gives it, all strings and numbers,
    so its line is one json.dumps of them, the same text python-json-logger writes (a test
    checks it), at a fraction of the cost of the general path, which every other record
    takes.
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
    every record: a thread switch per request, a large share of a /review request's
    time in process (benchmarks/README.md, third round). This thread instead
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
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, "request", None, None)
    record.__dict__.update(request_id=request_id, method=method, path=path, route=route, status=status,
                           duration_ms=round(elapsed * 1000, 2))  # the request id set by with_request_id replaced
    log.handle(record)


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
    """Request id on every response and log record, a JSON access log line and HTTP metrics per request."""
    if not getattr(logging.getLogRecordFactory(), "request_ids", False):
        logging.setLogRecordFactory(with_request_id(logging.getLogRecordFactory()))

    @app.before_request
    def start_request():
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else time_ordered_id()
        g.started = time.perf_counter()

    @app.after_request
    def finish_request(response: Response):
        current, context = request._get_current_object(), g._get_current_object()
        request_id = getattr(context, "request_id", None) or time_ordered_id()
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
