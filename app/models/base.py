"""The model interface every runtime implements, and the typed manifest that describes a model.

A model is served the same way whatever its backend:

    model = Runtime(manifest, options)   # settings only, no I/O
    model.load()                         # verify hashes, read artifacts, warm up
    batch = model.decode(inputs)         # validate + preprocess {input name: column} -> batch
    outputs = model.predict(batch)       # batch in, {output name: column} out
    rows = model.postprocess(outputs)    # plain per-item values (label, probabilities, score...)
    model.explain(batch, outputs)        # optional, where a runtime supports it

Callers do not chain these themselves: a loaded model is served through its Runner
(app/models/runner.py), which adds the batcher, the metrics and the prediction log.

``decode`` is the one validation path: REST, V2, jobs and batch scoring all call
it, so the same bad input gets the same status everywhere (400 malformed, 413
too large, 422 unusable content).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import math
import re
import platform
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from app.codecs.numbers import NUMPY_TYPES, ValueOutOfType, finite_or_none, fit_to_dtype
from app.errors import BadRequest, PayloadTooLarge, Unprocessable
from app.models.batching import BatchingSettings, concat_batches, split_outputs

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
# What a model may be called: its folder name in the model store and its name in every URL and job.
# It starts with a letter or digit, so that no name is ".", ".." or an option ("-rf").
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

# V2 datatypes and the numpy types behind them.
# Outputs with one value per class, shown as {label: value} and written to batch results as one column per
# label under this prefix (probability_<label>).
PER_LABEL = {"probabilities": "probability", "decision_scores": "decision_score"}



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


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output: V2 datatype, shape (-1 = any; the first axis is the batch)."""

    name: str
    datatype: str
    shape: tuple[int, ...] = (-1,)
    description: str = ""
    # For BYTES inputs: what the bytes hold ("text", "image" or "bytes").
    content: str = ""

    @classmethod
    def from_dict(cls, spec: Mapping) -> "TensorSpec":
        """Parse one manifest entry; raises ManifestError when it is not usable."""
        try:
            name, datatype, shape = spec["name"], spec["datatype"], spec.get("shape", [-1])
        except (KeyError, TypeError) as exc:
            raise ManifestError(f"tensor description {spec!r} needs 'name' and 'datatype'") from exc
        if datatype != "BYTES" and datatype not in NUMPY_TYPES:
            raise ManifestError(f"tensor {name!r}: unknown datatype {datatype!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= -1 for d in shape):
            raise ManifestError(f"tensor {name!r}: shape must be a list of integers (-1 for any size)")
        return cls(str(name), datatype, tuple(shape), str(spec.get("description", "")), str(spec.get("content", "")))

    def to_dict(self) -> dict:
        """The manifest / metadata form."""
        out: dict[str, Any] = {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}
        if self.content:
            out["content"] = self.content
        if self.description:
            out["description"] = self.description
        return out


@dataclass
class Manifest:
    """The parsed manifest.json of one model version: typed fields for what the server reads."""

    path: Path
    name: str
    version: str
    runtime: str
    artifacts: dict[str, dict]
    task: str = ""
    description: str = ""
    labels: list[str] = field(default_factory=list)
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    # Runtime settings (image preprocessing, vectorizer settings, Python class...).
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    libraries: dict[str, str] = field(default_factory=dict)
    # The whole document, for tools that write a new version from this one.
    document: dict = field(default_factory=dict, repr=False)

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
            raise ManifestError(f"unreadable manifest ({exc})") from exc
        return cls.from_dict(Path(path), data)

    @classmethod
    def from_dict(cls, path: Path, data: dict) -> "Manifest":
        """Typed manifest from its JSON document."""
        if not isinstance(data, dict):
            raise ManifestError("manifest is not a JSON object")
        missing = [k for k in ("name", "version", "runtime", "artifacts") if k not in data]
        if missing:
            raise ManifestError(f"manifest lacks {', '.join(missing)}")
        return cls(
            path=Path(path), name=str(data["name"]), version=str(data["version"]), runtime=str(data["runtime"]),
            artifacts=dict(data["artifacts"]), task=str(data.get("task", "")),
            description=str(data.get("description", "")), labels=[str(x) for x in data.get("labels", [])],
            inputs=[TensorSpec.from_dict(s) for s in data.get("inputs", [])],
            outputs=[TensorSpec.from_dict(s) for s in data.get("outputs", [])],
            config={**data.get("preprocessing", {}), **data.get("config", {})}, metrics=dict(data.get("metrics", {})),
            libraries=dict(data.get("libraries", {})), document=data,
        )

    def get(self, key: str, default=None):
        """Any other manifest field (training details, model size...)."""
        return self.document.get(key, default)

    def artifact_path(self, filename: str) -> Path:
        """The path of one of the manifest's hashed artifacts; ManifestError for any other name, so that
        no manifest field (an estimator, an ONNX file, a module) can make a runtime open an unhashed file
        or one outside the version's folder. verify_artifacts() checks the hashes at load."""
        if not isinstance(filename, str) or filename not in self.artifacts:
            raise ManifestError(f"{filename!r} is not one of the manifest's artifacts (with its hash)")
        path = (self.directory / filename).resolve()
        if self.directory.resolve() not in path.parents:
            raise ManifestError(f"artifact {filename!r} lies outside the model directory")
        return path

    def verify_artifacts(self) -> None:
        """Raise ManifestError unless every listed artifact exists with its recorded SHA-256."""
        for filename, meta in self.artifacts.items():
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
        now = installed_versions([k for k in self.libraries if k != "python"])
        # Training-only libraries (TensorFlow, onnx) are absent from a server; only installed ones can drift.
        return {k: (v, now[k]) for k, v in self.libraries.items()
                if k in now and now[k] != v and now[k] != "not installed"}


@dataclass(frozen=True)
class Limits:
    """What one request may cost; the server's settings, applied by Model.decode for every protocol."""

    max_batch: int = 64
    max_text_chars: int = 50_000
    max_batch_text_chars: int = 500_000
    max_image_pixels: int = 4_000_000
    max_batch_image_pixels: int = 16_000_000

    @classmethod
    def from_settings(cls, settings) -> "Limits":
        """Limits from the server's settings (app/config.py)."""
        return cls(settings.max_batch, settings.max_text_chars, settings.max_batch_text_chars,
                   settings.max_image_pixels, settings.max_batch_image_pixels)


# --- decoding helpers shared by the runtimes -------------------------------------------------

def batch_size(name: str, column) -> int:
    """Number of items in one input column (a list, or an array whose first axis is the batch)."""
    if isinstance(column, np.ndarray):
        if column.ndim == 0:
            raise BadRequest(f"input {name!r} must have a batch dimension")
        return int(column.shape[0])
    if isinstance(column, (list, tuple)):
        return len(column)
    raise BadRequest(f"input {name!r} must be a list of items")


def decode_texts(spec: TensorSpec, column: Sequence, limits: Limits) -> list[str]:
    """Non-blank UTF-8 texts no longer than the limits (str or UTF-8 bytes accepted)."""
    texts, total = [], 0
    for item in column:
        if isinstance(item, (bytes, bytearray, np.bytes_)):
            try:
                item = bytes(item).decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(f"input {spec.name!r}: text is not valid UTF-8") from None
        if not isinstance(item, str):
            raise BadRequest(f"input {spec.name!r} takes text (a string), not {type(item).__name__}")
        if not item.strip():
            raise Unprocessable(f"input {spec.name!r} is empty")
        if len(item) > limits.max_text_chars:
            raise PayloadTooLarge(
                f"input {spec.name!r} has {len(item)} characters; the limit is {limits.max_text_chars}")
        total += len(item)
        texts.append(item)
    if total > limits.max_batch_text_chars:
        raise PayloadTooLarge(
            f"input {spec.name!r} holds {total} characters in all; the limit per request is {limits.max_batch_text_chars}")
    return texts


def decode_bytes(spec: TensorSpec, column: Sequence) -> list[bytes]:
    """Raw bytes items (files)."""
    items = []
    for item in column:
        if not isinstance(item, (bytes, bytearray, np.bytes_)):
            raise BadRequest(f"input {spec.name!r} takes bytes (send {{\"b64\": ...}} in JSON)")
        items.append(bytes(item))
    return items


def decode_array(spec: TensorSpec, column) -> np.ndarray:
    """A numeric batch of the declared datatype and shape, with finite values only."""
    try:
        array = fit_to_dtype(column, NUMPY_TYPES[spec.datatype])
    except ValueOutOfType as exc:
        raise BadRequest(f"input {spec.name!r}: data is out of its range for {spec.datatype}: {exc}") from None
    except (TypeError, ValueError, OverflowError):
        raise BadRequest(f"input {spec.name!r} must be numbers of shape {list(spec.shape)} ({spec.datatype})") from None
    expected = spec.shape
    if array.ndim != len(expected) or any(e not in (-1, a) for e, a in zip(expected[1:], array.shape[1:])):
        raise BadRequest(f"input {spec.name!r} must have shape {list(expected)} (-1: any); got {list(array.shape)}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise Unprocessable(f"input {spec.name!r} contains NaN or infinite values")
    return array


def plain(value):
    """A JSON-able Python value from a numpy scalar or array (non-finite numbers as None)."""
    if isinstance(value, np.ndarray):
        return finite_or_none(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (list, tuple)) and any(isinstance(v, float) for v in value):
        return [plain(v) for v in value]
    return value


# What a model's predict raises when a client's values do not suit it (an unknown category, a value
# too large for the estimator, an index out of an embedding's range): the client's mistake, a 422.
INPUT_ERRORS = (ValueError, TypeError, IndexError, KeyError, ArithmeticError)


def rejected_input(model_name: str, version: str, message: str) -> Unprocessable:
    """The 422 for values a model could not use, with the model's own words (paths cut off, bounded)."""
    from app.models.registry import without_paths

    return Unprocessable(f"model {model_name!r} v{version} could not use this input: {without_paths(message)[:300]}")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class Model:
    """Base class of every served model; runtimes override the steps they need.

    Subclasses implement ``_load()`` (read artifacts) and ``predict(batch)``;
    ``decode`` and ``postprocess`` have defaults driven by the manifest's
    inputs, outputs and labels.
    """

    platform = "custom"  # the V2 metadata "platform"

    def __init__(self, manifest: Manifest, options: dict | None = None):
        """Store the manifest and runtime options (thread counts, limits...); no I/O here."""
        self.manifest = manifest
        self.options = dict(options or {})
        self.limits: Limits = self.options.get("limits") or Limits()
        self.ready = False
        self.batching = self.batching_settings()  # checked here: a bad entry refuses the model, not a request

    def batching_settings(self) -> BatchingSettings:
        """The manifest's "batching" entry, overridden by the server's BATCHING setting for this model."""
        declared = self.manifest.get("batching") or {}
        if not isinstance(declared, Mapping):
            raise ManifestError(f"model {self.name}: \"batching\" must be an object")
        try:
            return BatchingSettings.from_dict({**declared, **self.options.get("batching", {}).get(self.name, {})})
        except ValueError as exc:
            raise ManifestError(f"model {self.name}: {exc}") from None

    # Merging requests' decoded batches and parting the outputs (app/models/batching.py); runtimes
    # whose decode() returns other types than {input: array or list} override these.
    concat_batches = staticmethod(concat_batches)
    split_outputs = staticmethod(split_outputs)

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
        return self.manifest.labels

    def reference(self) -> dict:
        """{name, version}: which model answered, as every response says it."""
        return {"name": self.name, "version": self.version}

    def labels_at(self, indices) -> np.ndarray:
        """The labels of class indices, as an object array (a label output column)."""
        return np.array([self.labels[int(i)] for i in indices], dtype=object)

    @property
    def inputs(self) -> list[TensorSpec]:
        """The inputs the model takes."""
        return self.manifest.inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        """Every output the model returns."""
        return self.manifest.outputs

    @property
    def output_names(self) -> list[str]:
        """Names of the outputs, in order."""
        return [o.name for o in self.outputs]

    # --- lifecycle ---------------------------------------------------------------------------

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

    def warm_up(self) -> None:
        """One prediction on an example input, so the first request pays no first-call costs."""
        self.postprocess(self.predict(self.decode(self.example_inputs())))

    def example_inputs(self) -> dict:
        """One valid item per input, built from the declared specs (used for warm-up and smoke tests)."""
        from app.preprocessing.image import blank_png

        examples = {}
        for spec in self.inputs:
            if spec.datatype == "BYTES":
                examples[spec.name] = [blank_png() if spec.content == "image" else "a warm-up example"]
            else:
                shape = [1] + [d if d > 0 else 1 for d in spec.shape[1:]]
                examples[spec.name] = np.zeros(shape, dtype=NUMPY_TYPES[spec.datatype])
        return examples

    # --- the interface -----------------------------------------------------------------------

    def decode(self, inputs: Mapping[str, Any]):
        """Validate and preprocess {input name: column of items} into the batch predict() takes.

        The default returns {name: decoded column} (texts, bytes or a numeric array) for
        every declared input; runtimes with one input usually override ``decode_input``.
        """
        columns = self.check_inputs(inputs)
        return {spec.name: self.decode_input(spec, columns[spec.name]) for spec in self.inputs}

    def check_inputs(self, inputs: Mapping[str, Any]) -> dict:
        """Every declared input present, nothing unknown, one batch size within the limit."""
        if not isinstance(inputs, Mapping):
            raise BadRequest("inputs must be given by name")
        expected = [s.name for s in self.inputs]
        unknown = sorted(set(inputs) - set(expected))
        missing = [n for n in expected if n not in inputs]
        if unknown or missing:
            raise BadRequest(f"model {self.name!r} takes inputs {expected}; "
                             + (f"missing {missing}" if missing else f"unknown {unknown}"))
        sizes = {batch_size(name, inputs[name]) for name in expected}
        if len(sizes) != 1:
            raise BadRequest(f"inputs of model {self.name!r} have different batch sizes {sorted(sizes)}")
        size = sizes.pop()
        if size == 0:
            raise BadRequest("the batch is empty")
        if size > self.limits.max_batch:
            raise PayloadTooLarge(f"batch of {size} items is over the limit of {self.limits.max_batch} per request")
        return {name: inputs[name] for name in expected}

    def decode_input(self, spec: TensorSpec, column):
        """One input column: text, raw bytes, or a numeric array, by the spec."""
        if spec.datatype == "BYTES":
            return decode_texts(spec, column, self.limits) if spec.content == "text" else decode_bytes(spec, column)
        return decode_array(spec, column)

    def predict(self, batch) -> dict[str, Any]:
        """Named output columns for a decoded batch (subclasses)."""
        raise NotImplementedError

    def postprocess(self, outputs: Mapping[str, Any]) -> list[dict]:
        """Per-item plain values; a probability row becomes {label: p} when the model has labels."""
        columns = {name: outputs[name] for name in self.output_names if name in outputs}
        size = len(next(iter(columns.values())))
        rows = []
        for i in range(size):
            row = {}
            for name, column in columns.items():
                value = column[i]
                if name in PER_LABEL and self.labels and len(value) == len(self.labels):
                    value = {label: plain(float(p)) for label, p in zip(self.labels, value)}
                row[name] = plain(value)
            rows.append(row)
        return rows

    def explain(self, batch, outputs: Mapping[str, Any]) -> list[dict] | None:
        """Per-item explanations, where the runtime supports them; None otherwise."""
        return None

    # What this runtime's predict raises for inputs it cannot use (runtimes add their library's errors);
    # the runner (app/models/runner.py) answers them with a 422.
    input_errors: tuple = INPUT_ERRORS

    @staticmethod
    def batch_length(batch) -> int:
        """Items in a decoded batch."""
        if isinstance(batch, Mapping):
            batch = next(iter(batch.values()))
        return len(batch)

    def describe(self) -> dict:
        """Public summary: name, version, task, labels, inputs, outputs and metrics."""
        return {
            "name": self.name,
            "version": self.version,
            "runtime": self.manifest.runtime,
            "task": self.manifest.task,
            "description": self.manifest.description,
            "ready": self.ready,
            "labels": self.labels,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "metrics": self.manifest.metrics,
            **({"card": self.manifest.get("card")} if self.manifest.get("card") else {}),
            "batching": self.batching.to_dict(),
        }
