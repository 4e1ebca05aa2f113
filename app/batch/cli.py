"""`modelserve score`: a folder of images or a table scored into a file, resumably."""
from __future__ import annotations

import sys
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from app.models.base import ManifestError
from app.models.cli import model_store
from app.models.store import StoreUnavailable


def init_app(app) -> None:
    """Register the command."""
    app.cli.add_command(score_command)


@click.command("score")
@click.argument("model_name", metavar="MODEL")
@click.argument("source", metavar="INPUT", type=click.Path(exists=True, path_type=Path))
@click.argument("output", metavar="OUTPUT", type=click.Path(path_type=Path))
@click.option("-V", "--model-version", "version", default=None,
              help="Model version (default: the production alias, else the newest).")
@click.option("--batch-size", default=64, show_default=True, help="Items per model call.")
@click.option("--column", "columns", multiple=True, help="Text column, or feature columns (repeatable).")
@click.option("--key", default=None, help="Column that identifies a row (default: the row number).")
@click.option("--threads", default=None, type=int, help="ONNX Runtime threads (default: every core).")
@click.option("--progress/--no-progress", default=None,
              help="A progress bar with the total and the time left (default: on a terminal only).")
@with_appcontext
def score_command(model_name, source, output, version, batch_size, columns, key, threads, progress):
    """Score a folder of images or a CSV/Parquet table into OUTPUT (.csv or .parquet); resumes when re-run.

    Example: modelserve score review_sentiment reviews.csv scores.parquet --column text --key id
    """
    import os

    from app.batch.core import ScoringError, load_model
    from app.batch.files import SourceError
    from app.batch.local import score_dataset
    from app.models.base import Limits

    try:
        store = model_store()
        model = load_model(store.fetch(model_name, version) if store.remote else store.root, model_name, version, batch_size,
                           threads or os.cpu_count() or 1, Limits.from_settings(current_app.settings))
        if progress is None:
            progress = sys.stderr.isatty()
        summary = score_dataset(model, source, output, batch_size, list(columns) or None, key, progress)
    except (ScoringError, SourceError, StoreUnavailable, FileNotFoundError, ManifestError) as exc:
        raise click.ClickException(str(exc)) from exc
    resumed = f", {summary.skipped} from an earlier run" if summary.skipped else ""
    click.echo(f"scored {summary.scored} items with {model.name} v{model.version} in {summary.seconds:.1f} s "
               f"({summary.rate:.0f} items/s): {summary.errors} {'error' if summary.errors == 1 else 'errors'}{resumed}; "
               f"results in {output}")
