"""The one place errors become answers: every APIError, HTTP error, database outage and unexpected
exception is answered as JSON {"error": ...} with its status and headers."""
from __future__ import annotations

import logging

from flask import Flask, g, jsonify
from werkzeug.exceptions import HTTPException

from app.errors import APIError

log = logging.getLogger(__name__)


def error_response(status: int, message: str, **extra):
    """The single JSON shape of every error: {"error": message, ...}."""
    body = {"error": message, **extra}
    response = jsonify(body)
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    """Answer APIError, HTTPException and anything unexpected with JSON."""

    @app.errorhandler(APIError)
    def handle_api_error(err: APIError):
        response = error_response(err.status, err.message, **err.extra)
        response.headers.update(err.headers)
        return response

    @app.errorhandler(HTTPException)
    def handle_http_exception(err: HTTPException):
        message = err.description or err.name
        if err.code == 429:
            message = f"rate limit exceeded ({err.description}); retry later"
        if err.code == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = f"request body is larger than the limit of {limit} bytes"
        response = error_response(err.code or 500, message)
        valid_methods = getattr(err, "valid_methods", None)
        if valid_methods:  # RFC 9110: a 405 lists what is allowed
            response.headers["Allow"] = ", ".join(valid_methods)
        return response

    from app.database import DatabaseUnavailable, is_outage
    from sqlalchemy.exc import DBAPIError, TimeoutError as PoolTimeout

    @app.errorhandler(DatabaseUnavailable)
    def handle_database_down(err: Exception):
        log.warning("database unavailable: %s", err)
        g.database_down = True  # for /health/ready (app/db.py)
        response = error_response(503, "the database is unavailable right now; retry later (inference is not affected)")
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(PoolTimeout)  # every connection of this worker's budget is busy: a stuck database
    @app.errorhandler(DBAPIError)
    def handle_database_error(err: DBAPIError):
        if is_outage(err):
            return handle_database_down(err)
        return handle_unexpected(err)

    @app.errorhandler(Exception)
    def handle_unexpected(err: Exception):
        # Never leak a stack trace to the client; keep it in the log.
        log.exception("unhandled error")
        return error_response(500, "internal server error")
