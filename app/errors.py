"""The errors a client is told of: each with its HTTP status, and the headers it needs (Retry-After,
WWW-Authenticate) declared with it. No Flask here: every layer raises these, and
app/error_handlers.py turns them (and anything else) into JSON answers."""
from __future__ import annotations


class APIError(Exception):
    """An error with an HTTP status and a message safe to show the client."""

    status = 400

    def __init__(self, message: str, status: int | None = None, retry_after: int | None = None,
                 headers: dict[str, str] | None = None, **extra):
        """The message, an optional status override, when to retry (Retry-After, seconds), other response
        headers, and extra JSON fields."""
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.headers = dict(headers or {})
        if retry_after is not None:
            self.headers["Retry-After"] = str(retry_after)
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
        super().__init__(message, retry_after=retry_after, **extra)
