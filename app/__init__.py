"""Model-serving API: the application factory."""
from __future__ import annotations

__version__ = "1.1.0"

import logging

from flask import Flask

from app.codecs.strict_json import StrictJSONProvider
from app.config import load_settings, served_model_names


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: defaults -> environment -> test overrides, then wire everything up."""
    # No app-wide static folder: the pages' files are the web blueprint's (/static/web/).
    app = Flask(__name__, instance_relative_config=True, static_folder=None)
    app.json = StrictJSONProvider(app)
    load_settings(app.config, test_config)
    app.json.sort_keys = app.config["JSON_SORT_KEYS"]

    configure_logging(app)
    trust_proxies(app)
    register_extensions(app)
    register_blueprints(app)
    register_error_handlers(app)
    register_commands(app)
    return app


def configure_logging(app: Flask) -> None:
    """Structured JSON logs on stderr (or plain text with LOG_FORMAT=text)."""
    if app.config["LOG_FORMAT"] == "json":
        from app.observability import configure_json_logging

        configure_json_logging(app.config["LOG_LEVEL"])
    else:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("app").setLevel(app.config["LOG_LEVEL"])


def trust_proxies(app: Flask) -> None:
    """Behind PROXY_HOPS reverse proxies, the client address is the one they forward (quotas, rate limits)."""
    if app.config["PROXY_HOPS"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = int(app.config["PROXY_HOPS"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=0)


def register_extensions(app: Flask) -> None:
    """Database engine and model registry, kept in app.extensions."""
    from app import db
    from app.models.registry import ModelRegistry, runtime_options

    from app import admission, auth, observability, protection

    from app.jobs.store import JobStore

    db.init_app(app)
    observability.init_app(app)
    protection.init_app(app)
    auth.init_app(app)  # after the limiter: failed key guesses count against the address
    admission.init_app(app)
    app.extensions["job_store"] = JobStore(
        app.extensions["db_engine"],
        lease_seconds=app.config["JOB_LEASE_SECONDS"],
        max_attempts=app.config["JOB_MAX_ATTEMPTS"],
        retention_seconds=app.config["JOB_RETENTION_SECONDS"],
        queued_seconds=app.config["JOB_QUEUED_SECONDS"],
    )
    app.extensions["model_registry"] = ModelRegistry(app.config["MODEL_DIR"], served_model_names(app.config),
                                                     runtime_options(app.config))


def register_blueprints(app: Flask) -> None:
    """Attach the API blueprints."""
    from app.api.health import bp as health_bp
    from app.api.classify import bp as classify_bp
    from app.api.compat import bp as compat_bp
    from app.api.jobs import bp as jobs_bp
    from app.api.models import bp as models_bp
    from app.web import bp as web_bp
    from app.api.docs import bp as docs_bp
    from app.api.predict import bp as predict_bp
    from app.api.review import bp as review_bp
    from app.api.v2 import bp as v2_bp

    app.register_blueprint(health_bp)
    app.register_blueprint(review_bp)
    app.register_blueprint(classify_bp)
    app.register_blueprint(v2_bp)
    app.register_blueprint(predict_bp)
    app.register_blueprint(models_bp)
    app.register_blueprint(docs_bp)
    app.register_blueprint(jobs_bp)
    app.register_blueprint(compat_bp)
    app.register_blueprint(web_bp)


def register_error_handlers(app: Flask) -> None:
    """One JSON error handler for everything."""
    from app.errors import register_error_handlers as register

    register(app)


def register_commands(app: Flask) -> None:
    """`flask train|evaluate|feedback|models|db|score`; the pull worker is `python -m app.worker` (no app, no database)."""
    from app.training.cli import db_cli, evaluate_cli, feedback_cli, models_cli, score_command, train_cli

    app.cli.add_command(train_cli)
    app.cli.add_command(evaluate_cli)
    app.cli.add_command(feedback_cli)
    app.cli.add_command(models_cli)
    app.cli.add_command(db_cli)
    app.cli.add_command(score_command)
