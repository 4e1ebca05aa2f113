"""Model loading and per-item scoring shared by the local command and Spark (no Flask, no Spark)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from app.batch.files import BadItem
from app.errors import APIError
from app.models.aliases import default_version, read_aliases
from app.models.base import PER_LABEL, Limits, Manifest, ManifestError, Model
from app.models.registry import build_model, discover
from app.models.runner import Runner, items_of
from app.models.store import LocalStore

ERROR = "error"


class ScoringError(ValueError):
    """The run cannot start (no such model, input that does not fit the model)."""


def model_folder(location: str | Path, name: str, version: str | None = None) -> Path:
    """A local folder holding the model: ``location`` itself, or this machine's cache of a shared store
    (s3://, gs://, file://), into which the version is fetched and verified once (per Python worker)."""
    if "://" not in str(location):
        return Path(location)
    import tempfile

    from app.config import load_settings
    from app.models.store import RemoteStore, StoreUnavailable

    # A Spark or Beam worker may run from an installed package, where the checkout's instance/ folder (the
    # server's default cache) is not there to write: the temporary folder, unless MODEL_CACHE is set.
    settings = load_settings()
    cache = settings.model_cache if "model_cache" in settings.model_fields_set else \
        Path(tempfile.gettempdir()) / "modelserve-model-cache"
    try:
        return RemoteStore(str(location), cache, 1 << 62).fetch(name, version)
    except (StoreUnavailable, FileNotFoundError, ManifestError) as exc:
        raise ScoringError(f"model {name!r} from {location}: {exc}") from exc


def default_store() -> str:
    """Where the batch tools find models: the server's MODEL_STORE when set, else its MODEL_DIR."""
    from app.config import load_settings

    settings = load_settings()
    return settings.model_store or str(settings.model_dir)


def find_manifest(model_dir: str | Path, name: str, version: str | None = None) -> Manifest:
    """The manifest of ``name``: the version given, else the one the server serves by default
    (its `production` alias, else the newest). ``model_dir`` may be a shared store's URL."""
    model_dir = model_folder(model_dir, name, version)
    found = discover(Path(model_dir), {name})
    if found and version is None:  # the server's rule: production when it is there, else the newest
        version = default_version([m.version for m in found], read_aliases(LocalStore(model_dir), name))
    manifests = [m for m in found if version is None or m.version == str(version)]
    if not manifests:
        known = sorted({m.name for m in discover(Path(model_dir))}) if version is None else \
            sorted(m.version for m in discover(Path(model_dir), {name}))
        raise ScoringError(f"no model {name!r}{f' version {version}' if version else ''} in {model_dir} "
                           f"({'models' if version is None else 'its versions'}: {', '.join(known) or 'none'})")
    return max(manifests, key=lambda m: int(m.version))


def load_model(model_dir: str | Path, name: str, version: str | None = None, batch_size: int = 64,
               onnx_threads: int = 1, limits: Limits | None = None) -> Model:
    """The model, hash-verified and loaded, accepting batches of ``batch_size`` items."""
    base = limits or Limits()  # per-item limits stay; the per-request ones grow with the batch
    limits = replace(base, max_batch=max(batch_size, 1),
                     max_batch_text_chars=max(base.max_batch_text_chars, base.max_text_chars * batch_size),
                     max_batch_image_pixels=max(base.max_batch_image_pixels, base.max_image_pixels * batch_size))
    model = build_model(find_manifest(model_dir, name, version), {"onnx_threads": onnx_threads, "limits": limits})
    model.load()
    if len(model.inputs) != 1:
        raise ScoringError(f"model {name!r} takes several inputs; batch scoring takes models with one")
    return model


def result_columns(manifest: Manifest) -> list[str]:
    """The output columns of a model's rows, in order: one per output, a probability column per label."""
    columns = []
    for spec in manifest.outputs:
        if spec.name in PER_LABEL and manifest.labels:
            columns += [f"{PER_LABEL[spec.name]}_{label}" for label in manifest.labels]
        else:
            columns.append(spec.name)
    return columns + [ERROR]


def flat_row(result: dict) -> dict[str, Any]:
    """A model's plain result as flat columns ({label: p} becomes probability_<label>)."""
    row = {}
    for name, value in result.items():
        if name in PER_LABEL and isinstance(value, dict):
            row.update({f"{PER_LABEL[name]}_{label}": p for label, p in value.items()})
        else:
            row[name] = value
    return row


def score_items(model: Model, items: Sequence) -> list[dict[str, Any]]:
    """Flat result rows for ``items`` (see ``results``)."""
    return [flat_row(result) for result in results(model, items)]


def results(model: Model, items: Sequence) -> list[dict[str, Any]]:
    """The model's plain result per item, as /models/NAME/predict answers it; an item that could not be
    read (a BadItem) or that the model refuses gets only {"error": reason}, the rest are scored."""
    unreadable = {i: item.reason for i, item in enumerate(items) if isinstance(item, BadItem)}
    if unreadable:
        scored = iter(results(model, [item for i, item in enumerate(items) if i not in unreadable]))
        return [{ERROR: unreadable[i]} if i in unreadable else next(scored) for i in range(len(items))]
    if not items:
        return []
    serve = Runner(model).serve  # not logged: batch scoring is no served traffic
    try:
        return serve(items_of(model, items)).rows
    except APIError:
        pass
    answers = []
    for item in items:  # find the bad ones: each alone
        try:
            answers.append(serve(items_of(model, [item])).rows[0])
        except APIError as exc:
            answers.append({ERROR: exc.message})
    return answers


def table_columns_for(model: Model | Manifest, names: list[str], source: str) -> list[str]:
    """The columns a model reads from a table with columns ``names``: the text column (named like the
    model's input, else "text" or "review") or every column for a numeric model."""
    if input_kind(model) == "numbers":
        return names
    for candidate in (model.inputs[0].name, "text", "review"):
        if candidate in names:
            return [candidate]
    raise ScoringError(f"{source}: name the text column with --column (columns: {', '.join(names)})")


def input_kind(model: Model | Manifest) -> str:
    """What one item is for this model: "image" (encoded file bytes), "text" or "numbers"."""
    spec = model.inputs[0]
    if spec.datatype == "BYTES":
        return "image" if spec.content == "image" else "text"
    return "numbers"
