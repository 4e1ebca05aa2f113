"""The database below the web layer: the tables, an engine within its budget, and the helpers the stores
share (SQLite file by default, any SQLAlchemy URL otherwise). The app's side (an engine per app, the schema
at start, the endpoints that need it) is app/db.py."""
from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

log = logging.getLogger(__name__)


def utcnow() -> dt.datetime:
    """Timezone-aware now (UTC)."""
    return dt.datetime.now(dt.timezone.utc)


def aware(value: dt.datetime | None) -> dt.datetime | None:
    """A stored time as UTC: SQLite returns naive datetimes, and they are UTC (so is a naive time a user gives)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value

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
    # The model version whose answer this corrects (the client says, else the default version then).
    sa.Column("answered_by_version", sa.String(16), nullable=True),
    # Who sent it (API key id or address), and what makes a repeat recognisable (see app/api/review.py).
    sa.Column("client", sa.String(64), nullable=True),
    sa.Column("content_hash", sa.String(64), nullable=True),
    sa.Column("idempotency_key", sa.String(100), nullable=True),
    sa.Index("ux_feedback_content_hash", "content_hash", unique=True),
    sa.Index("ux_feedback_idempotency_key", "idempotency_key", unique=True),
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
    # Who made the job ("key:<API key id>" or "ip:<address>"), and the client's Idempotency-Key
    # with its request's hash.
    sa.Column("client", sa.String(64), nullable=True),
    sa.Column("idempotency_key", sa.String(100), nullable=True),
    sa.Column("request_hash", sa.String(64), nullable=True),
    sa.Index("ix_jobs_status_created", "status", "created_at"),
    sa.Index("ux_jobs_idempotency_key", "idempotency_key", unique=True),
)


# What each model was asked and answered (app/monitoring/log.py): a summary of every input (the
# features drift is measured on) and of every output, written off the request path; the input itself
# only where payload capture is switched on for the model.
predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("version", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("protocol", sa.String(8), nullable=False),
    sa.Column("request_id", sa.String(128), nullable=True),
    # The item's place in its request's batch (what feedback by request id names).
    sa.Column("item", sa.Integer, nullable=False, server_default="0"),
    sa.Column("client", sa.String(64), nullable=True),
    sa.Column("input_digest", sa.String(64), nullable=True),
    sa.Column("features", sa.Text, nullable=False),
    sa.Column("label", sa.String(128), nullable=True),
    sa.Column("score", sa.Float, nullable=True),
    sa.Column("payload", sa.LargeBinary, nullable=True),
    sa.Index("ix_predictions_model_created", "model", "created_at"),
    sa.Index("ix_predictions_request", "model", "request_id"),
)


# The true label of an answer, named by its request id (and item), sent by whoever learned it
# (POST /models/NAME/feedback); joined with the logged answer for live accuracy.
prediction_feedback = sa.Table(
    "prediction_feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("item", sa.Integer, nullable=False),
    sa.Column("label", sa.String(128), nullable=False),
    sa.Column("client", sa.String(64), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Index("ux_prediction_feedback_answer", "model", "request_id", "item", unique=True),
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


@dataclass(frozen=True)
class DatabaseBudget:
    """What the database may hold of a worker process: connections (threads using the database at
    once), how long a request waits for one before its 503, and how long one statement (or SQLite's
    wait for the file lock) may take. A stuck database then holds a few threads for a few seconds,
    never the threads that inference and health checks need."""

    connections: int = 4
    wait_seconds: float = 0.25
    statement_seconds: float = 5.0

    @classmethod
    def from_settings(cls, settings) -> "DatabaseBudget":
        """The budget the server's settings give (app/config.py)."""
        return cls(settings.database_pool_size, settings.database_wait_seconds, settings.database_timeout_seconds)


def make_engine(url: str, budget: DatabaseBudget = DatabaseBudget()) -> sa.Engine:
    """Create an engine within ``budget``; SQLite gets WAL mode and a busy timeout so several workers can share it."""
    pool = {"pool_size": budget.connections, "max_overflow": 0, "pool_timeout": budget.wait_seconds}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": budget.statement_seconds}, **pool)

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
    # A database that does not answer fails a request in seconds (a 503), not at the TCP timeout;
    # a locked table or a slow statement is cut off at the statement budget.
    milliseconds = int(budget.statement_seconds * 1000)
    return sa.create_engine(url, pool_pre_ping=True, **pool, connect_args={
        "connect_timeout": 5, "options": f"-c statement_timeout={milliseconds} -c lock_timeout={milliseconds}"})


def insert_once(engine: sa.Engine, table: sa.Table, row: dict, find_earlier, check=None) -> tuple[object, bool]:
    """Insert ``row`` unless ``find_earlier()`` gives the primary key of a row it repeats; ``check(conn)``,
    when given, runs first in the inserting transaction (and may raise to refuse the row).

    Returns (primary key, created). A unique index guards the race of two identical requests:
    the loser of the insert gets the winner's row.
    """
    earlier = find_earlier()
    if earlier is not None:
        return earlier, False
    try:
        with engine.begin() as conn:
            if check is not None:
                check(conn)
            return conn.execute(sa.insert(table).values(**row)).inserted_primary_key[0], True
    except sa.exc.IntegrityError:
        earlier = find_earlier()
        if earlier is None:
            raise
        return earlier, False


class DatabaseUnavailable(Exception):
    """The database cannot be reached right now (answered as 503 + Retry-After)."""


def is_outage(exc: BaseException) -> bool:
    """Whether a SQLAlchemy error means the database could not be reached or is stuck (not a bad statement):
    no connection, a statement or lock wait past its budget, or every connection of the budget in use."""
    return isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)) or \
        (isinstance(exc, sa.exc.DBAPIError) and (exc.connection_invalidated or
                                                 getattr(exc.orig, "sqlstate", None) in ("57014", "55P03")))
