"""Database engine per app (SQLite file by default, any SQLAlchemy URL otherwise)."""
from __future__ import annotations

import logging
import sqlite3
import time
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


# Asynchronous jobs; see app/jobs/store.py for the state machine.
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=True),
    sa.Column("content_type", sa.String(128), nullable=False),
    sa.Column("result", sa.LargeBinary, nullable=True),
    sa.Column("result_content_type", sa.String(128), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("lease_id", sa.String(32), nullable=True),
    sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("worker", sa.String(128), nullable=True),
    sa.Column("source", sa.String(16), nullable=False, server_default="api"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_jobs_status_created", "status", "created_at"),
)


def enable_wal(cursor, attempts: int = 100) -> None:
    """Switch a SQLite file to WAL once; workers starting together retry instead of failing.

    WAL is a property of the file, so it is read first (no lock needed). Changing the
    journal mode answers "database is locked" at once, without waiting for the busy
    timeout, when another worker holds the file at that moment.
    """
    if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


def make_engine(url: str) -> sa.Engine:
    """Create an engine; SQLite gets WAL mode and a busy timeout so several workers can share it."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
            cursor = dbapi_connection.cursor()
            enable_wal(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _begin_immediate(conn):
            # Take the write lock at BEGIN, so two processes leasing the same job
            # queue behind each other instead of failing on a stale snapshot.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    for prefix in ("postgres://", "postgresql://"):  # Heroku's spelling, and the driver we ship (psycopg 3)
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url.removeprefix(prefix)
    return sa.create_engine(url, pool_pre_ping=True)


def init_app(app: Flask) -> None:
    """Create the engine, bring the schema to the newest migration, keep the engine on the app."""
    from app.migrations import upgrade_database

    engine = make_engine(app.config["DATABASE_URL"])
    upgrade_database(engine)
    app.extensions["db_engine"] = engine


def get_engine() -> sa.Engine:
    """The current app's engine."""
    return current_app.extensions["db_engine"]
