"""The database in the app: an engine per app, the schema seen to at start, and the endpoints that need the
database (the tables and the engine itself: app/database.py)."""
from __future__ import annotations

import logging

import click
import sqlalchemy as sa
from flask import Flask, current_app, g, request
from flask.cli import AppGroup

from app.database import DatabaseBudget, DatabaseUnavailable, is_outage, make_engine
from app.endpoints import needs_database

log = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    """Create the engine (no connection yet) and bring the schema up to date (AUTO_MIGRATE) or check it.

    A database that is down at start does not stop the server: inference serves, the database
    endpoints answer 503 until it is back, and the schema is seen to on their first use.
    """
    app.extensions["db_engine"] = make_engine(app.settings.database_url, DatabaseBudget.from_settings(app.settings))
    app.extensions["db_schema_current"] = False
    app.extensions["db_state"] = "unknown"
    try:
        ensure_schema(app)
        app.extensions["db_state"] = "ok"  # migrating (or checking the schema) reached it
    except DatabaseUnavailable as exc:
        app.extensions["db_state"] = "unavailable"
        log.error("database not usable at start (%s): inference serves; database endpoints answer 503 "
                  "until it is", exc)
    app.before_request(database_endpoints_need_schema)
    app.after_request(note_database_state)
    app.cli.add_command(db_cli)


def ensure_schema(app: Flask, migrate: bool | None = None) -> None:
    """Make sure the schema is current, once per process: migrate (under the migration lock) when
    AUTO_MIGRATE is on, else only check. DatabaseUnavailable when the database is down, or behind
    and this process may not migrate it (the release step `flask db upgrade` has not run yet)."""
    from app.migrations import current_and_head, upgrade_database

    if app.extensions["db_schema_current"]:
        return
    engine = app.extensions["db_engine"]
    try:
        if app.settings.auto_migrate if migrate is None else migrate:
            upgrade_database(engine)
        else:
            current, head = current_and_head(engine)
            if current != head:
                raise DatabaseUnavailable(f"the schema is at revision {current}, this code needs {head}: "
                                          "run `flask --app app db upgrade`")
    except sa.exc.DBAPIError as exc:
        if is_outage(exc):
            raise DatabaseUnavailable(str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)) from exc
        raise
    app.extensions["db_schema_current"] = True


def uses_database() -> bool:
    """Whether the current request is routed to a view that uses the database (app/endpoints.py); nothing else,
    inference included, touches it."""
    return needs_database(request.endpoint)


def database_endpoints_need_schema() -> None:
    """Before a database endpoint: the schema is current (migrated now if the start could not)."""
    if uses_database():
        ensure_schema(current_app._get_current_object())


def note_database_state(response):
    """What the last database request found ("ok" or "unavailable"), for /health/ready to report;
    the error handler of DatabaseUnavailable marks the request (g.database_down)."""
    if uses_database():
        current_app.extensions["db_state"] = "unavailable" if g.get("database_down") else "ok"
    return response


def get_engine() -> sa.Engine:
    """The current app's engine."""
    return current_app.extensions["db_engine"]


db_cli = AppGroup("db", help="Database schema.")


@db_cli.command("upgrade")
def db_upgrade():
    """Bring the database schema to the newest migration (a release step; exits non-zero if it cannot)."""
    from app.migrations import current_and_head

    app = current_app._get_current_object()
    app.extensions["db_schema_current"] = False
    try:
        ensure_schema(app, migrate=True)
    except DatabaseUnavailable as exc:
        raise click.ClickException(f"database unavailable: {exc}") from exc
    current, _ = current_and_head(app.extensions["db_engine"])
    click.echo(f"database schema at revision {current}")
