"""Prometheus metrics of the server, its models, its model store, its jobs and its prediction log
(multiprocess-safe under gunicorn); no Flask here, so every layer may count.

Under gunicorn, gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before any worker
imports prometheus_client, so every worker writes its samples to files there and
/metrics (app/observability.py) aggregates them; without it, the process-local registry is used.
"""
from __future__ import annotations

import functools
import os
import time
from contextlib import contextmanager

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess

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


@functools.lru_cache(maxsize=4096)
def child(metric, *labels: str):
    """metric.labels(*labels), looked up once: prometheus_client's labels() takes a lock and checks
    and converts every value on each call. Every label here takes a bounded set of values."""
    return metric.labels(*labels)


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
