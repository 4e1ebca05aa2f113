"""Loads the model versions the model store holds, once per worker, and follows the store's changes.

Layout: ``<name>/<version>/manifest.json`` plus the artifacts the manifest lists with their
SHA-256, in the local model folder or in this instance's cache of a shared store
(app/models/store.py). A version whose files fail verification is refused with a log line and
never served; a shared store's changes reach every worker through StoreWatcher.
"""
from __future__ import annotations

import importlib
import logging
import re
import threading
import time
from pathlib import Path
from typing import Callable

from app.errors import ModelNotFound, ModelNotReady
from app.models.aliases import PRODUCTION, default_version, read_aliases
from app.models.base import MANIFEST_NAME, Limits, Manifest, ManifestError, Model
from app.models.runner import Runner
from app.models.store import UNLOADED_FILE, LocalStore, StoreUnavailable

log = logging.getLogger(__name__)


# The one table of runtimes: a manifest's "runtime" -> what builds its Model (imported on first use).
RUNTIMES = {
    "sklearn": "app.models.sklearn:SklearnModel",
    "sklearn-text": "app.models.text:SklearnTextModel",
    "onnx": "app.models.onnx:OnnxModel",
    "onnx-image": "app.models.onnx:OnnxImageModel",
    "python": "app.models.isolated:load_isolated_model",  # user code: in a process of its own
}


def runtime_factory(runtime: str) -> Callable[[Manifest, dict], Model]:
    """The class (or factory) that serves a runtime; ManifestError when there is none here."""
    target = RUNTIMES.get(runtime)
    if target is None:
        raise ManifestError(f"unknown runtime {runtime!r} (known: {', '.join(sorted(RUNTIMES))})")
    module_name, _, attribute = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except ImportError as exc:  # e.g. onnxruntime not installed on this machine
        raise ManifestError(f"runtime {runtime!r} is not available in this server ({exc})") from exc


def runtime_options(settings) -> dict:
    """What every model is built with, from the settings: ONNX Runtime threads, request limits, batching."""
    return {"onnx_threads": settings.onnx_threads, "limits": Limits.from_settings(settings),
            "batching": dict(settings.batching), "python_model_timeout": settings.python_model_timeout_seconds}


def build_model(manifest: Manifest, options: dict | None = None) -> Model:
    """The unloaded Model of a manifest, by its runtime."""
    return runtime_factory(manifest.runtime)(manifest, options or {})


def discover(model_dir: Path, only: set[str] | None = None) -> list[Manifest]:
    """Every readable manifest under model_dir, sorted by name then numeric version."""
    manifests = []
    for manifest_path in sorted(Path(model_dir).glob(f"*/*/{MANIFEST_NAME}")):
        name_dir, version_dir = manifest_path.parent.parent.name, manifest_path.parent.name
        if only and name_dir not in only:
            continue
        if not version_dir.isdigit():
            log.warning("ignoring %s: version folder must be a positive integer", manifest_path.parent)
            continue
        try:
            manifest = Manifest.read(manifest_path)
        except ManifestError as exc:
            log.error("refusing model %s/%s: %s", name_dir, version_dir, exc)
            continue
        if manifest.name != name_dir or manifest.version != version_dir:
            log.error("refusing %s: manifest says %s v%s", manifest_path.parent, manifest.name, manifest.version)
            continue
        manifests.append(manifest)
    return sorted(manifests, key=lambda m: (m.name, int(m.version)))


ABSOLUTE_PATH = re.compile(r"(?:/[\w.+@~-]+)+/([\w.+@~-]+)")


def without_paths(text: str) -> str:
    """``text`` with every absolute path cut to its last part (the log keeps the whole reason)."""
    return ABSOLUTE_PATH.sub(r"\1", text)


class ModelRegistry:
    """Per-app (per-worker) table of loaded models: name -> version -> the version's Runner (its model,
    batcher, metrics and log: app/models/runner.py)."""

    def __init__(self, store, only: set[str] | None = None, options: dict | None = None, prediction_log=None):
        """Store where to look (a store, or a local folder's path), the runtime options, and the prediction
        log the served answers are recorded in (none: not recorded); nothing is read until load_all()."""
        self.store = LocalStore(store) if isinstance(store, (str, Path)) else store
        self.model_dir = self.store.root  # the folder the models are loaded from (a shared store's cache)
        self.folder = LocalStore(self.model_dir)
        self.store_refused: dict[str, str] = {}  # versions a shared store holds that failed verification
        self.only = only or None
        self.options = dict(options or {})
        self.prediction_log = prediction_log
        self._models: dict[str, dict[str, Runner]] = {}
        self.refused: dict[str, str] = {}  # "name/version" -> reason
        self.load_seconds: dict[str, float] = {}
        self.aliases: dict[str, dict[str, str]] = {}  # name -> alias -> version (read at load)
        self.unloaded: set[str] = set()  # models whose folder says UNLOADED
        self._lock = threading.Lock()
        self.loaded = False

    def load_all(self) -> None:
        """Load every model version found; models already loaded are kept as they are."""
        with self._lock:
            self.sync_store()
            self.unloaded = {p.parent.name for p in self.model_dir.glob(f"*/{UNLOADED_FILE}")}
            found = [m for m in discover(self.model_dir, self.only) if m.name not in self.unloaded]
            table: dict[str, dict[str, Runner]] = {}
            for manifest in found:
                key = f"{manifest.name}/{manifest.version}"
                runner = self._models.get(manifest.name, {}).get(manifest.version) or self._load_one(manifest, key)
                if runner is not None:
                    table.setdefault(manifest.name, {})[manifest.version] = runner
            present = {f"{m.name}/{m.version}" for m in found}
            self.refused = {k: v for k, v in self.refused.items() if k in present} | self.store_refused
            for name in sorted((self.only or set()) - {m.name for m in discover(self.model_dir, self.only)}):
                log.error("model %r named in the MODELS setting has no version in the model folder", name)
            self.aliases = {name: read_aliases(self.folder, name) for name in table}
            for name, aliases in self.aliases.items():
                if aliases.get(PRODUCTION) and aliases[PRODUCTION] not in table[name]:
                    log.error("model %r: its production version %s cannot be served; serving the newest instead",
                              name, aliases[PRODUCTION])
            dropped = [m for name, versions in self._models.items() for v, m in versions.items()
                       if table.get(name, {}).get(v) is not m]
            self._models = table  # swap in one assignment: readers see old or new, never half
            self.loaded = True
        for runner in dropped:  # a user model's process is stopped once nothing serves it
            getattr(runner.model, "close", lambda: None)()

    def sync_store(self) -> None:
        """Bring a shared store's cache up to date; while the store does not answer, serve what the
        cache holds (the outage is logged once and shown by readiness and a gauge)."""
        if not self.store.remote:
            self.store.sync(self.only)  # notes what the folder looks like, for the watcher
            return
        from app.metrics import record_store_state

        try:
            self.store_refused = self.store.sync(self.only)
        except StoreUnavailable as exc:
            if self.store.state != "unavailable":
                log.error("model store %s unavailable, serving the %s: %s", self.store.url,
                          "cached models" if any(self.model_dir.glob(f"*/*/{MANIFEST_NAME}")) else "no model (cache empty)",
                          exc)
            self.store.state, self.store.problem = "unavailable", without_paths(str(exc))
        else:
            if self.store.state == "unavailable":
                log.info("model store %s answers again", self.store.url)
            self.store.state, self.store.problem = "ok", ""
        record_store_state(self.store.state == "ok")

    def _load_one(self, manifest: Manifest, key: str) -> Runner | None:
        """Load one version and make its runner, or log why it is refused and return None."""
        started = time.perf_counter()
        try:
            model = build_model(manifest, self.options)
            model.load()
        except ManifestError as exc:
            reason = f"verification failed: {exc}"
        except (Exception, SystemExit) as exc:  # any load error, an exit included, refuses the model, never the server
            reason = f"load failed: {type(exc).__name__}: {exc}"
        else:
            self.load_seconds[key] = time.perf_counter() - started
            from app.metrics import record_model_load

            record_model_load(manifest.name, manifest.version, self.load_seconds[key])
            self.refused.pop(key, None)
            log.info("loaded model %s in %.2fs", key, self.load_seconds[key])
            return Runner(model, self.prediction_log)
        log.error("refusing model %s: %s", key, reason)
        self.refused[key] = without_paths(reason)  # shown to anonymous clients: no file system layout
        return None

    def ensure_loaded(self) -> None:
        """Load on first use (the server entry point loads eagerly)."""
        if not self.loaded:
            self.load_all()

    def names(self) -> list[str]:
        """Names of every model with at least one servable version."""
        self.ensure_loaded()
        return sorted(self._models)

    def serves(self, name: str) -> bool:
        """Whether a model of that name has a servable version (a dict lookup: the admission gate asks per request)."""
        self.ensure_loaded()
        return name in self._models

    def versions(self, name: str) -> list[str]:
        """Loaded versions of a model, oldest first."""
        self.ensure_loaded()
        return sorted(self._models.get(name, {}), key=int)

    def get(self, name: str, version: str | None = None) -> Model:
        """The model of that name (the default version unless one is named), or a 404/503 APIError."""
        return self.runner(name, version).model

    def runner(self, name: str, version: str | None = None) -> Runner:
        """What serves the model of that name (the default version unless one is named), or a 404/503 APIError."""
        self.ensure_loaded()
        versions = self._models.get(name)
        if not versions:
            refused = [k for k in self.refused if k.split("/")[0] == name]
            if refused:
                raise ModelNotReady(f"model {name!r} is not available: {self.refused[refused[-1]]}")
            raise ModelNotFound(f"unknown model {name!r}", available=self.names())
        if version is None:
            version = self.default_version(name)
        runner = versions.get(str(version))
        if runner is None:
            raise ModelNotFound(f"model {name!r} has no version {version!r}", versions=sorted(versions, key=int))
        if not runner.model.ready:
            raise ModelNotReady(f"model {name!r} version {version} is not ready")
        return runner

    def default_version(self, name: str) -> str:
        """What a request without a version gets: the `production` alias when it can serve, else the newest."""
        return default_version(self._models[name], self.aliases.get(name, {}))

    def version_tags(self, name: str, version: str) -> list[str]:
        """The aliases pointing at a version, and "default" when requests without a version get it."""
        tags = sorted(alias for alias, v in self.aliases.get(name, {}).items() if v == version)
        return tags + (["default"] if self.default_version(name) == version else [])

    def all_models(self) -> list[Model]:
        """Every loaded model version."""
        self.ensure_loaded()
        return [r.model for versions in self._models.values() for r in versions.values()]


class StoreWatcher:
    """Polls the model store (a shared one, or the local folder) every ``seconds`` and reloads the
    registry when its fingerprint changed.

    Only this thread talks to the store while serving: requests never wait for it. A load
    builds the new versions beside the served ones and swaps the table in one assignment,
    so no request is dropped and none sees half a change.
    """

    def __init__(self, registry: ModelRegistry, seconds: float):
        """Remember what to watch; start() starts the thread."""
        self.registry, self.seconds = registry, seconds
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="model-store-watcher", daemon=True)

    def start(self) -> "StoreWatcher":
        """Start polling (a daemon thread: it never keeps a worker from exiting)."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop after the current poll."""
        self._stop.set()

    def poll(self) -> bool:
        """One check; reloads when the store changed or the last sync failed. True when it reloaded."""
        store = self.registry.store
        try:
            changed = (store.remote and store.state != "ok") or \
                store.fingerprint(self.registry.only) != store.synced_fingerprint
        except StoreUnavailable:
            changed = True  # load_all notes the outage (once) and keeps serving
        if changed:
            self.registry.load_all()
        return changed

    def _run(self) -> None:
        while not self._stop.wait(self.seconds):
            try:
                self.poll()
            except Exception:  # a bug here must not stop the watching
                log.exception("model store poll failed")
