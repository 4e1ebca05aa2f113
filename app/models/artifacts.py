"""Writing a model version folder: artifacts, plots and a manifest with hashes."""
from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from app.models.base import MANIFEST_NAME, Limits, Manifest, installed_versions, sha256_of


def next_version(model_root: Path) -> int:
    """1 + the highest existing numeric version folder (1 for a new model)."""
    existing = [int(p.name) for p in Path(model_root).glob("*") if p.is_dir() and p.name.isdigit()]
    return max(existing, default=0) + 1


def staging_dir(model_root: Path, version: int) -> Path:
    """An empty hidden folder to write a version into before it is published."""
    staging = Path(model_root) / f".staging-{version}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def write_manifest(staging: Path, manifest: dict, libraries: list[str]) -> Path:
    """Hash every file in staging and write manifest.json there; returns its path."""
    artifacts = {
        f.name: {"sha256": sha256_of(f), "bytes": f.stat().st_size}
        for f in sorted(staging.iterdir())
        if f.is_file() and f.name != MANIFEST_NAME
    }
    manifest = {
        **manifest,
        "artifacts": artifacts,
        "libraries": installed_versions(libraries),
        "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    path = staging / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


@contextmanager
def loaded_version(folder: Path) -> Iterator:
    """The version in ``folder`` (staged or published) loaded as the server loads it."""
    from app.models.registry import build_model

    model = build_model(Manifest.read(folder / MANIFEST_NAME), {"limits": Limits()})
    model.load()
    try:
        yield model
    finally:
        getattr(model, "close", lambda: None)()  # a user model's process


def publish_version(staging: Path, manifest: dict, libraries: list[str], reference: Callable | None = None) -> Path:
    """Hash every file in staging, write manifest.json, and rename the folder into place; with ``reference``
    (the loaded version -> its reference profile over held-out data), the profile drift is measured against
    is written and hashed first.

    The rename is atomic, so a server scanning the model folder never sees a
    half-written version.
    """
    write_manifest(staging, manifest, libraries)
    if reference is not None:
        with loaded_version(staging) as model:
            reference(model).add_to(staging)
    final = staging.parent / str(manifest["version"])
    staging.rename(final)
    return final


def add_artifact(version_dir: Path, filename: str, metrics: dict | None = None) -> None:
    """Record a file written into a published version's folder as one of its hashed artifacts (and, given,
    figures about it under the manifest's metrics), rewriting manifest.json in place."""
    path = version_dir / MANIFEST_NAME
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["artifacts"][filename] = {"sha256": sha256_of(version_dir / filename),
                                       "bytes": (version_dir / filename).stat().st_size}
    manifest.setdefault("metrics", {}).update(metrics or {})
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
