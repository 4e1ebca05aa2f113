"""What each view needs, declared on the view: who may call it, whether it uses the database, whether the API
description shows it. Authentication, the database guard and the OpenAPI document read these facts from
the view a request is routed to; nothing keeps lists of endpoint names.

    @bp.get("/health/live")
    @public
    def live(): ...
"""
from __future__ import annotations

from flask import Flask, current_app

PUBLIC = "public"  # anyone, with client keys on too
CLIENT = "client"  # a client key, when keys are configured (every view not declared otherwise)
WORKER = "worker"  # the worker token: pull workers, and the operator's load and unload


def declaring(what: str, **facts):
    """A decorator that sets ``facts`` on a view (``what`` says what they mean)."""

    def declare(view):
        for name, value in facts.items():
            setattr(view, name, value)
        return view

    declare.__doc__ = what
    return declare


public = declaring("Anyone may call it, with client keys configured too.", access=PUBLIC)
for_workers = declaring("The worker token guards it (not the client keys).", access=WORKER)
uses_database = declaring("It reads or writes the database: it answers 503 while the database is down, and sees "
                          "to the schema.", uses_database=True)
undocumented = declaring("Not an API operation (a static file, an icon): left out of the OpenAPI document.",
                         documented=False)


def view_of(endpoint: str | None, app: Flask | None = None):
    """The view function an endpoint routes to (None for no route)."""
    return (app or current_app).view_functions.get(endpoint) if endpoint else None


def access_of(endpoint: str | None, app: Flask | None = None) -> str | None:
    """Who may call an endpoint; None when nothing is routed (a 404 protects nothing). A blueprint's static
    files are public: they are the pages' own."""
    if endpoint is None:
        return None
    if endpoint.endswith(".static"):
        return PUBLIC
    return getattr(view_of(endpoint, app), "access", CLIENT)


def needs_database(endpoint: str | None, app: Flask | None = None) -> bool:
    """Whether an endpoint's view uses the database."""
    return bool(getattr(view_of(endpoint, app), "uses_database", False))


def is_documented(endpoint: str, app: Flask | None = None) -> bool:
    """Whether the API description shows an endpoint."""
    return not endpoint.endswith(".static") and getattr(view_of(endpoint, app), "documented", True)
