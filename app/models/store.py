"""Where model versions and their control files live, and the verified cache of a shared store.

One setting names the store (MODEL_STORE; empty: the MODEL_DIR folder):

- a folder path: served in place, as on one machine (no cache, no extra dependency);
- ``file:///mnt/models`` (a shared volume), ``s3://bucket/prefix`` (AWS S3 and S3-compatible
  servers), ``gs://bucket/prefix`` (Google Cloud Storage): a store shared by every instance,
  read through fsspec (``pip install -r requirements-store.txt``). Each instance copies the
  versions it serves into its own cache (MODEL_CACHE), checking every artifact against the
  manifest's SHA-256 before the version is renamed into place, and watches the small control
  files (app/models/registry.py StoreWatcher) to converge on what the store says.

The layout is the same everywhere, so ``aws s3 sync saved_models s3://bucket/models`` publishes
today's models: ``NAME/VERSION/manifest.json`` + its artifacts, ``NAME/aliases.json``, and
``NAME/UNLOADED`` for a model taken out of service.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from app.models.base import MANIFEST_NAME, MODEL_NAME, Manifest, ManifestError, sha256_of

log = logging.getLogger(__name__)

ALIASES_FILE = "aliases.json"
# A model folder holding this file is not served (the V2 repository extension's unload).
UNLOADED_FILE = "UNLOADED"
# Written by `flask models reload` in a local model folder: every watching worker loads the folder again.
RELOAD_REQUEST = ".reload"
# An artifact's name in a manifest: relative, ASCII, no empty, "." or ".." part (nothing can be
# written or read outside the version's folder, whatever the manifest says).
ARTIFACT_PART = re.compile(r"[A-Za-z0-9_+@~-][A-Za-z0-9_.+@~-]{0,127}")


class StoreUnavailable(Exception):
    """The model store did not answer (network, credentials, permissions); the message says how."""


class StoreConflict(Exception):
    """A conditional write lost to another writer (the caller reads again and retries)."""


def check_artifact_name(filename: str) -> None:
    """ManifestError unless the artifact name stays inside its version folder."""
    parts = filename.split("/") if isinstance(filename, str) else [""]
    if not all(ARTIFACT_PART.fullmatch(part) and part not in (".", "..") for part in parts):
        raise ManifestError(f"artifact name {filename!r} is not a plain relative file name")


@contextlib.contextmanager
def folder_lock(folder: Path):
    """An exclusive lock on a folder, held by one process (and thread) at a time on this machine."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def entry_name(entry: dict) -> str:
    """The last part of an fsspec listing entry's name (a folder's or a file's own name)."""
    return entry["name"].rstrip("/").rsplit("/", 1)[-1]


def version_numbers(names) -> list[str]:
    """The numeric version folder names among ``names``, oldest first."""
    return sorted((n for n in names if n.isdigit() and not n.startswith("0")), key=int)


class LocalStore:
    """A model folder on this machine, served in place (the default)."""

    remote = False

    def __init__(self, folder: str | Path):
        """Remember the folder; nothing is read yet."""
        self.root = Path(folder)
        self.url = str(folder)
        self.state = "local"
        self.problem = ""
        self.synced_fingerprint = None

    def read_text(self, key: str) -> str | None:
        """A small file's text, None when there is none."""
        try:
            return (self.root / key).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def write_text(self, key: str, text: str) -> None:
        """Replace a small file atomically (readers see the old text or the new, never half)."""
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        scratch.write_text(text, encoding="utf-8")
        os.replace(scratch, path)

    def delete(self, key: str) -> None:
        """Remove a small file (nothing when it is not there)."""
        (self.root / key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        """Whether a file is there."""
        return (self.root / key).is_file()

    def names(self) -> list[str]:
        """Every model folder name in the folder."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and MODEL_NAME.fullmatch(p.name)) \
            if self.root.is_dir() else []

    def versions(self, name: str) -> list[str]:
        """Numeric version folders of a model, oldest first."""
        folder = self.root / name
        return version_numbers(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def update_text(self, key: str, change: Callable[[str | None], str]) -> str:
        """Read, change and write a small file under a lock, so concurrent updates do not lose one."""
        with folder_lock(self.root):
            text = change(self.read_text(key))
            self.write_text(key, text)
            return text

    def sync(self, only: set[str] | None = None) -> dict[str, str]:
        """Nothing to copy: the folder is what the registry reads (no refusals of its own); remember
        what the folder looked like, so that the watcher can tell when it changes."""
        self.synced_fingerprint = self.fingerprint(only)
        return {}

    def fingerprint(self, only: set[str] | None = None) -> tuple:
        """What changes when anything served changes: each model folder's version folders (with or
        without their manifest), the size and mtime of its control files, and the reload request
        (`flask models reload`). A few stat calls per model."""
        state = []
        folders = sorted(p for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
        for folder in folders:
            if folder.name.startswith(".") or (only and folder.name not in only):
                continue
            entries = []
            for entry in sorted(folder.iterdir()):
                if entry.is_dir():
                    entries.append((entry.name, (entry / MANIFEST_NAME).is_file()))
                elif entry.name in (ALIASES_FILE, UNLOADED_FILE):
                    status = entry.stat()
                    entries.append((entry.name, status.st_mtime_ns, status.st_size))
            state.append((folder.name, tuple(entries)))
        request = self.root / RELOAD_REQUEST
        return tuple(state), request.stat().st_mtime_ns if request.exists() else None

    def request_reload(self) -> None:
        """Ask every worker watching this folder to load it again (what `flask models reload` does)."""
        self.write_text(RELOAD_REQUEST, f"{os.getpid()} {time.time()}\n")

    def staging(self, name: str, version: int | str) -> Path:
        """An empty hidden folder beside the model's versions to write a new one into."""
        from app.models.artifacts import staging_dir

        return staging_dir(self.root / name, int(version))

    def publish(self, folder: Path, name: str, version: str) -> str:
        """Rename a staged version folder into place (atomic: a server never sees half of it); returns where."""
        target = self.root / name / str(version)
        if target.exists():
            raise FileExistsError(f"{name} version {version} already exists in {self.url}")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(folder, target)
        return str(target)

    def discard(self, staging: Path) -> None:
        """Remove a staged folder that will not be published (and the model's folder if it held nothing else)."""
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            staging.parent.rmdir()


class RemoteStore:
    """A store shared by many instances (fsspec), with this instance's verified cache of it."""

    remote = True

    def __init__(self, url: str, cache_dir: str | Path, max_cache_bytes: int, storage_options: dict | None = None):
        """Open the file system (no request yet) and the cache folder of this store."""
        try:
            import fsspec.core
        except ImportError as exc:
            raise StoreUnavailable(f"MODEL_STORE {url!r} needs the store libraries: pip install -r "
                                   "requirements-store.txt") from exc
        self.url = url.rstrip("/")
        self.fs, self.base = fsspec.core.url_to_fs(self.url, **(storage_options or default_options(self.url)))
        self.base = self.base.rstrip("/")
        self.root = cache_folder(self.url, cache_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.local = LocalStore(self.root)
        self.max_cache_bytes = max_cache_bytes
        self.state = "unknown"  # "ok" once the store answered, "unavailable" while it does not
        self.problem = ""
        self.synced_fingerprint = None  # what fingerprint() said when the last sync began

    # --- small files and listings -----------------------------------------------------------

    def _path(self, key: str) -> str:
        return f"{self.base}/{key}" if key else self.base

    def _call(self, what: str, func, *args, **kwargs):
        """One store request; FileNotFoundError passes, anything else is StoreUnavailable."""
        try:
            return func(*args, **kwargs)
        except FileNotFoundError:
            raise
        except Exception as exc:  # network, credentials, permissions, throttling: the store is not usable now
            if is_precondition_failure(exc):
                raise StoreConflict(str(exc)) from exc
            raise StoreUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc

    def read_text(self, key: str) -> str | None:
        """A small file's text, None when there is none."""
        try:
            return self._call(f"reading {key}", self.fs.cat_file, self._path(key)).decode("utf-8")
        except FileNotFoundError:
            return None

    def write_text(self, key: str, text: str, **conditions) -> None:
        """Write a small file (one PUT: readers see the old object or the new)."""
        self._call(f"writing {key}", self.fs.pipe_file, self._path(key), text.encode("utf-8"), **conditions)
        self.fs.invalidate_cache(self._path(key))

    def delete(self, key: str) -> None:
        """Remove a small file (nothing when it is not there)."""
        with contextlib.suppress(FileNotFoundError):
            self._call(f"deleting {key}", self.fs.rm_file, self._path(key))
        self.fs.invalidate_cache(self._path(key))

    def exists(self, key: str) -> bool:
        """Whether a file is there."""
        self.fs.invalidate_cache(self._path(key))
        return bool(self._call(f"looking for {key}", self.fs.exists, self._path(key)))

    def _entries(self, key: str) -> list[dict]:
        """A fresh listing of one folder of the store (the file system's listing cache is dropped first)."""
        self.fs.invalidate_cache(self._path(key))
        try:
            return self._call(f"listing {key or 'the store'}", self.fs.ls, self._path(key), detail=True)
        except FileNotFoundError:
            return []

    def names(self) -> list[str]:
        """Every model folder name in the store. A store with nothing at its location is taken for
        a wrong setting or a store that is not there, never for "serve no model" (the cache stays)."""
        self.fs.invalidate_cache(self.base)
        try:
            entries = self._call("listing the store", self.fs.ls, self.base, detail=True)
        except FileNotFoundError:
            raise StoreUnavailable(f"nothing at {self.url} (no such bucket or folder)") from None
        return sorted(n for e in entries if e["type"] == "directory"
                      and MODEL_NAME.fullmatch(n := entry_name(e)))

    def versions(self, name: str) -> list[str]:
        """Numeric version folders of a model in the store, oldest first."""
        return version_numbers(entry_name(e) for e in self._entries(name) if e["type"] == "directory")

    def update_text(self, key: str, change: Callable[[str | None], str]) -> str:
        """Read, change and write a small file; on S3 the write is conditional on what was read
        (If-Match / If-None-Match) and retried when another writer got there first. Other stores:
        the last writer wins (docs/deployment.md)."""
        for _ in range(10):
            tag = self._tag(key)
            text = change(self.read_text(key))
            try:
                self.write_text(key, text, **self._conditions(tag))
            except StoreConflict:
                continue
            return text
        raise StoreUnavailable(f"{key} kept changing under 10 attempts to update it; try again")

    def _tag(self, key: str) -> str | None:
        """The S3 ETag of a file (None when it does not exist or the store is not S3)."""
        if self.fs.protocol[0] not in ("s3", "s3a"):
            return None
        try:
            info = self._call(f"reading {key}", self.fs.info, self._path(key), refresh=True)
        except FileNotFoundError:
            return ""
        return info.get("ETag") or None

    def _conditions(self, tag: str | None) -> dict:
        """S3 conditional-write arguments for a file last seen with ETag ``tag`` ("" = did not exist)."""
        if tag is None:
            return {}
        return {"IfNoneMatch": "*"} if tag == "" else {"IfMatch": tag}

    # --- watching ------------------------------------------------------------------------------

    def fingerprint(self, only: set[str] | None = None) -> tuple:
        """What changes when anything the instances serve changes: a listing of the store's top
        folder, and of each model's folder (its version folders, and the size and ETag / generation
        / mtime of its control files). A few small requests per model; artifacts are never listed."""
        state = []
        for name in self.names():
            if only and name not in only:
                continue
            entries = self._entries(name)
            state.append((name, tuple(sorted((entry_name(e), e["type"], change_tag(e)) for e in entries))))
        return tuple(state)

    # --- the cache -------------------------------------------------------------------------------

    def sync(self, only: set[str] | None = None) -> dict[str, str]:
        """Bring the cache up to what the store says; returns the versions refused ({"name/version": reason}).

        Per model the cache holds the versions its aliases name and its newest version that passes
        verification (an older one serves while a newer one is refused); control files are copied
        as they are. Raises StoreUnavailable when the store does not answer (the cache is left as it is).
        """
        with folder_lock(self.root):  # one sync at a time per cache (an instance's workers share it)
            fingerprint = self.fingerprint(only)  # its listings say which models and versions there are
            refused: dict[str, str] = {}
            names = [name for name, _ in fingerprint]
            for name, entries in fingerprint:
                refused.update(self._sync_model(name, entries))
            for stale in self.local.root.iterdir():
                if stale.is_dir() and not stale.name.startswith(".") and stale.name not in names and \
                        (not only or stale.name in only):
                    shutil.rmtree(stale, ignore_errors=True)
            self.synced_fingerprint = fingerprint
            return refused

    def _sync_model(self, name: str, entries: tuple) -> dict[str, str]:
        """Copy one model's control files and the versions it serves; evict the others. ``entries``:
        the model folder's listing, as fingerprint() took it ((name, type, change tag) each)."""
        from app.models.aliases import parse_document

        versions = version_numbers(entry for entry, kind, _ in entries if kind == "directory")
        aliases_text = self.read_text(f"{name}/{ALIASES_FILE}")
        unloaded = any(entry == UNLOADED_FILE and kind != "directory" for entry, kind, _ in entries)
        for key, text in ((f"{name}/{ALIASES_FILE}", aliases_text), (f"{name}/{UNLOADED_FILE}", "" if unloaded else None)):
            if text is None:
                self.local.delete(key)
            else:
                self.local.write_text(key, text)
        wanted = {v for v in parse_document(aliases_text)["aliases"].values() if v in versions}
        refused: dict[str, str] = {}
        kept: set[str] = set()

        def cache(version: str) -> bool:
            reason = self._cache_version(name, version)
            if reason:
                refused[f"{name}/{version}"] = reason
            elif reason is None:
                kept.add(version)
            return reason is None

        for version in sorted(wanted, key=int):
            cache(version)
        for version in reversed(versions):  # the newest version that passes verification
            if version in kept or (version not in wanted and cache(version)):
                break
        for version in self.local.versions(name):
            if version not in kept:
                shutil.rmtree(self.local.root / name / version, ignore_errors=True)
        return refused

    def fetch(self, name: str, version: str | None = None) -> Path:
        """One version into the cache, without evicting anything (batch jobs, Spark executors): the
        version given, else the production alias's, else the newest; returns the cache folder."""
        from app.models.aliases import PRODUCTION, parse_document

        with folder_lock(self.root):  # one sync at a time per cache (an instance's workers share it)
            aliases = self.read_text(f"{name}/{ALIASES_FILE}")
            versions = self.versions(name)
            version = str(version or parse_document(aliases)["aliases"].get(PRODUCTION) or (versions or [""])[-1])
            if version not in versions:
                raise FileNotFoundError(f"no model {name!r}{f' version {version}' if version else ''} in {self.url}")
            reason = self._cache_version(name, version)
            if reason is not None:
                raise ManifestError(reason or f"{name} version {version} is still being published (no manifest yet)")
            if aliases is not None:
                self.local.write_text(f"{name}/{ALIASES_FILE}", aliases)
        log.info("model store: %s v%s from %s ready in %s", name, version, self.url, self.root)
        return self.root

    def _cache_version(self, name: str, version: str) -> str | None:
        """Download and verify one version into the cache. None: it is there; "": not published
        yet (no manifest); else the reason it is refused."""
        target = self.local.root / name / version
        if (target / MANIFEST_NAME).is_file():
            return None
        text = self.read_text(f"{name}/{version}/{MANIFEST_NAME}")
        if text is None:
            return ""  # artifacts are uploaded first, the manifest last: still being published
        incoming = Path(tempfile.mkdtemp(prefix=f".incoming-{name}-{version}-", dir=self.local.root))
        try:
            reason = self._download(name, version, text, incoming)
            if reason is None:
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.rename(incoming, target)
                except OSError:  # another worker of this instance put it there first
                    pass
            return reason
        finally:
            shutil.rmtree(incoming, ignore_errors=True)

    def _download(self, name: str, version: str, text: str, folder: Path) -> str | None:
        """Fetch a version's artifacts into ``folder`` and check them; the refusal reason, or None."""
        from app.metrics import record_store_refusal

        try:
            manifest = Manifest.from_dict(folder / MANIFEST_NAME, json.loads(text))
            if (manifest.name, manifest.version) != (name, version):
                raise ManifestError(f"manifest says {manifest.name} v{manifest.version}")
            if not manifest.artifacts:
                raise ManifestError("manifest lists no artifacts")
            for filename in manifest.artifacts:
                check_artifact_name(filename)
            self._check_room(manifest)
            for filename, meta in manifest.artifacts.items():
                local = folder / filename
                local.parent.mkdir(parents=True, exist_ok=True)
                try:
                    self._call(f"downloading {name}/{version}/{filename}", self.fs.get_file,
                               self._path(f"{name}/{version}/{filename}"), str(local))
                except FileNotFoundError:
                    raise ManifestError(f"artifact {filename} is missing") from None
                if not isinstance(meta, dict) or sha256_of(local) != meta.get("sha256"):
                    raise ManifestError(f"sha256 mismatch for {filename}")
            (folder / MANIFEST_NAME).write_text(text, encoding="utf-8")
        except (ManifestError, ValueError) as exc:
            log.error("model store: refusing %s/%s from %s: %s", name, version, self.url, exc)
            record_store_refusal(name, version)
            return f"verification failed: {exc}"
        return None

    def _check_room(self, manifest: Manifest) -> None:
        """ManifestError when the version would take the cache past its size limit."""
        needed = sum(int(meta.get("bytes", 0)) for meta in manifest.artifacts.values() if isinstance(meta, dict))
        used = sum(f.stat().st_size for f in self.local.root.rglob("*") if f.is_file())
        if used + needed > self.max_cache_bytes:
            raise ManifestError(f"the model cache is full ({used + needed} bytes needed, MODEL_CACHE_MAX_BYTES "
                                f"{self.max_cache_bytes})")

    def staging(self, name: str, version: int | str) -> Path:
        """An empty folder of this instance's cache to write a new version into before it is uploaded."""
        return Path(tempfile.mkdtemp(prefix=f".staging-{name}-{version}-", dir=self.root))

    def publish(self, folder: Path, name: str, version: str) -> str:
        """Upload a local version folder: artifacts first, the manifest last, so an instance never
        takes a half-uploaded version for a published one; returns its URL."""
        if self.exists(f"{name}/{version}/{MANIFEST_NAME}"):
            raise FileExistsError(f"{name} version {version} already exists in {self.url}")
        files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
        for path in files + [Path(folder) / MANIFEST_NAME]:
            key = f"{name}/{version}/{path.relative_to(folder).as_posix()}"
            self._call(f"uploading {key}", self.fs.put_file, str(path), self._path(key))
        self.fs.invalidate_cache(self._path(name))
        self.discard(folder)
        return self._url(f"{name}/{version}")

    def _url(self, key: str) -> str:
        return f"{self.url}/{key}"

    def discard(self, staging: Path) -> None:
        """Remove a local folder that was uploaded or will not be."""
        shutil.rmtree(staging, ignore_errors=True)


def change_tag(entry: dict):
    """What changes when a store object changes: its ETag (S3), generation (GCS) or mtime (files), and size."""
    for key in ("ETag", "etag", "generation", "mtime", "LastModified", "updated"):
        if entry.get(key) is not None:
            return str(entry[key]), entry.get("size")
    return None, entry.get("size")


def is_precondition_failure(exc: BaseException | None) -> bool:
    """An S3 conditional write that found the object changed (PreconditionFailed, 412, or
    ConditionalRequestConflict, 409), however s3fs wrapped botocore's error."""
    while exc is not None:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or \
                "pre-conditions you specified did not hold" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def default_options(url: str) -> dict:
    """Short timeouts and few retries for S3, so that an outage is noticed in seconds, not minutes."""
    if url.startswith(("s3://", "s3a://")):
        return {"config_kwargs": {"connect_timeout": 5, "read_timeout": 20, "retries": {"max_attempts": 2}}}
    if url.startswith("file://"):
        return {"auto_mkdir": True}
    return {}


def open_store(settings) -> LocalStore | RemoteStore:
    """The store the settings name: MODEL_STORE (a URL), else the MODEL_DIR folder."""
    url = str(settings.model_store or settings.model_dir)
    if "://" not in url:
        return LocalStore(url)
    return RemoteStore(url, settings.model_cache, settings.model_cache_max_bytes)


def served_folder(settings) -> Path:
    """The local folder the workers load models from (MODEL_DIR, or a shared store's cache), worked
    out without opening the store (gunicorn's master reads it before forking)."""
    url = str(settings.model_store or settings.model_dir)
    return Path(url) if "://" not in url else cache_folder(url, settings.model_cache)


def cache_folder(url: str, cache_dir: str | Path) -> Path:
    """One cache folder per store, so two stores never mix files."""
    return Path(cache_dir) / hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
