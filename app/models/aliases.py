"""Version aliases per model (`production`, `staging`, any name), kept in the model store.

``NAME/aliases.json`` holds {"aliases": {alias: version}, "history": {alias: [earlier versions]}}.
Every change is one read-change-write of that small file through the store (app/models/store.py):
atomic on every store, and conditional on S3, so two promotions at once never lose one silently.
The registry serves a model's `production` alias by default, else its newest version.
"""
from __future__ import annotations

import json

from app.models.store import ALIASES_FILE, MANIFEST_NAME

__all__ = ["ALIASES_FILE", "PRODUCTION", "AliasError", "default_version", "parse_document", "read_aliases", "set_alias",
           "roll_back"]

PRODUCTION = "production"


def default_version(versions, aliases: dict[str, str]) -> str:
    """The version a caller that names none gets, in the server and in batch scoring alike: the
    `production` alias when it is among the servable ``versions``, else the newest of them."""
    production = aliases.get(PRODUCTION)
    return production if production in versions else max(versions, key=int)


class AliasError(ValueError):
    """An alias operation that cannot be done (unknown version, nothing to roll back to)."""


def parse_document(text: str | None) -> dict:
    """An aliases file's document ({"aliases": {}, "history": {}} when there is none or it is unreadable)."""
    try:
        document = json.loads(text) if text else {}
    except ValueError:
        document = {}
    if not isinstance(document, dict):
        document = {}
    aliases, history = document.get("aliases"), document.get("history")
    return {"aliases": {str(k): str(v) for k, v in aliases.items()} if isinstance(aliases, dict) else {},
            "history": {str(k): [str(x) for x in v] for k, v in history.items() if isinstance(v, list)}
            if isinstance(history, dict) else {}}


def read_document(store, name: str) -> dict:
    """The whole aliases file of a model."""
    return parse_document(store.read_text(f"{name}/{ALIASES_FILE}"))


def read_aliases(store, name: str) -> dict[str, str]:
    """{alias: version} of a model."""
    return read_document(store, name)["aliases"]


def change_document(store, name: str, change) -> None:
    """Apply ``change(document)`` to a model's aliases file in one atomic (on S3 conditional) update."""
    def apply(text: str | None) -> str:
        document = parse_document(text)
        change(document)
        return json.dumps(document, indent=2, sort_keys=True) + "\n"

    store.update_text(f"{name}/{ALIASES_FILE}", apply)


def set_alias(store, name: str, version: str, alias: str = PRODUCTION) -> str | None:
    """Point ``alias`` at ``version`` (which must exist); returns the version it pointed at before."""
    if not store.exists(f"{name}/{version}/{MANIFEST_NAME}"):
        versions = sorted(store.versions(name), key=int)
        if not versions:
            raise AliasError(f"no model {name!r} in {store.url} (models: {', '.join(sorted(store.names())) or 'none'})")
        raise AliasError(f"model {name!r} has no version {version!r} in {store.url} (its versions: {', '.join(versions)})")
    before: list[str | None] = []

    def point(document: dict) -> None:
        before[:] = [document["aliases"].get(alias)]
        if before[0] not in (None, str(version)):
            document["history"].setdefault(alias, []).append(before[0])
        document["aliases"][alias] = str(version)

    change_document(store, name, point)
    return before[0]


def roll_back(store, name: str, alias: str = PRODUCTION) -> tuple[str, str]:
    """Point ``alias`` back at the version it had before its last change; returns (from, to)."""
    moved: list[str] = []

    def back(document: dict) -> None:
        history = document["history"].get(alias) or []
        current = document["aliases"].get(alias)
        if not history or current is None:
            raise AliasError(f"model {name!r}: alias {alias!r} has no earlier version to roll back to")
        document["aliases"][alias] = history.pop()
        moved[:] = [current, document["aliases"][alias]]

    change_document(store, name, back)
    return moved[0], moved[1]
