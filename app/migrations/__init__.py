"""Schema migrations (Alembic), applied at start-up under a lock so concurrent workers agree."""
from __future__ import annotations

import fcntl
import logging
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
LOCK_KEY = 7342001  # PostgreSQL advisory lock id for migrations


def alembic_config(engine: sa.Engine) -> Config:
    """Alembic config pointing at this folder and the given engine."""
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["engine"] = engine
    return config


def current_and_head(engine: sa.Engine) -> tuple[str | None, str]:
    """(revision the database is at, newest revision in the code)."""
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, head


@contextmanager
def migration_lock(engine: sa.Engine):
    """One migrating process at a time: an advisory lock (PostgreSQL) or a lock file (SQLite)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                conn.commit()
    else:
        database = engine.url.database or ":memory:"
        lock_path = Path(database + ".migrate.lock") if database != ":memory:" else None
        if lock_path is None:
            yield
            return
        with open(lock_path, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def upgrade_database(engine: sa.Engine) -> None:
    """Apply pending migrations (cheap no-op when the schema is current)."""
    current, head = current_and_head(engine)
    if current == head:
        return
    with migration_lock(engine):
        current, head = current_and_head(engine)
        if current != head:
            log.info("migrating database from %s to %s", current, head)
            command.upgrade(alembic_config(engine), "head")
