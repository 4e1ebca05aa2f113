"""`modelserve`: every command of `flask --app app ...`, plus `serve`, from any folder once installed.

    modelserve models list
    modelserve models add wine wine.skops --labels class_0,class_1,class_2
    modelserve score review_sentiment reviews.csv scores.parquet --key id
    modelserve serve                      # gunicorn with gunicorn.conf.py on 127.0.0.1:8000

Log lines (JSON, on standard error) are shown from warnings up; ``-v`` shows them all.
"""
from __future__ import annotations

import itertools
import os
import sys

import click
from flask.cli import FlaskGroup

from app import create_app
from app.config import PROJECT_ROOT


@click.group(cls=FlaskGroup, create_app=create_app, add_version_option=False,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, expose_value=False,
              help="Show every log line (default: warnings and errors only).")
@click.version_option(package_name="modelserve", message="modelserve %(version)s")
def cli():
    """Serve, manage and score models: the same commands as `flask --app app`, from any folder."""


@cli.command("serve", context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
             with_appcontext=False)
@click.option("--host", default=lambda: os.environ.get("HOST", "127.0.0.1"), show_default="127.0.0.1, or HOST",
              help="Interface to listen on (0.0.0.0: every interface).")
@click.option("--port", default=lambda: os.environ.get("PORT", "8000"), show_default="8000, or PORT")
@click.argument("gunicorn_args", nargs=-1, type=click.UNPROCESSED)
def serve(host: str, port: str, gunicorn_args: tuple[str, ...]) -> None:
    """The production server: gunicorn with the project's gunicorn.conf.py (a worker per core, each with
    its own verified models); other options go to gunicorn.

    Example: modelserve serve --port 8080 --workers 4
    """
    os.environ.update(HOST=host, PORT=str(port))
    os.chdir(PROJECT_ROOT)  # gunicorn.conf.py and main.py live at the project's root
    os.execv(sys.executable, [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", *gunicorn_args, "main:app"])


@cli.command("worker", context_settings={"ignore_unknown_options": True}, with_appcontext=False,
             add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def worker(args: tuple[str, ...]) -> None:
    """The pull worker: takes jobs from a server and runs them on this machine's models (--help: its options).

    Example: modelserve worker --server http://127.0.0.1:8000
    """
    from app.worker import main as run_worker

    sys.argv[0] = "modelserve worker"
    raise SystemExit(run_worker(list(args)))


def main() -> None:
    """The console script's entry point. The log level is set before anything makes the app (listing the
    commands for --help does), since the app reads it once."""
    options = itertools.takewhile(lambda arg: arg.startswith("-"), sys.argv[1:])
    verbose = any(arg in ("-v", "--verbose") for arg in options)
    os.environ.setdefault("MODELSERVE_LOG_LEVEL", "INFO" if verbose else "WARNING")
    cli(prog_name="modelserve")
