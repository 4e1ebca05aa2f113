"""What one /review request costs in process, this server against the bare Flask reference, feature by feature.

Usage: .venv-serve/bin/python benchmarks/request_cost.py [--requests 1500] [--rounds 3]
                                                          [--out benchmarks/results/request_cost.md]

Both apps answer the same form post through Flask's test client in one process, so
no network, gunicorn or second core is involved: the difference is the work each
app does per request. Our app is measured as it serves (every feature on, access log
at INFO) and then with features taken away one at a time, to show what each costs;
the log is also measured with the standard library's QueueListener, which wakes its
thread for every record, against this project's LogWriter, which writes a batch every
50 ms. The model's own predict() is timed inside the requests of each app and in a
tight loop. Rounds alternate between the configurations; the table gives medians.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import queue
import statistics
import sys
import tempfile
import time
from logging.handlers import QueueHandler, QueueListener
from pathlib import Path

os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="request-cost-metrics-"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.compare import REVIEW  # noqa: E402
from benchmarks.loadgen import publish  # noqa: E402

METRICS = ("REQUESTS", "REQUEST_SECONDS", "ERRORS", "INFERENCE_SECONDS", "INFERENCE_ITEMS", "BATCH_SIZE",
           "IN_FLIGHT", "INFERENCE_FAILURES", "LAST_INFERENCE")


class NoMetric:
    """Stands in for a Prometheus metric: every call does nothing."""

    def labels(self, *args):
        return self

    def inc(self, *args):
        pass

    dec = set = observe = inc


class PredictTimer:
    """Wraps a model class's predict() to add up the time spent in it."""

    def __init__(self, model):
        self.cls, self.original, self.seconds, self.calls = type(model), type(model).predict, 0.0, 0

        def timed(instance, batch):
            started = time.perf_counter()
            try:
                return self.original(instance, batch)
            finally:
                self.seconds += time.perf_counter() - started
                self.calls += 1

        self.cls.predict = timed

    def restore(self) -> None:
        self.cls.predict = self.original

    def mean_ms(self) -> float:
        return 1000 * self.seconds / max(self.calls, 1)


def per_request_ms(client, count: int) -> float:
    """Mean milliseconds of `count` form posts of the benchmark's review."""
    data = {"review": REVIEW}
    started = time.perf_counter()
    for _ in range(count):
        client.post("/review", data=data)
    return 1000 * (time.perf_counter() - started) / count


@contextlib.contextmanager
def stdlib_listener():
    """The app's log records handled by a standard QueueListener (a thread switch per record)."""
    from app import observability

    observability._stop_writer()
    records: queue.SimpleQueue = queue.SimpleQueue()
    handler = logging.StreamHandler()
    handler.setFormatter(observability.JSON_FORMATTER)
    listener = QueueListener(records, handler)
    listener.start()
    logging.getLogger("app").handlers[:] = [QueueHandler(records)]
    try:
        yield
    finally:
        listener.stop()
        observability.configure_json_logging("INFO")


@contextlib.contextmanager
def without(what: str):
    """Our app with one group of features taken away for the block (the metrics wherever they are used: the
    request hooks and the inference tracking)."""
    from app import metrics, observability

    access = logging.getLogger("app.access")
    saved = {(module, name): getattr(module, name) for module in (metrics, observability) for name in METRICS
             if hasattr(module, name)}
    if what in ("log", "log+metrics"):
        access.disabled = True
    if what == "log+metrics":
        for module, name in saved:
            setattr(module, name, NoMetric())
    try:
        yield
    finally:
        access.disabled = False
        for (module, name), value in saved.items():
            setattr(module, name, value)


@contextlib.contextmanager
def quiet_stderr():
    """The JSON log lines (written to file descriptor 2 by a background thread) go nowhere for the block."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    sys.stderr.flush()
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def main() -> None:
    """Alternate the configurations, print and save the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from app import create_app
    from benchmarks.peers import bare_flask

    ours = create_app({"DATABASE_URL": f"sqlite:///{tempfile.mkdtemp()}/cost.db", "LOG_LEVEL": "INFO"})
    ours.extensions["model_registry"].load_all()
    clients = {"ours": ours.test_client(), "bare": bare_flask.app.test_client()}
    configurations = {
        "bare Flask (the reference)": ("bare", contextlib.nullcontext),
        "ours, every feature on (access log by LogWriter)": ("ours", contextlib.nullcontext),
        "ours, access log by the standard QueueListener": ("ours", stdlib_listener),
        "ours without the access log": ("ours", lambda: without("log")),
        "ours without the access log and metrics": ("ours", lambda: without("log+metrics")),
    }
    with quiet_stderr():
        for client in clients.values():
            per_request_ms(client, 300)  # warm up
        times = {name: [] for name in configurations}
        inside = {name: [] for name in configurations}
        for _ in range(args.rounds):
            for name, (app_name, context) in configurations.items():
                model = (ours.extensions["model_registry"].get("review_sentiment") if app_name == "ours"
                         else bare_flask.models.review)
                timer = PredictTimer(model)
                try:
                    with context():
                        times[name].append(per_request_ms(clients[app_name], args.requests))
                finally:
                    timer.restore()
                inside[name].append(timer.mean_ms())
        from benchmarks.peers.common import Models

        timer = PredictTimer(bare_flask.models.review)
        for _ in range(args.requests):
            Models.predict(bare_flask.models.review, [REVIEW])
        timer.restore()

    bare_ms = statistics.median(times["bare Flask (the reference)"])
    lines = [f"# /review in process: what each app does per request (Flask test client, {args.requests} requests "
             f"x {args.rounds} alternating rounds, medians, one process; .venv-serve)", "",
             "| configuration | ms per request | vs bare Flask | of which the model's predict(), ms |",
             "| --- | --- | --- | --- |"]
    for name in configurations:
        ms = statistics.median(times[name])
        lines.append(f"| {name} | {ms:.3f} | {ms / bare_ms:.2f}x | {statistics.median(inside[name]):.3f} |")
    lines += ["", f"The same predict() called in a tight loop, no request around it: {timer.mean_ms():.3f} ms."]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
