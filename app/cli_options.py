"""Command-line options that the commands of several packages share (training's and feedback's), kept apart
from both so that neither imports the other for them."""
from __future__ import annotations

from pathlib import Path

import click


def data_option(func):
    """--data: the shared data folder (default: the DATA_DIR setting)."""
    return click.option(
        "--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="Folder holding imdb/, malaria/ and stopwords/ (default: the DATA_DIR setting).",
    )(func)
