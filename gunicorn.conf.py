"""The one gunicorn configuration used by Procfile, app.yaml, Docker and `make serve`.

Every value can be overridden from the environment (PORT, WEB_CONCURRENCY,
GUNICORN_THREADS, GUNICORN_TIMEOUT).
"""
import os
import shutil
import tempfile

# Prometheus multiprocess mode: each worker writes its metrics to files here and
# /metrics aggregates them. Set before any worker imports prometheus_client.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", os.path.join(tempfile.gettempdir(), f"modelserve-metrics-{os.getpid()}"))

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
# One process per core: inference is CPU-bound and holds the GIL.
workers = int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 2))
# A few threads per worker overlap network I/O (uploads, slow clients) with compute.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "40"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 30
keepalive = 5
# Never preload: models are loaded in each worker after fork (main.py), which is
# what ML runtimes with their own thread pools need.
preload_app = False
# Recycle workers now and then so slow leaks cannot grow without bound.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "20000"))
max_requests_jitter = max_requests // 10
# `flask models reload` finds the master here and sends it SIGHUP: gunicorn starts
# new workers (which load every model version, the new ones included), then stops
# the old ones gracefully, so in-flight requests finish and none is dropped.
pidfile = os.environ.get("GUNICORN_PIDFILE", os.path.join(tempfile.gettempdir(), f"modelserve-gunicorn-{os.environ.get('PORT', '8000')}.pid"))
accesslog = "-"
errorlog = "-"


def on_starting(server):
    """Start with an empty metrics folder (stale files would add old counts)."""
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)


def child_exit(server, worker):
    """Drop a dead worker's live gauges."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
