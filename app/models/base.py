"""The model interface: settings in __init__, I/O in load(), computation in predict()."""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.observability import track_inference

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"


class ManifestError(Exception):
    """A model directory whose manifest or files cannot be trusted."""


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def installed_versions(packages: list[str]) -> dict[str, str]:
    """Versions of the given distributions (and of Python) as installed now."""
    versions = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


@dataclass
class Manifest:
    """The parsed manifest.json of one model version."""

    path: Path
    data: dict[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        """Model name, as clients address it."""
        return self.data["name"]

    @property
    def version(self) -> str:
        """Version string (a positive integer, newest is highest)."""
        return str(self.data["version"])

    @property
    def runtime(self) -> str:
        """Which Model subclass serves this version."""
        return self.data["runtime"]

    @property
    def directory(self) -> Path:
        """Folder holding the manifest and its artifacts."""
        return self.path.parent

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        """Parse a manifest file and check the keys every model needs."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ManifestError(f"{path}: unreadable manifest ({exc})") from exc
        missing = [k for k in ("name", "version", "runtime", "artifacts") if k not in data]
        if missing:
            raise ManifestError(f"{path}: manifest lacks {', '.join(missing)}")
        return cls(Path(path), data)

    def verify_artifacts(self) -> None:
        """Raise ManifestError unless every listed artifact exists with its recorded SHA-256."""
        for filename, meta in self.data["artifacts"].items():
            file = (self.directory / filename).resolve()
            if self.directory.resolve() not in file.parents:
                raise ManifestError(f"artifact {filename!r} lies outside the model directory")
            if not file.is_file():
                raise ManifestError(f"artifact {filename} is missing")
            actual = sha256_of(file)
            if actual != meta["sha256"]:
                raise ManifestError(
                    f"sha256 mismatch for {filename}: manifest {meta['sha256'][:12]}..., file {actual[:12]}..."
                )

    def version_drift(self) -> dict[str, tuple[str, str]]:
        """Libraries whose installed version differs from the one the model was saved with."""
        recorded = self.data.get("libraries", {})
        now = installed_versions([k for k in recorded if k != "python"])
        # Training-only libraries (TensorFlow, onnx) are absent from a server; only installed ones can drift.
        return {k: (v, now[k]) for k, v in recorded.items()
                if k in now and now[k] != v and now[k] != "not installed"}


class Model:
    """Base class of every served model.

    Subclasses implement ``_load()`` (read artifacts) and ``predict(batch)``
    (a list of inputs -> a list of plain JSON-able dicts).
    """

    def __init__(self, manifest: Manifest, options: dict | None = None):
        """Store the manifest and runtime options (thread counts...); no I/O here."""
        self.manifest = manifest
        self.options = dict(options or {})
        self.ready = False

    @property
    def name(self) -> str:
        """Model name."""
        return self.manifest.name

    @property
    def version(self) -> str:
        """Model version."""
        return self.manifest.version

    @property
    def labels(self) -> list[str]:
        """Class labels, in the order of the model's outputs."""
        return list(self.manifest.data.get("labels", []))

    def load(self) -> None:
        """Verify the artifacts, load them, warm up, and mark the model ready."""
        self.manifest.verify_artifacts()
        for lib, (saved, now) in self.manifest.version_drift().items():
            log.warning("model %s v%s was saved with %s %s but %s is installed", self.name, self.version, lib, saved, now)
        self._load()
        self.warm_up()
        self.ready = True

    def _load(self) -> None:
        """Read the artifacts into memory (subclasses)."""
        raise NotImplementedError

    def warm_up(self) -> None:
        """Run one prediction so the first real request pays no first-call costs."""

    def predict(self, batch: list) -> list[dict]:
        """Predict a batch of already-validated inputs (subclasses)."""
        raise NotImplementedError

    def run(self, batch: list) -> list[dict]:
        """predict() with latency, item count and in-flight metrics: what the views call."""
        with track_inference(self.name, self.version, len(batch)):
            return self.predict(batch)

    def describe(self) -> dict:
        """Public summary: name, version, task, labels, inputs and metrics."""
        data = self.manifest.data
        return {
            "name": self.name,
            "version": self.version,
            "task": data.get("task"),
            "ready": self.ready,
            "labels": self.labels,
            "inputs": data.get("inputs", []),
            "outputs": data.get("outputs", []),
            "metrics": data.get("metrics", {}),
        }
