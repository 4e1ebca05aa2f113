"""The one gunicorn configuration used by Procfile, app.yaml, Docker and `make serve`.

Its values come from the server's settings (app/config.py: PORT, WEB_CONCURRENCY, GUNICORN_THREADS,
GUNICORN_TIMEOUT, ...), built and checked here once, so a setting that cannot work stops the master
with its name before any worker starts.
"""
import contextlib
import gc
import importlib
import json
import os
import shutil
import tempfile

from gunicorn import glogging, util

from app.config import load_settings

settings = load_settings()

# Prometheus multiprocess mode: each worker writes its metrics to files here and
# /metrics aggregates them. Set before any worker imports prometheus_client.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", os.path.join(tempfile.gettempdir(), f"modelserve-metrics-{os.getpid()}"))

bind = f"{settings.host}:{settings.port}"
# One process per core: inference is CPU-bound and holds the GIL. One ONNX Runtime thread
# per worker and one worker per core served /classify faster than fewer workers with more
# ONNX threads each (benchmarks/results/classify.md).
workers = settings.web_concurrency
# gthread: threads take the connections, and the admission gate (app/admission.py) decides
# how many are let in per model (MAX_INFLIGHT, 8) and how many wait (MAX_QUEUED, 32); the rest get
# 503 + Retry-After.
# The threads must outnumber running + waiting, or excess requests would wait in gunicorn's
# own unbounded queue instead. 40 unguarded threads were slower than 4 (more GIL contention),
# but behind the gate 40 threads cost nothing measurable against 4 at concurrency 8 and keep
# the wait bounded at 32 and 128 (benchmarks/results/backpressure.md). Idle job long polls
# (POST /jobs/lease with `wait`) also hold a thread each, which 40 leaves room for.
worker_class = "gthread"
threads = settings.gunicorn_threads
# A worker that stops answering its master for this long is replaced. In gthread the
# master's heartbeat comes from the worker's main loop, not from request threads, so the
# 20 s job long poll does not count against it; the longest real inference (a 64-image
# V2 batch) takes well under a second.
timeout = settings.gunicorn_timeout
# On reload or shutdown, in-flight requests (long polls of up to 20 s included) may finish.
graceful_timeout = 30
keepalive = 5
# The app and its models are not preloaded: each worker creates them after fork (main.py),
# which is what ML runtimes with their own thread pools need, and what lets a reload
# (SIGHUP) bring up workers with new model versions and new code.
preload_app = False
# The libraries are: imported once here in the master, their code and module objects are
# shared by every worker (copy-on-write) instead of built again in each; so are the fitted
# scikit-learn estimators (on_starting below). No app, ONNX Runtime session, connection or
# thread of the app exists before the fork. ONNX Runtime is not imported here: imported in
# the master, workers sometimes died with "terminate called after throwing an instance of
# 'std::system_error'" when they stopped. What it saves of the server's memory: benchmarks/README.md
# (MODELSERVE_PRELOAD=false against the default). MODELSERVE_PRELOAD=false turns it off.
PRELOADED_LIBRARIES = ("numpy", "scipy.sparse", "sklearn.pipeline", "sklearn.linear_model", "sklearn.svm",
                       "sklearn.tree", "sklearn.feature_extraction.text", "joblib", "PIL.Image",
                       "PIL.PngImagePlugin", "PIL.JpegImagePlugin", "flask", "werkzeug", "jinja2", "sqlalchemy",
                       "sqlalchemy.dialects.sqlite", "sqlite3", "alembic", "alembic.command", "apispec",
                       "apispec_webframeworks.flask", "yaml", "swagger_ui_bundle", "prometheus_client",
                       "prometheus_client.multiprocess", "pythonjsonlogger.json", "logging.handlers",
                       "flask_limiter", "flask_cors")
if settings.preload:
    for _module in PRELOADED_LIBRARIES:
        with contextlib.suppress(ImportError):
            importlib.import_module(_module)
# Worker recycling is insurance, not a leak fix: the soak near peak load showed no RSS growth
# with recycling off (benchmarks/results/soak.md). A recycled worker reloads and warms every
# model, so it should be rare: at the measured peak, 100,000 requests last minutes per
# worker, and hours at normal load. The 10 % jitter keeps the workers from restarting together.
max_requests = settings.gunicorn_max_requests
max_requests_jitter = max_requests // 10
# `flask models reload` finds the master here and sends it SIGHUP: gunicorn starts
# new workers (which load every model version, the new ones included), then stops
# the old ones gracefully, so in-flight requests finish and none is dropped.
# The file lives in this checkout's instance/ folder (app/config.py default_pidfile), so that two checkouts
# on one machine never signal each other's server.
pidfile = str(settings.pidfile())
# The app writes one JSON line per request (request id, route, status, duration), so
# gunicorn's own access log would only repeat it; GUNICORN_ACCESSLOG=- turns it back on.
accesslog = settings.gunicorn_accesslog or None
errorlog = "-"


class Logger(glogging.Logger):
    """gunicorn's logger, with its access log only when GUNICORN_ACCESSLOG asks for it.

    gunicorn turns its access log on whenever a logging config is given (the JSON one below),
    which repeated every request line of the app's own log and took a visible share of a
    /review worker's samples (benchmarks/results/profile-review-round2-before.md).
    """

    def _compute_access_log_enabled(self):
        return bool(self.cfg.accesslog)


logger_class = Logger
# gunicorn's own lines (worker boots, timeouts, signals) in the app's JSON format, unless
# MODELSERVE_LOG_FORMAT=text: one parser for every line a log collector sees.
if settings.log_format == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "pythonjsonlogger.json.JsonFormatter",
                                "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
                                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"}}},
        "handlers": {"error_console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
                     "console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
        "loggers": {"gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
                    "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False}},
    }

# What one connection may send before the app sees it (gunicorn's defaults, stated): a request
# line of 4094 bytes, 100 header fields of 8190 bytes each. Bare gunicorn has no time limit on
# reading headers or bodies: a thread waits for a slow client, so production puts a buffering
# proxy in front (deploy/nginx; Heroku's router and App Engine's front end buffer too).
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190


def write_json_error(sock, status_int, reason, mesg):
    """gunicorn's own refusals (bad header bytes, request line too long) as JSON, like the app's."""
    body = json.dumps({"error": f"{reason}: {mesg}" if mesg else reason})
    util.write_nonblock(sock, (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json"
                               f"\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode("latin1", "replace"))


# The workers call util.write_error at the time of the error, so replacing it here (in the
# master, before they fork) is enough.
util.write_error = write_json_error


def on_starting(server):
    """Start with an empty metrics folder (stale files would add old counts); tell the workers who
    their master is (a V2 repository load or unload reloads every worker through it); read the
    scikit-learn models' files for the workers to share."""
    os.environ["MODELSERVE_GUNICORN_MASTER"] = str(os.getpid())
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)
    if settings.preload:
        preread_models(server)


def preread_models(server):
    """The fitted scikit-learn estimators of the models the workers will serve, read once here
    (app/models/shared.py), and this package's serving modules: the workers share their pages
    instead of each holding a copy (the memory it saves: benchmarks/README.md)."""
    from app import SERVING_MODULES
    from app.models.shared import preread
    from app.models.store import served_folder

    # With a shared store: what the cache held when the server started (a first start shares nothing).
    read = preread(served_folder(settings), settings.served_model_names())
    for module in SERVING_MODULES:  # this package's own modules too (not the app: each worker creates its own)
        importlib.import_module(module)
    server.log.info("read before forking, shared by the workers: %s", ", ".join(read) or "none")
    # Keep the collector from touching (and so copying) the shared objects, libraries included.
    gc.freeze()


def child_exit(server, worker):
    """Drop a dead worker's live gauges."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
