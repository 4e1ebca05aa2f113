"""Database engine per app (SQLite file by default, any SQLAlchemy URL otherwise)."""
from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from flask import Flask, current_app

log = logging.getLogger(__name__)

metadata = sa.MetaData()

# Reviews with their correct label, sent by users; used by `flask feedback learn`.
review_feedback = sa.Table(
    "review_feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("review", sa.Text, nullable=False),
    sa.Column("label", sa.String(16), nullable=False),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    # The model version this row was learned into (NULL until `flask feedback learn`).
    sa.Column("learned_in_version", sa.String(16), nullable=True),
)


def make_engine(url: str) -> sa.Engine:
    """Create an engine; SQLite gets WAL mode and a busy timeout so several workers can share it."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    if url.startswith("postgres://"):  # Heroku's spelling
        url = "postgresql://" + url.removeprefix("postgres://")
    return sa.create_engine(url, pool_pre_ping=True)


def init_app(app: Flask) -> None:
    """Create the engine and the tables (idempotent), and keep the engine on the app."""
    engine = make_engine(app.config["DATABASE_URL"])
    try:
        metadata.create_all(engine)
    except sa.exc.OperationalError as exc:  # another worker created them at the same moment
        log.info("create_all raced with another process: %s", exc)
    app.extensions["db_engine"] = engine


def get_engine() -> sa.Engine:
    """The current app's engine."""
    return current_app.extensions["db_engine"]
