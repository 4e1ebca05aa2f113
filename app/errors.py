"""API errors and the one handler that turns every error into JSON."""
from __future__ import annotations

import logging

from flask import Flask, g, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class APIError(Exception):
    """An error with an HTTP status and a message safe to show the client."""

    status = 400

    def __init__(self, message: str, status: int | None = None, **extra):
        """Store the message, an optional status override and extra JSON fields."""
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.extra = extra


class BadRequest(APIError):
    """The request is malformed (missing field, undecodable body)."""

    status = 400


class NotFound(APIError):
    """The named resource does not exist."""

    status = 404


class PayloadTooLarge(APIError):
    """The payload is over a configured limit."""

    status = 413


class UnsupportedMediaType(APIError):
    """The body's content type is not one this endpoint reads."""

    status = 415


class Unprocessable(APIError):
    """The request is well formed but its content cannot be used (empty text, not an image)."""

    status = 422


class Conflict(APIError):
    """The request conflicts with the state it would change (a stale lease, a finished job, an answer
    already labelled otherwise)."""

    status = 409


class ModelNotFound(NotFound):
    """No model with that name (or version) is registered."""


class ModelNotReady(APIError):
    """The model exists but is not loaded (still loading, or refused at load)."""

    status = 503


class ServiceUnavailable(APIError):
    """A part this request needs (the model store) does not answer now; the client may retry later."""

    status = 503

    def __init__(self, message: str, retry_after: int = 5, **extra):
        """The message, and when to retry (Retry-After, seconds)."""
        super().__init__(message, **extra)
        self.headers = {"Retry-After": str(retry_after)}


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
        response.headers.update(getattr(err, "headers", {}))
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

    from app.db import DatabaseUnavailable, is_outage
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
