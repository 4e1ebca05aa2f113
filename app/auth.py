"""Credentials: a bearer token for workers, optional API keys for clients.

Worker endpoints are closed by default. With no MODELSERVE_WORKER_TOKEN the
server makes a random token on first start and keeps it in a file readable by
its owner only (instance/worker_token, the way Jupyter does it); the log says
where. MODELSERVE_OPEN_WORKER_ENDPOINTS=true opens them for local experiments.

With MODELSERVE_API_KEYS set, every endpoint but liveness, readiness (without its
details), the docs and the pages that hold no data needs one of the keys; jobs belong to the key that
created them. Tokens are compared in constant time and never logged.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from flask import Flask, current_app, g, request

from app.endpoints import CLIENT, WORKER, access_of
from app.errors import APIError

log = logging.getLogger(__name__)

class Unauthorized(APIError):
    """Missing or wrong credentials."""

    status = 401

    def __init__(self, message: str, scheme: str = "Bearer"):
        """A 401 that names the scheme to use (RFC 9110 asks for WWW-Authenticate)."""
        super().__init__(message, headers={"WWW-Authenticate": f'{scheme} realm="modelserve"'})


def presented_token() -> str:
    """The bearer token or X-API-Key header of the request ('' when none)."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("X-API-Key", "").strip()


def matches(presented: str, valid: list[str]) -> bool:
    """Constant-time comparison against every valid token."""
    found = False
    for token in valid:
        found |= hmac.compare_digest(presented.encode(), token.encode())
    return found


def key_id(key: str) -> str:
    """A stable, non-secret name for an API key (what jobs record as their owner)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def api_keys(app: Flask | None = None) -> list[str]:
    """The configured client keys (parsed once, at start)."""
    return (app or current_app).extensions["api_keys"]


# -- worker token -----------------------------------------------------------------
def generated_token(path: Path) -> str:
    """The token in ``path``, made first if there is none (owner-only, safe when workers start together)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(scratch, path)  # atomic: the first process's token wins, complete
        except FileExistsError:
            pass
        finally:
            scratch.unlink()
    return path.read_text().strip()


def init_worker_auth(app: Flask) -> None:
    """Decide how worker endpoints are guarded: the set token, a generated one, or open on request."""
    if app.settings.worker_token:
        app.extensions["worker_token"] = app.settings.worker_token
    elif app.settings.open_worker_endpoints:
        app.extensions["worker_token"] = ""
        log.warning("worker endpoints are OPEN (MODELSERVE_OPEN_WORKER_ENDPOINTS): anyone who can reach this "
                    "server can lease jobs and post results")
    else:
        path = app.settings.worker_token_file
        try:
            token = generated_token(path)
            if not token:
                raise OSError("the file is empty")
            app.extensions["worker_token"] = token
            app.extensions["worker_token_file"] = path  # main.py says where it is; commands stay quiet
        except OSError as exc:  # read-only, unreadable or empty: stay closed with a token nobody knows
            app.extensions["worker_token"] = secrets.token_urlsafe(32)
            log.error("cannot use a worker token in %s (%s): worker endpoints are closed to everyone; set "
                      "MODELSERVE_WORKER_TOKEN", path, exc)


def local_worker_token(settings) -> str:
    """The token a worker on the server's own machine can use: the setting, else the generated file."""
    if settings.worker_token:
        return settings.worker_token
    try:
        return settings.worker_token_file.read_text().strip()
    except OSError:
        return ""


def require_worker() -> None:
    """Worker endpoints need the worker token unless they were opened explicitly."""
    token = current_app.extensions["worker_token"]
    if token and not matches(presented_token(), [token]):
        raise Unauthorized("worker endpoints need 'Authorization: Bearer <worker token>' (the server's "
                           "MODELSERVE_WORKER_TOKEN, or the token file it names in its log)")


# -- client keys --------------------------------------------------------------------
def needs_client_key(endpoint: str | None, app: Flask | None = None) -> bool:
    """Whether a request routed to ``endpoint`` must carry a client key (when keys are configured): what its
    view declares (app/endpoints.py)."""
    return access_of(endpoint, app) == CLIENT


def client_id() -> str | None:
    """The id of the request's API key when it is a valid one, else None (worked out once per request)."""
    if "client" not in g:
        keys = api_keys()
        presented = presented_token()
        g.client = key_id(presented) if keys and presented and matches(presented, keys) else None
    return g.client


def client_label() -> str:
    """Who is asking, for ownership and quotas: "key:<key id>" with a valid key, else "ip:<address>"."""
    client = client_id()
    return f"key:{client}" if client else f"ip:{request.remote_addr or '-'}"


def check_access() -> None:
    """Before every request, by what its view declares: the worker token for worker views; with keys
    configured, a valid key for the views that need one (401 otherwise)."""
    if request.method == "OPTIONS":
        return
    access = access_of(request.endpoint)
    if access == WORKER:
        require_worker()
    elif access == CLIENT and api_keys() and client_id() is None:
        raise Unauthorized("this endpoint needs an API key: 'X-API-Key: <key>' or 'Authorization: Bearer <key>'",
                           scheme="ApiKey")


def init_app(app: Flask) -> None:
    """Worker token and client keys now; the client key check before every request."""
    app.extensions["api_keys"] = list(app.settings.api_keys)
    init_worker_auth(app)
    app.before_request(check_access)
