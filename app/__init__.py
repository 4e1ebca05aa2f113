"""Model-serving API: the application factory."""
from __future__ import annotations

__version__ = "1.1.0"

import logging

from flask import Flask
from flask.json.provider import DefaultJSONProvider

from app.codecs.strict_json import strict_loads
from app.config import Settings, load_settings


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider with strict parsing of request bodies (app/codecs/strict_json.py)."""

    def loads(self, s: str | bytes, **kwargs):
        """Parse strictly (keyword arguments are not used by Flask's request parsing)."""
        return strict_loads(s)


class ModelServeFlask(Flask):
    """Flask, asking once per handler whether it is a coroutine function instead of on every call.

    Flask's ensure_sync() runs inspect.iscoroutinefunction for every hook and view of every
    request, a cost the profiles of /review showed; the answer never changes for a function.
    """

    settings: Settings  # the typed settings (app/config.py), built once by create_app and read as attributes

    def __init__(self, *args, **kwargs):
        """Flask's app, with an empty cache of handlers."""
        super().__init__(*args, **kwargs)
        self._sync_handlers: dict = {}

    def ensure_sync(self, func):
        """The handler itself for a plain function; Flask's async wrapper for a coroutine function."""
        try:
            return self._sync_handlers[func]
        except KeyError:
            self._sync_handlers[func] = wrapped = super().ensure_sync(func)
            return wrapped


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: settings from defaults -> environment -> ``test_config``, then wire everything up.

    ``test_config`` names settings in capitals (``{"MODEL_DIR": ...}``); its other keys (``TESTING``)
    are Flask's own and go to ``app.config``."""
    overrides = dict(test_config or {})
    flask_config = {key: overrides.pop(key) for key in list(overrides) if key.lower() not in Settings.model_fields}
    # No app-wide static folder: the pages' files are the web blueprint's (/static/web/).
    app = ModelServeFlask(__name__, instance_relative_config=True, static_folder=None)
    app.settings = load_settings(overrides)
    # Flask enforces the body limit itself, from its own config.
    app.config.update(flask_config, MAX_CONTENT_LENGTH=app.settings.max_content_length)
    app.json = StrictJSONProvider(app)
    app.json.sort_keys = app.settings.json_sort_keys

    configure_logging(app)
    trust_proxies(app)
    register_extensions(app)
    register_blueprints(app)
    register_error_handlers(app)
    register_commands(app)
    return app


def configure_logging(app: Flask) -> None:
    """Structured JSON logs on stderr (or plain text with LOG_FORMAT=text)."""
    if app.settings.log_format == "json":
        from app.observability import configure_json_logging

        configure_json_logging(app.settings.log_level)
    else:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("app").setLevel(app.settings.log_level)


def trust_proxies(app: Flask) -> None:
    """Behind PROXY_HOPS reverse proxies, the client address is the one they forward (quotas, rate limits)."""
    if app.settings.proxy_hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = app.settings.proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=0)


def register_extensions(app: Flask) -> None:
    """Database engine and model registry, kept in app.extensions."""
    from app import db
    from app.models.registry import ModelRegistry, runtime_options
    from app.models.store import open_store

    from app import admission, auth, observability, protection

    from app.jobs.store import JobStore

    db.init_app(app)
    observability.init_app(app)
    protection.init_app(app)
    auth.init_app(app)  # after the limiter: failed key guesses count against the address
    admission.init_app(app)
    settings = app.settings
    app.extensions["job_store"] = JobStore(
        app.extensions["db_engine"],
        lease_seconds=settings.job_lease_seconds,
        max_attempts=settings.job_max_attempts,
        retention_seconds=settings.job_retention_seconds,
        queued_seconds=settings.job_queued_seconds,
        ack_seconds=settings.job_ack_seconds,
    )
    prediction_log = None
    if settings.monitor:
        from app.monitoring.log import MonitorSettings, PredictionLog

        prediction_log = PredictionLog(app.extensions["db_engine"], MonitorSettings.from_settings(settings),
                                       observability.request_facts)
        app.extensions["prediction_log"] = prediction_log
    app.extensions["model_registry"] = ModelRegistry(open_store(settings), settings.served_model_names(),
                                                     runtime_options(settings), prediction_log)


# The modules whose commands the app registers (each has an init_app that adds its own).
COMMAND_MODULES = ("app.training.cli", "app.feedback", "app.models.cli", "app.monitoring.cli", "app.batch.cli")
# The API's blueprints, in the order they are registered.
BLUEPRINT_MODULES = ("app.api.health", "app.api.review", "app.api.classify", "app.api.v2", "app.api.predict",
                     "app.api.models", "app.api.docs", "app.api.jobs", "app.api.compat", "app.web")
# What a serving worker imports of this package: gunicorn's master imports these before it forks
# (gunicorn.conf.py), so the workers share them. The ONNX runtime (app.models.onnx) is not among them:
# ONNX Runtime is imported in each worker only.
SERVING_MODULES = BLUEPRINT_MODULES + COMMAND_MODULES + ("app.error_handlers", "app.models.registry", "app.models.text",
                                       "app.models.sklearn", "app.preprocessing.image")


def register_blueprints(app: Flask) -> None:
    """Attach the API blueprints."""
    import importlib

    for module in BLUEPRINT_MODULES:
        app.register_blueprint(importlib.import_module(module).bp)


def register_error_handlers(app: Flask) -> None:
    """One JSON error handler for everything."""
    from app.error_handlers import register_error_handlers as register

    register(app)


def register_commands(app: Flask) -> None:
    """Each room's commands (`modelserve train|evaluate|feedback|models|monitor|score`; `db` comes with the
    database); the pull worker is `modelserve worker` (no app, no database)."""
    import importlib

    for module in COMMAND_MODULES:
        importlib.import_module(module).init_app(app)
