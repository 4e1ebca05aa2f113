"""Every setting in one place: one typed object, built once from defaults, the environment and
(in tests) overrides, and checked before anything starts.

Each setting is read from ``MODELSERVE_<NAME>``; the few that hosting platforms set under their
conventional names (``DATABASE_URL``, ``PORT``, ``WEB_CONCURRENCY``, gunicorn's) are read under
those. ``create_app`` builds the object for the app, gunicorn.conf.py for the server process and the
pull worker for itself: each calls :func:`load_settings`. docs/configuration.md is this file's table
(``python -m app.config`` prints it; a test compares).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BeforeValidator, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "MODELSERVE"


class SettingsError(ValueError):
    """A setting whose value cannot work; the message names it and says what it must be."""


def split_commas(value: Any) -> Any:
    """A comma-separated list as written in the environment ("a, b,"), as its non-empty items."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def true_or_false(value: Any) -> Any:
    """Only true or false (any case): "yes" or "1" for a switch such as OPEN_WORKER_ENDPOINTS is refused, not guessed."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


Switch = Annotated[bool, BeforeValidator(true_or_false)]
DATABASE_URL = re.compile(r"[A-Za-z][\w.-]*(\+[\w.-]+)?://")
# Names and lists are taken as written: "null" is a key, not "off", and "a,b" two keys.
Names = Annotated[tuple[str, ...], NoDecode]
PositiveInt = Annotated[int, Field(ge=1)]
Seconds = Annotated[float, Field(ge=0)]


def conventional(name: str) -> dict:
    """A setting read under the name hosting platforms set (PORT), not under MODELSERVE_."""
    return {"validation_alias": AliasChoices(name)}


class Settings(BaseSettings):
    """The server's settings. Field docstrings are what docs/configuration.md says of each."""

    model_config = SettingsConfigDict(env_prefix=f"{ENV_PREFIX}_", case_sensitive=False, extra="forbid",
                                      frozen=True, use_attribute_docstrings=True, validate_by_name=True,
                                      validate_default=True)

    # -- the server process (gunicorn.conf.py) ------------------------------------------------------
    port: Annotated[int, Field(ge=0, le=65535)] = Field(8000, **conventional("PORT"))
    """port gunicorn listens on (Heroku and App Engine set it)"""
    host: str = Field("0.0.0.0", **conventional("HOST"))
    """address gunicorn binds"""
    web_concurrency: PositiveInt = Field(default_factory=lambda: os.cpu_count() or 2,
                                         json_schema_extra={"shown": "number of cores"},
                                         **conventional("WEB_CONCURRENCY"))
    """gunicorn worker processes (inference is CPU-bound and holds the GIL: one per core)"""
    gunicorn_threads: PositiveInt = Field(40, **conventional("GUNICORN_THREADS"))
    """threads per worker; keep it above `MAX_INFLIGHT + MAX_QUEUED` so that backpressure, not gunicorn's own queue, decides"""
    gunicorn_timeout: PositiveInt = Field(30, **conventional("GUNICORN_TIMEOUT"))
    """seconds before a stuck worker is replaced"""
    gunicorn_max_requests: Annotated[int, Field(ge=0)] = Field(100_000, **conventional("GUNICORN_MAX_REQUESTS"))
    """requests before a worker is recycled (10 % jitter; 0: never)"""
    gunicorn_pidfile: str = Field("", json_schema_extra={"shown": "instance/gunicorn-$PORT.pid"},
                                  **conventional("GUNICORN_PIDFILE"))
    """where gunicorn writes its pid (by default in this checkout's instance/ folder, or a temporary folder named after the checkout where instance/ is read-only); `flask models reload` finds this checkout's one running server without it, and signals only a live gunicorn"""
    gunicorn_accesslog: str = Field("", **conventional("GUNICORN_ACCESSLOG"))
    """gunicorn's own access log (`-`: standard output); off by default because the app logs every request itself"""
    preload: Switch = True
    """gunicorn's master imports the libraries and reads the scikit-learn models' files before forking the workers, which then share that memory (the app, ONNX Runtime sessions and connections are still made in each worker); `false` to turn off"""

    # -- models ------------------------------------------------------------------------------------
    model_dir: Path = PROJECT_ROOT / "saved_models"
    """where model versions are read from (`NAME/VERSION/manifest.json`; the local store, served in place)"""
    model_store: str = ""
    """a store shared by many instances: `s3://bucket/prefix`, `gs://bucket/prefix` or `file:///mnt/models` (needs `requirements-store.txt`; [deployment](deployment.md#many-machines)); empty: `MODEL_DIR`"""
    model_cache: Path = PROJECT_ROOT / "instance" / "model-cache"
    """this instance's verified copy of the shared store's versions"""
    model_cache_max_bytes: PositiveInt = 10 * 1024 ** 3
    """the cache's size limit: a version that would pass it is refused (the others serve)"""
    model_poll_seconds: Seconds = 10
    """how often each worker checks the shared store's control files (0: never; changes then need a restart)"""
    models: Names = ()
    """comma-separated model names to load; empty: every model found (a name with no model behind it is logged as an error)"""
    batching: dict[str, dict[str, Any]] = {}
    """adaptive batching per model, as JSON, over the manifests' `"batching"`: `{"review_sentiment": {"max_batch_size": 1}}` turns it off for one model"""
    onnx_threads: PositiveInt = 1
    """ONNX Runtime threads per worker (measured best with one worker per core, see benchmarks)"""
    python_model_timeout_seconds: Seconds = 30
    """longest one call of a user's Python-class model may take (its own process) before a 503 and a fresh process"""

    # -- what one request may cost -----------------------------------------------------------------
    max_content_length: PositiveInt = 10 * 1024 * 1024
    """largest request body in bytes (413 beyond)"""
    max_text_chars: PositiveInt = 50_000
    """longest text in characters (413 beyond; the longest IMDb review is 13,704)"""
    max_batch_text_chars: PositiveInt = 500_000
    """most characters of text in one inference request, all items together (413 beyond)"""
    max_image_pixels: PositiveInt = 4_000_000
    """largest image accepted, checked from the header before decoding (413 beyond)"""
    max_batch_image_pixels: PositiveInt = 16_000_000
    """decoded pixels of all the images of one inference request (413 beyond; a memory budget)"""
    max_batch: PositiveInt = 64
    """most items in one inference request (V2, `/models/NAME/predict`, jobs)"""

    # -- backpressure, per worker process and model ------------------------------------------------
    max_inflight: PositiveInt = 8
    """inference requests a worker lets in at once for one model (each model has its own slots); each model still predicts one batch at a time, merging the requests that wait for it where batching is on"""
    max_queued: Annotated[int, Field(ge=0)] = 32
    """inference requests a worker lets wait for one model; more get 503 + `Retry-After`"""
    request_deadline_seconds: Seconds = 1.0
    """longest wait for an inference slot (503 beyond); `X-Request-Timeout` may ask for less"""
    shed_delay_seconds: Seconds = 0.25
    """pause before a queue-full 503, so that clients retrying at once cannot keep the worker busy refusing them"""

    # -- the database ------------------------------------------------------------------------------
    database_url: str = Field("sqlite:///" + str(PROJECT_ROOT / "instance" / "modelserve.db"),
                              validation_alias=AliasChoices(f"{ENV_PREFIX}_DATABASE_URL", "DATABASE_URL"))
    """any SQLAlchemy URL; embedded SQLite by default (no server needed), `postgresql://...` for several servers"""
    database_pool_size: PositiveInt = 4
    """database connections per worker process: the most threads that can wait on the database at once"""
    database_wait_seconds: Seconds = 0.25
    """how long a request waits for one of them before its 503 + Retry-After"""
    database_timeout_seconds: Seconds = 5
    """longest statement or lock wait (PostgreSQL `statement_timeout`/`lock_timeout`, SQLite's busy timeout): a stuck database is a 503 in seconds"""
    auto_migrate: Switch = True
    """workers apply pending migrations at start (under a lock); `false` where `flask --app app db upgrade` is the release step, and database endpoints answer 503 until it has run"""

    # -- the prediction log (app/monitoring/log.py) -------------------------------------------------
    monitor: Switch = True
    """the prediction log: a record of every inference (model, version, time, latency, request id, the client's key id, a summary of the input and the answer), written off the request path; drift and live accuracy come from it ([docs/models.md](models.md#monitoring-in-production))"""
    monitor_sample_rate: Annotated[float, Field(ge=0, le=1)] = 1.0
    """the share of requests logged"""
    monitor_queue_size: PositiveInt = 2000
    """inferences waiting to be written; beyond it records are dropped and counted (`modelserve_prediction_log_dropped_total`), never requests"""
    monitor_payloads: Annotated[dict[str, float], NoDecode] = {}
    """models whose inputs are kept too, with the share of their requests: `review_sentiment:0.1` (comma-separated; a name alone: all of them)"""
    monitor_payload_max_bytes: PositiveInt = 65536
    """a kept input is cut at this size"""
    monitor_retention_seconds: Seconds = 604800
    """logged records older than this are deleted (checked every minute)"""
    monitor_max_rows_per_model: PositiveInt = 100_000
    """and beyond this many per model, the oldest"""
    monitor_parquet: str = ""
    """keep the log as Parquet files in this folder or under this URL (`s3://bucket/predictions`, `gs://...`, `file://...`; a prefix of the model store's bucket serves) instead of in the database, for large volumes and for Spark, pandas or DuckDB to read; needs `pip install -r requirements-monitor.txt` (with requirements-store.txt for a bucket). Feedback stays in the database"""
    monitor_parquet_roll_seconds: Annotated[float, Field(gt=0)] = 60
    """each process writes a model version's rows as one file this often (and at a clean stop); what it has not written yet, only it can read"""

    # -- jobs --------------------------------------------------------------------------------------
    job_lease_seconds: PositiveInt = 60
    """how long a leased job stays with a worker without a heartbeat"""
    job_ack_seconds: Seconds = 10
    """how long a lease just handed out waits for the worker's first heartbeat (its acknowledgement) before the job goes back to the queue, not counted as an attempt; so a long poll answered on a connection the worker already dropped holds the job seconds, not a lease. `0`: no acknowledgement asked"""
    job_max_attempts: PositiveInt = 3
    """leases (or retried failures) before a job fails"""
    job_retention_seconds: PositiveInt = 86400
    """how long finished jobs keep payload and result"""
    job_max_wait_seconds: Seconds = 20
    """longest long-poll of `POST /jobs/lease`"""
    job_queued_seconds: PositiveInt = 86400
    """queued jobs no worker takes within this expire (payload deleted)"""
    max_queued_jobs_per_client: PositiveInt = 10_000
    """jobs one client (API key, else address) may have waiting (429 beyond)"""
    max_queued_job_bytes_per_client: PositiveInt = 100 * 1024 * 1024
    """payload and result bytes kept for one client's jobs, in every state until they expire (429 beyond)"""
    max_queued_jobs: PositiveInt = 100_000
    """jobs waiting in all (503 beyond)"""
    max_queued_job_bytes: PositiveInt = 1024 * 1024 * 1024
    """payload and result bytes kept in all (503 beyond)"""
    worker_models: Names = ()
    """models only remote workers serve, which jobs may name besides this server's own (comma-separated; `*`: any); jobs for other names are refused with 404"""
    compat_model: str = "compat"
    """model name of tasks posted through `/api/*_v0`"""

    # -- who may call what -------------------------------------------------------------------------
    worker_token: str = ""
    """bearer token of the worker endpoints; empty: the server makes one at first start in `WORKER_TOKEN_FILE`"""
    worker_token_file: Path = PROJECT_ROOT / "instance" / "worker_token"
    """where the generated worker token is kept (owner-only)"""
    open_worker_endpoints: Switch = False
    """`true` opens the worker endpoints to anyone (local experiments only)"""
    api_keys: Names = ()
    """comma-separated keys; when set every endpoint needs one but liveness, readiness (which then says only ready / loading / overloaded; its model list and refusal reasons need a key), the docs and the pages that hold no data; `/metrics` needs one too (a Prometheus `authorization` credential), and jobs belong to their key"""
    ratelimit_default: str = ""
    """rate limits, e.g. `100/minute;20/second`, per API key or client address; empty: off"""
    ratelimit_storage_uri: str = "memory://"
    """where the rate limits count: `memory://` (per process), or `redis://127.0.0.1:6379` to share counts between workers and servers"""
    proxy_hops: Annotated[int, Field(ge=0)] = 0
    """reverse proxies in front that append to `X-Forwarded-For` (1 behind the shipped nginx or Heroku); 0 trusts no such header"""
    cors_origins: Names = ()
    """comma-separated allowed origins; empty: CORS off"""

    # -- logs and training -------------------------------------------------------------------------
    log_level: str = "INFO"
    """log level of the app's loggers (DEBUG, INFO, WARNING, ERROR)"""
    log_format: Literal["json", "text"] = "json"
    """`json` lines (with request ids; gunicorn's own lines too) or `text`"""
    json_sort_keys: Switch = False
    """sort the keys of JSON answers (off: insertion order, more readable)"""
    data_dir: Path = PROJECT_ROOT.parent / "shared" / "data"
    """training data for the `flask train` commands"""

    # -- checks ------------------------------------------------------------------------------------
    @field_validator("models", "worker_models", "api_keys", "cors_origins", mode="before")
    @classmethod
    def comma_separated(cls, value: Any) -> Any:
        return split_commas(value)

    @field_validator("monitor_payloads", mode="before")
    @classmethod
    def model_shares(cls, value: Any) -> Any:
        """"review_sentiment:0.1,iris_svc" -> {"review_sentiment": 0.1, "iris_svc": 1.0}."""
        if not isinstance(value, str):
            return value
        shares = {}
        for part in split_commas(value):
            name, _, share = part.partition(":")
            try:
                shares[name.strip()] = float(share or 1)
            except ValueError:
                raise ValueError(f"{part!r} must be MODEL or MODEL:SHARE (0 to 1)") from None
        return shares

    @field_validator("monitor_payloads")
    @classmethod
    def shares_are_shares(cls, value: dict[str, float]) -> dict[str, float]:
        for name, share in value.items():
            if not name or not 0 <= share <= 1:
                raise ValueError(f"{name}:{share} must be MODEL or MODEL:SHARE (0 to 1)")
        return value

    @field_validator("batching")
    @classmethod
    def batching_settings(cls, value: dict[str, dict]) -> dict[str, dict]:
        from app.models.batching import BatchingSettings

        for name, settings in value.items():
            try:
                BatchingSettings.from_dict(settings)
            except ValueError as exc:
                raise ValueError(f"for {name}: {exc}") from None
        return value

    @field_validator("model_store", "monitor_parquet")
    @classmethod
    def store_url(cls, value: str) -> str:
        if "://" in value and not value.startswith(("s3://", "s3a://", "gs://", "gcs://", "file://")):
            raise ValueError("must be a folder, file://, s3:// or gs:// URL")
        return value

    @field_validator("monitor_parquet")
    @classmethod
    def parquet_libraries(cls, value: str) -> str:
        if value and not all(importlib.util.find_spec(name) for name in ("pyarrow", "fsspec")):
            raise ValueError("needs pyarrow and fsspec: pip install -r requirements-monitor.txt")
        return value

    @field_validator("database_url")
    @classmethod
    def sqlalchemy_url(cls, value: str) -> str:
        # SQLAlchemy's own form (dialect[+driver]://...), checked without it: batch jobs (the Flink job's
        # environment) read these settings without the server's database libraries.
        if not DATABASE_URL.match(value):
            raise ValueError("must be an SQLAlchemy URL such as sqlite:///path or postgresql://host/db")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def level_name(cls, value: Any) -> str:
        level = str(value).upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @field_validator("ratelimit_default")
    @classmethod
    def rate_limits(cls, value: str) -> str:
        try:
            from limits import parse_many
        except ImportError:  # a batch job's environment, without the web server's libraries: it never rate-limits
            return value
        try:
            parse_many(value) if value else None
        except ValueError:
            raise ValueError("must be limits such as 100/minute;20/second") from None
        return value

    @field_validator("ratelimit_storage_uri")
    @classmethod
    def limit_storage(cls, value: str) -> str:
        try:
            from limits.storage import SCHEMES
        except ImportError:  # as above
            return value
        if value.partition("://")[0] not in SCHEMES:
            raise ValueError(f"must be a URL of a storage the rate limiter knows ({', '.join(sorted(SCHEMES))})")
        return value

    @field_validator("model_dir", "data_dir", "model_cache", "worker_token_file", mode="before")
    @classmethod
    def not_empty(cls, value: Any) -> Any:
        if not str(value).strip():
            raise ValueError("must name a folder or file")
        return value

    # -- what the settings say, worked out ---------------------------------------------------------
    def served_model_names(self) -> set[str] | None:
        """The model names the MODELS setting limits the server to; None when it names none (serve all)."""
        return set(self.models) or None

    def pidfile(self) -> Path:
        """gunicorn's pidfile: GUNICORN_PIDFILE, else this checkout's for the port."""
        return Path(self.gunicorn_pidfile) if self.gunicorn_pidfile else default_pidfile(self.port)


def variable_names(name: str) -> list[str]:
    """The environment variables a setting is read from, in the order they are looked at."""
    alias = Settings.model_fields[name].validation_alias
    return list(alias.choices) if isinstance(alias, AliasChoices) else [f"{ENV_PREFIX}_{name.upper()}"]


def load_settings(overrides: dict | None = None) -> Settings:
    """Defaults -> the environment -> ``overrides`` (setting names in capitals, as tests give them),
    checked; a value that cannot work raises SettingsError naming its variable."""
    try:
        return Settings(**{name.lower(): value for name, value in (overrides or {}).items()})
    except ValidationError as exc:
        raise SettingsError("invalid settings: " + "; ".join(problem(error) for error in exc.errors())) from None


def problem(error: dict) -> str:
    """One validation error, named as the operator writes the setting."""
    name = str(error["loc"][0]) if error["loc"] else ""
    field = next((f for f in Settings.model_fields if name.lower() in (f, *map(str.lower, variable_names(f)))), None)
    shown = " or ".join(variable_names(field)) if field else name
    message = error["msg"].removeprefix("Value error, ")
    return f"{shown}={error['input']!r}: {message}" if "input" in error else f"{shown}: {message}"


# -- the settings table of docs/configuration.md ----------------------------------------------------

def shown_default(name: str) -> str:
    """A setting's default as the docs show it: paths relative to the checkout, empty as (empty)."""
    info = Settings.model_fields[name]
    extra = info.json_schema_extra or {}
    if "shown" in extra:
        return extra["shown"]
    value = info.get_default(call_default_factory=True)
    if isinstance(value, Path) or (isinstance(value, str) and str(PROJECT_ROOT) in value):
        text = str(value).replace(str(PROJECT_ROOT.parent / "shared"), "../shared").replace(str(PROJECT_ROOT) + "/", "")
        return text + ("/" if name == "model_dir" else "")
    if isinstance(value, bool):
        return str(value).lower()
    if value in ("", (), {}):
        return "(empty)"
    return str(value)


def settings_table() -> str:
    """The markdown table of every setting: its variables, its default and what it does."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, info in Settings.model_fields.items():
        variables = " or ".join(f"`{v}`" for v in variable_names(name))
        rows.append(f"| {variables} | `{shown_default(name)}` | {info.description} |")
    return "\n".join(rows) + "\n"


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


if __name__ == "__main__":
    # Through the module's own name: run as __main__, pydantic cannot find the fields' docstrings.
    from app.config import settings_table as table

    sys.stdout.write(table())
