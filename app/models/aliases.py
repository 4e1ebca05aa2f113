"""Version aliases per model (`production`, `staging`, any name), kept next to the versions.

``MODEL_DIR/NAME/aliases.json`` holds {"aliases": {alias: version}, "history": {alias: [earlier
versions]}}. It is written atomically (a temporary file, then a rename), so a worker that starts
during a promotion reads the old file or the new one, never half of one. The registry serves a
model's `production` alias by default, else its newest version.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

ALIASES_FILE = "aliases.json"
PRODUCTION = "production"


class AliasError(ValueError):
    """An alias operation that cannot be done (unknown version, nothing to roll back to)."""


def aliases_path(model_dir: Path, name: str) -> Path:
    """Where a model's aliases live."""
    return Path(model_dir) / name / ALIASES_FILE


def read_document(model_dir: Path, name: str) -> dict:
    """The whole aliases file ({"aliases": {}, "history": {}} when there is none)."""
    try:
        document = json.loads(aliases_path(model_dir, name).read_text())
    except FileNotFoundError:
        document = {}
    return {"aliases": dict(document.get("aliases", {})), "history": dict(document.get("history", {}))}


def read_aliases(model_dir: Path, name: str) -> dict[str, str]:
    """{alias: version} of a model."""
    return read_document(model_dir, name)["aliases"]


def write_document(model_dir: Path, name: str, document: dict) -> None:
    """Replace the aliases file atomically."""
    path = aliases_path(model_dir, name)
    scratch = path.with_name(f".{ALIASES_FILE}.{os.getpid()}")
    scratch.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    os.replace(scratch, path)


def set_alias(model_dir: Path, name: str, version: str, alias: str = PRODUCTION) -> str | None:
    """Point ``alias`` at ``version`` (which must exist); returns the version it pointed at before."""
    if not (Path(model_dir) / name / str(version) / "manifest.json").exists():
        raise AliasError(f"model {name!r} has no version {version!r} in {model_dir}")
    document = read_document(model_dir, name)
    before = document["aliases"].get(alias)
    if before == str(version):
        return before
    if before is not None:
        document["history"].setdefault(alias, []).append(before)
    document["aliases"][alias] = str(version)
    write_document(model_dir, name, document)
    return before


def roll_back(model_dir: Path, name: str, alias: str = PRODUCTION) -> tuple[str, str]:
    """Point ``alias`` back at the version it had before its last change; returns (from, to)."""
    document = read_document(model_dir, name)
    history = document["history"].get(alias) or []
    current = document["aliases"].get(alias)
    if not history or current is None:
        raise AliasError(f"model {name!r}: alias {alias!r} has no earlier version to roll back to")
    document["aliases"][alias] = history.pop()
    write_document(model_dir, name, document)
    return current, document["aliases"][alias]
