"""Rate limiting (Flask-Limiter) and CORS (flask-cors): both off unless configured.

MODELSERVE_RATELIMIT_DEFAULT="100/minute;20/second" turns limits on, counted per
valid API key when the request has one, else per client address; storage is memory
(per process) unless MODELSERVE_RATELIMIT_STORAGE_URI names Redis
(redis://127.0.0.1:6379), which shares the counts between workers and servers.
MODELSERVE_CORS_ORIGINS="https://a.example,https://b.example" allows those origins.
"""
from __future__ import annotations

from flask import Flask, request
from flask_limiter import Limiter

from app.auth import client_label

EXEMPT_PREFIXES = ("/health", "/v2/health", "/metrics", "/static", "/docs")


def init_app(app: Flask) -> None:
    """Attach the limiter (enabled only with a default limit) and CORS (only with origins)."""
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    settings = app.settings
    app.config["RATELIMIT_ENABLED"] = bool(settings.ratelimit_default)
    # Counted per validated API key, else per address: an invented key buys no new quota.
    limiter = Limiter(key_func=client_label, app=app,
                      default_limits=[settings.ratelimit_default] if settings.ratelimit_default else [],
                      storage_uri=settings.ratelimit_storage_uri)
    limiter.request_filter(lambda: request.path.startswith(EXEMPT_PREFIXES))
    app.extensions["rate_limiter"] = limiter
    origins = list(settings.cors_origins)
    if origins:
        from flask_cors import CORS

        CORS(app, origins=origins, expose_headers=["X-Request-ID", "Location", "Inference-Header-Content-Length"])
