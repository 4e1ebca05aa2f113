"""Every setting in one place, with its default.

Settings are read from environment variables named ``MODELSERVE_<NAME>``
(values are parsed as JSON when they can be, so ``MODELSERVE_MAX_TEXT_CHARS=20000``
is an int). ``DATABASE_URL`` and ``PORT`` are also read under their usual
names because Heroku and App Engine set them. The README documents each one.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "MODELSERVE"


class DefaultConfig:
    """Defaults; overridden by the environment, then by a test config."""

    # Where model versions live: <MODEL_DIR>/<name>/<version>/manifest.json.
    MODEL_DIR = str(PROJECT_ROOT / "saved_models")
    # A store shared by many instances (docs/deployment.md, "Many machines"): s3://bucket/prefix,
    # gs://bucket/prefix or file:///mnt/models (needs requirements-store.txt). Empty: MODEL_DIR,
    # served in place on this machine.
    MODEL_STORE = ""
    # This instance's verified copy of a shared store's versions, its size limit, and how often
    # each worker checks the store's control files for changes.
    MODEL_CACHE = str(PROJECT_ROOT / "instance" / "model-cache")
    MODEL_CACHE_MAX_BYTES = 10 * 1024 ** 3
    MODEL_POLL_SECONDS = 10
    # Comma-separated model names to load; empty means every model found.
    MODELS = ""
    # Embedded SQLite by default, so the server runs with no external service.
    DATABASE_URL = "sqlite:///" + str(PROJECT_ROOT / "instance" / "modelserve.db")
    # The database's budget per worker process: connections in use at once, how long a request
    # waits for one before its 503 + Retry-After, and how long one statement (or a wait for a lock)
    # may take. A stuck database then holds a few threads for seconds, never inference's or health's.
    DATABASE_POOL_SIZE = 4
    DATABASE_WAIT_SECONDS = 0.25
    DATABASE_TIMEOUT_SECONDS = 5
    # Each worker brings the schema up to date at start (under a lock; a no-op when current).
    # False where `flask --app app db upgrade` runs as a release step (Heroku's release phase, the
    # Kubernetes Job): workers then only check, and database endpoints answer 503 until it has run.
    AUTO_MIGRATE = True
    # Largest request body accepted, in bytes (Flask answers 413 beyond it).
    MAX_CONTENT_LENGTH = 10 * 1024 * 1024
    # Longest review accepted, in characters (the longest IMDb review is 13,704).
    MAX_TEXT_CHARS = 50_000
    # Most characters of text in one inference request, all items together (a work budget:
    # text preprocessing costs about 1 ms per 10,000 characters).
    MAX_BATCH_TEXT_CHARS = 500_000
    # Largest decoded image accepted, in pixels (checked from the header, before decoding).
    MAX_IMAGE_PIXELS = 4_000_000
    # Most decoded pixels in one inference request, all images together (a memory budget:
    # 64 images at the single-image limit would need about 3 GB).
    MAX_BATCH_IMAGE_PIXELS = 16_000_000
    # Backpressure, per worker process: inference requests let in at once, and how many more
    # may wait for a slot; beyond that (or past the deadline) the answer is 503 + Retry-After.
    # Each model still predicts one batch at a time (app/models/batching.py), so the requests
    # let in beyond the first only read their input and queue for the model, where a batching
    # model merges them into one prediction. gunicorn's GUNICORN_THREADS must exceed the two
    # together, or requests wait in gunicorn's own queue where no bound applies.
    MAX_INFLIGHT = 8
    MAX_QUEUED = 32
    # Adaptive batching per model, overriding the model manifests' "batching" entries, as JSON:
    # {"review_sentiment": {"max_batch_size": 1}} turns it off for that model.
    BATCHING: dict = {}
    # Longest a request may wait for an inference slot, in seconds (clients may ask for
    # less with the X-Request-Timeout header).
    REQUEST_DEADLINE_SECONDS = 1.0
    # A refusal for a full queue is sent after this pause, so that clients retrying at once
    # cannot keep the worker busy refusing them (measured in benchmarks/results/backpressure.md).
    SHED_DELAY_SECONDS = 0.25
    # Longest a user's Python model (the `python` runtime, run in a process of its own) may take for
    # one call before the call is answered 503 and the model's process is started again.
    PYTHON_MODEL_TIMEOUT_SECONDS = 30
    # ONNX Runtime intra-op threads per worker (1 per worker is fastest with one worker per core).
    ONNX_THREADS = 1
    # The prediction log (app/monitoring/log.py): a record of every inference (model, version, time,
    # latency, request id, client key id, a summary of the input and the answer) for drift and live
    # accuracy; MONITOR_SAMPLE_RATE of the requests, through a queue of MONITOR_QUEUE_SIZE inferences
    # (full: records dropped and counted, never requests); kept MONITOR_RETENTION_SECONDS and at most
    # MONITOR_MAX_ROWS_PER_MODEL rows a model. The inputs themselves only for the models named in
    # MONITOR_PAYLOADS ("review_sentiment:0.1": a tenth of its requests), cut at MONITOR_PAYLOAD_MAX_BYTES.
    MONITOR = True
    MONITOR_SAMPLE_RATE = 1.0
    MONITOR_QUEUE_SIZE = 2000
    MONITOR_PAYLOADS = ""
    MONITOR_PAYLOAD_MAX_BYTES = 65536
    MONITOR_RETENTION_SECONDS = 604800
    MONITOR_MAX_ROWS_PER_MODEL = 100_000
    # Job queue: lease length (renewed by heartbeats), attempts before a job fails,
    # how long finished jobs keep their payload and result, and the long-poll cap.
    JOB_LEASE_SECONDS = 60
    # A lease handed out must be acknowledged (the worker's first heartbeat) within this many seconds, or
    # the job goes back to the queue, uncounted; 0: no acknowledgement asked.
    JOB_ACK_SECONDS = 10
    JOB_MAX_ATTEMPTS = 3
    JOB_RETENTION_SECONDS = 86400
    JOB_MAX_WAIT_SECONDS = 20
    # Queued jobs no worker takes within this many seconds expire (payload deleted).
    JOB_QUEUED_SECONDS = 86400
    # Bounds per client (API key, else address) and in total: jobs waiting, and bytes of payloads
    # and results kept in every state until they expire; beyond them a submission gets 429 (that
    # client) or 503 (everyone) with Retry-After.
    MAX_QUEUED_JOBS_PER_CLIENT = 10_000
    MAX_QUEUED_JOB_BYTES_PER_CLIENT = 100 * 1024 * 1024
    MAX_QUEUED_JOBS = 100_000
    MAX_QUEUED_JOB_BYTES = 1024 * 1024 * 1024
    # Models that only remote workers serve, which jobs may name besides this server's own
    # (comma-separated; "*" accepts any name). Jobs for other names are refused with 404.
    WORKER_MODELS = ""
    # Model name given to tasks that arrive through the AzureMLDeploy-compatible /api/*_v0 endpoints.
    COMPAT_MODEL = "compat"
    # Bearer token the pull workers must present. Empty: the server makes one on first start
    # and keeps it in WORKER_TOKEN_FILE (default instance/worker_token, owner-only).
    WORKER_TOKEN = ""
    WORKER_TOKEN_FILE = str(PROJECT_ROOT / "instance" / "worker_token")
    # True opens the worker endpoints to anyone (local experiments only).
    OPEN_WORKER_ENDPOINTS = False
    # Comma-separated API keys; when set, every endpoint but health, metrics, docs and pages
    # needs one, and jobs belong to the key that made them (empty: no keys).
    API_KEYS = ""
    # Rate limiting (off when empty), e.g. "100/minute;20/second", per API key or client address.
    RATELIMIT_DEFAULT = ""
    # memory:// (per process) or redis://host:6379 (shared by every worker and server).
    RATELIMIT_STORAGE_URI = "memory://"
    # Reverse proxies in front of the app that append to X-Forwarded-For (deploy/nginx: 1;
    # Heroku's router: 1). 0 trusts no such header: the client is the connection's address.
    PROXY_HOPS = 0
    # Comma-separated origins allowed by CORS (off when empty).
    CORS_ORIGINS = ""
    # Most items (texts, images, rows) in one inference request, whatever the protocol.
    MAX_BATCH = 64
    # Where training data is read from by the `flask train` commands.
    DATA_DIR = str(PROJECT_ROOT.parent / "shared" / "data")
    # Log level of the app's loggers.
    LOG_LEVEL = "INFO"
    # "json" (one object per line, with request ids) or "text".
    LOG_FORMAT = "json"
    # Keep JSON keys in insertion order (more readable responses).
    JSON_SORT_KEYS = False


def environment_overrides() -> dict:
    """Settings that come from un-prefixed conventional variables (DATABASE_URL)."""
    overrides = {}
    if os.environ.get("DATABASE_URL"):
        overrides["DATABASE_URL"] = os.environ["DATABASE_URL"]
    return overrides


# Settings that must be whole numbers of at least 1, numbers of at least 0, and verbatim strings.
POSITIVE_INTEGERS = ("MAX_CONTENT_LENGTH", "MAX_TEXT_CHARS", "MAX_BATCH_TEXT_CHARS", "MAX_IMAGE_PIXELS",
                     "MAX_BATCH_IMAGE_PIXELS", "MAX_INFLIGHT",
                     "ONNX_THREADS", "JOB_LEASE_SECONDS", "JOB_MAX_ATTEMPTS", "JOB_RETENTION_SECONDS", "MAX_BATCH",
                     "JOB_QUEUED_SECONDS", "MAX_QUEUED_JOBS_PER_CLIENT", "MAX_QUEUED_JOB_BYTES_PER_CLIENT",
                     "MAX_QUEUED_JOBS", "MAX_QUEUED_JOB_BYTES", "MODEL_CACHE_MAX_BYTES", "DATABASE_POOL_SIZE",
                     "MONITOR_QUEUE_SIZE", "MONITOR_PAYLOAD_MAX_BYTES", "MONITOR_MAX_ROWS_PER_MODEL")
NON_NEGATIVE_NUMBERS = ("PYTHON_MODEL_TIMEOUT_SECONDS", "DATABASE_WAIT_SECONDS", "DATABASE_TIMEOUT_SECONDS", "MODEL_POLL_SECONDS", "PROXY_HOPS", "MAX_QUEUED", "REQUEST_DEADLINE_SECONDS", "SHED_DELAY_SECONDS", "JOB_MAX_WAIT_SECONDS", "JOB_ACK_SECONDS", "MONITOR_SAMPLE_RATE", "MONITOR_RETENTION_SECONDS")
# Secrets and lists are taken as written: "12345678" is a token, not a number, and "null" is not "off".
STRINGS = ("MONITOR_PAYLOADS", "MODEL_STORE", "MODEL_CACHE", "WORKER_TOKEN", "WORKER_TOKEN_FILE", "API_KEYS", "MODELS", "CORS_ORIGINS", "RATELIMIT_DEFAULT", "COMPAT_MODEL",
           "WORKER_MODELS")
BOOLEANS = ("OPEN_WORKER_ENDPOINTS", "AUTO_MIGRATE", "MONITOR")


class SettingsError(ValueError):
    """A setting whose value cannot work; the message names it and says what it must be."""


def restore_strings(config) -> None:
    """Undo JSON parsing of the string settings: their value is the environment variable's text."""
    for name in STRINGS:
        raw = os.environ.get(f"{ENV_PREFIX}_{name}")
        if raw is not None:
            config[name] = raw


def load_settings(config, overrides: dict | None = None) -> None:
    """Defaults -> conventional variables -> MODELSERVE_* -> overrides (tests), then checked."""
    config.from_object(DefaultConfig)
    config.update(environment_overrides())
    config.from_prefixed_env(ENV_PREFIX)
    restore_strings(config)
    if overrides:
        config.update(overrides)
    validate_settings(config)


def served_model_names(config) -> set[str] | None:
    """The model names the MODELS setting limits the server to; None when it names none (serve all)."""
    return {n.strip() for n in str(config["MODELS"]).split(",") if n.strip()} or None


def batching_problems(batching) -> list[str]:
    """What is wrong with the BATCHING setting ({model name: batching settings})."""
    from app.models.batching import BatchingSettings

    if not isinstance(batching, dict) or not all(isinstance(v, dict) for v in batching.values()):
        return [f"{ENV_PREFIX}_BATCHING must be a JSON object of model name -> {{max_batch_size, max_wait_ms}}"]
    problems = []
    for name, settings in batching.items():
        try:
            BatchingSettings.from_dict(settings)
        except ValueError as exc:
            problems.append(f"{ENV_PREFIX}_BATCHING for {name}: {exc}")
    return problems


def validate_settings(config) -> None:
    """Refuse to start with a setting that would fail later (every request a 500, a server never ready)."""
    problems = []
    for name in POSITIVE_INTEGERS:
        value = config[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"{ENV_PREFIX}_{name}={value!r} must be a whole number of at least 1")
    for name in NON_NEGATIVE_NUMBERS:
        value = config[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            problems.append(f"{ENV_PREFIX}_{name}={value!r} must be a number of at least 0")
    for name in STRINGS:
        if not isinstance(config[name], str):
            problems.append(f"{ENV_PREFIX}_{name} must be a string")
    for name in BOOLEANS:
        if not isinstance(config[name], bool):
            problems.append(f"{ENV_PREFIX}_{name}={config[name]!r} must be true or false")
    problems += batching_problems(config["BATCHING"])
    if isinstance(config["MONITOR_SAMPLE_RATE"], (int, float)) and config["MONITOR_SAMPLE_RATE"] > 1:
        problems.append(f"{ENV_PREFIX}_MONITOR_SAMPLE_RATE={config['MONITOR_SAMPLE_RATE']!r} must be a share from 0 to 1")
    for part in str(config["MONITOR_PAYLOADS"] or "").split(","):
        name, _, share = part.strip().partition(":")
        try:
            ok = not part.strip() or (name.strip() and 0 <= float(share or 1) <= 1)
        except ValueError:
            ok = False
        if not ok:
            problems.append(f"{ENV_PREFIX}_MONITOR_PAYLOADS: {part.strip()!r} must be MODEL or MODEL:SHARE (0 to 1)")
    store = config["MODEL_STORE"]
    if isinstance(store, str) and "://" in store and not store.startswith(("s3://", "s3a://", "gs://", "gcs://", "file://")):
        problems.append(f"{ENV_PREFIX}_MODEL_STORE={store!r} must be a folder, file://, s3:// or gs:// URL")
    if config["LOG_FORMAT"] not in ("json", "text"):
        problems.append(f"{ENV_PREFIX}_LOG_FORMAT={config['LOG_FORMAT']!r} must be 'json' or 'text'")
    if problems:
        raise SettingsError("invalid settings: " + "; ".join(problems))


# -- the running server's pidfile ---------------------------------------------------------------

def pidfile_folder() -> Path:
    """Where gunicorn's pidfile lives by default: this checkout's instance/ folder, or, where that cannot
    be written (App Engine's disk is read-only but /tmp), a temporary folder named after this checkout."""
    folder = PROJECT_ROOT / "instance"
    try:
        folder.mkdir(exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder
    except OSError:
        pass
    folder = Path(tempfile.gettempdir()) / f"modelserve-{hashlib.sha256(str(PROJECT_ROOT).encode()).hexdigest()[:12]}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def default_pidfile(port: str) -> Path:
    """The pidfile of this checkout's server on ``port``."""
    return pidfile_folder() / f"gunicorn-{port}.pid"


def is_our_server(pid: int, same_checkout: bool = True) -> bool:
    """Whether ``pid`` is a live gunicorn process (of this checkout: started from PROJECT_ROOT), so that a
    stale pidfile or a recycled pid is never signalled."""
    try:
        os.kill(pid, 0)
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        here = Path(f"/proc/{pid}/cwd").resolve() == PROJECT_ROOT.resolve() if same_checkout else True
    except (OSError, ValueError):
        return False
    return "gunicorn" in command and here
