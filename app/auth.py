"""Bearer-token checks for workers and (optionally) API keys for clients.

Tokens come from the environment (MODELSERVE_WORKER_TOKEN, MODELSERVE_API_KEYS)
and are compared in constant time; they are never logged.
"""
from __future__ import annotations

import hmac

from flask import current_app, request

from app.errors import APIError


class Unauthorized(APIError):
    """Missing or wrong credentials."""

    status = 401


def _presented_token() -> str:
    """The bearer token or X-API-Key header of the request ('' when none)."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("X-API-Key", "").strip()


def _matches(presented: str, valid: list[str]) -> bool:
    """Constant-time comparison against every valid token."""
    found = False
    for token in valid:
        found |= hmac.compare_digest(presented.encode(), token.encode())
    return found


def require_worker() -> None:
    """Worker endpoints need MODELSERVE_WORKER_TOKEN when one is configured."""
    token = current_app.config.get("WORKER_TOKEN") or ""
    if token and not _matches(_presented_token(), [token]):
        raise Unauthorized("worker endpoints need 'Authorization: Bearer <worker token>'")


def require_client() -> None:
    """Client job endpoints need one of MODELSERVE_API_KEYS when any is configured."""
    keys = [k.strip() for k in str(current_app.config.get("API_KEYS") or "").split(",") if k.strip()]
    if keys and not _matches(_presented_token(), keys):
        raise Unauthorized("this endpoint needs an API key: 'X-API-Key: <key>' or 'Authorization: Bearer <key>'")
