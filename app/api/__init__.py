"""API blueprints (thin views) and the helpers they share."""
from __future__ import annotations

from flask import current_app


def registry():
    """The current app's model registry."""
    return current_app.extensions["model_registry"]
