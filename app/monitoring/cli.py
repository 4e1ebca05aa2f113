"""`modelserve monitor ...`: a version's reference profile, and its monitoring report."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

monitor_cli = AppGroup("monitor", help="A model's reference profile, and how it does in production.")


def init_app(app) -> None:
    """Register the commands."""
    app.cli.add_command(monitor_cli)


@monitor_cli.command("reference")
@click.argument("name")
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option("-V", "--model-version", "version", default=None, help="Default: the version served by default.")
@click.option("--column", "columns", multiple=True, help="Text column, or feature columns (repeatable).")
@click.option("--vocabulary", type=click.Path(exists=True, path_type=Path), default=None,
              help="Text models: a table of the training texts whose words are known (default: DATA's).")
@click.option("--limit", type=click.IntRange(min=100), default=None, help="Use the first LIMIT items only.")
def reference_command(name, data, version, columns, vocabulary, limit):
    """Write the reference profile of a version from held-out DATA (a CSV/Parquet table or a folder of images):
    each input feature's distribution, the answers' label shares and confidence; drift is measured against it.

    Example: modelserve monitor reference review_sentiment imdb-test.csv.gz --vocabulary imdb-train.csv.gz
    """
    from app.batch.core import ScoringError
    from app.monitoring.profile import REFERENCE_FILE
    from app.monitoring.report import reference_from_data

    registry = current_app.extensions["model_registry"]
    registry.load_all()
    model = registry.get(name, version)
    try:
        reference = reference_from_data(model, data, list(columns) or None, vocabulary, limit)
    except (ScoringError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    folder = model.manifest.directory
    reference.add_to(folder)
    click.echo(f"wrote {folder / REFERENCE_FILE}: {reference.examples} items, features "
               f"{', '.join(reference.features)}; labels {reference.labels}")


@monitor_cli.command("report")
@click.argument("name")
@click.option("-V", "--model-version", "version", default=None, help="Default: the version served by default.")
@click.option("--last", type=click.IntRange(1, 100_000), default=None, help="The last N logged requests (default 1000).")
@click.option("--since", default=None, help="Logged requests since this ISO time, e.g. 2026-12-01T00:00:00+00:00.")
@click.option("--html", "html_file", type=click.Path(path_type=Path), default=None,
              help="Also write an HTML report with the distributions drawn side by side.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (what GET /models/NAME/monitoring says).")
def report_command(name, version, last, since, html_file, as_json):
    """How a model version does in production: requests, latency, drift against its reference, live accuracy.

    Example: modelserve monitor report review_sentiment --last 5000 --html report.html
    """
    from app.database import aware
    from app.monitoring.log import reference_of
    from app.monitoring.report import html_report, monitoring_report, table, window_rows

    log = current_app.extensions.get("prediction_log")
    if log is None:
        raise click.ClickException("the prediction log is off (MODELSERVE_MONITOR=false)")
    try:
        moment = aware(dt.datetime.fromisoformat(since)) if since else None
    except ValueError:
        raise click.ClickException(f"--since {since!r} is not an ISO time") from None
    registry = current_app.extensions["model_registry"]
    registry.load_all()
    model = registry.get(name, version)
    log.flush(1.0)
    rows = window_rows(log, model, last, moment)
    report = monitoring_report(log, model, last, moment, rows=rows, flush=False)
    click.echo(json.dumps(report, indent=1, default=str) if as_json else "\n".join(table(report)))
    if html_file:
        html_file.write_text(html_report(report, reference_of(model), rows), encoding="utf-8")
        click.echo(f"wrote {html_file}")
