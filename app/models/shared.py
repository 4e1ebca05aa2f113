"""Fitted scikit-learn estimators read once by gunicorn's master before it forks, shared by every worker.

A worker that forks from a master holding an object shares its memory pages
with the master and its sibling workers until one of them writes to them, and
the big parts of a fitted linear text model (its weight and scaling vectors, most
of the shipped review model's memory) are only ever read. So gunicorn's master
reads the estimator files of the models it will serve (`preread`, from
gunicorn.conf.py), and each worker's model takes its copy from there
(`take`) instead of reading its own. Nothing else is created before the fork:
ONNX Runtime sessions, database connections and the app itself are made in
each worker, as before.

A worker takes an object only if the master read it from a file with the very
hash the worker's own manifest check has just verified, and only once (a model
that learns online changes its estimator, which then stays its own). A model
version added after the master started, or whose file changed, is read by the
worker as usual, so a reload still serves new versions.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# The runtimes whose estimators are shared (SklearnModel and its subclasses). Named here rather than
# found by importing every runtime: the master must not import ONNX Runtime (gunicorn.conf.py).
SHARED_RUNTIMES = ("sklearn", "sklearn-text")
_READ: dict[tuple[str, str], Any] = {}
# One copy of each distinct fitted array of a pipeline's transformer steps, by dtype and shape
# (see share_identical_arrays); arrays smaller than this are not worth comparing.
_ARRAYS: dict[tuple[str, tuple], list[np.ndarray]] = {}
MIN_SHARED_BYTES = 64 * 1024


def preread(model_dir: Path, only: set[str] | None = None) -> list[str]:
    """Read the estimator file of every servable sklearn model version; returns what was read ("name/version")."""
    from app.models.base import sha256_of
    from app.models.registry import discover, runtime_factory
    from app.models.store import UNLOADED_FILE
    from app.models.sklearn import load_estimator

    read = []
    for manifest in discover(Path(model_dir), only):
        if manifest.runtime not in SHARED_RUNTIMES or (manifest.directory.parent / UNLOADED_FILE).exists():
            continue
        filename = runtime_factory(manifest.runtime).estimator_file(manifest)
        meta = manifest.artifacts.get(filename)
        try:
            path = manifest.artifact_path(filename)
            if sha256_of(path) != meta["sha256"]:
                continue  # the worker refuses it with the reason
            _READ[(str(path.resolve()), meta["sha256"])] = load_estimator(path, manifest.config.get("trusted_types", []))
        except Exception as exc:  # the worker reads it again and reports what is wrong
            log.warning("not pre-read: %s/%s (%s)", manifest.name, manifest.version, exc)
            continue
        read.append(f"{manifest.name}/{manifest.version}")
    return read


def take(path: Path, sha256: str | None) -> Any | None:
    """The master's copy of a verified estimator file with this hash, once; None when there is none."""
    if not sha256:
        return None
    return _READ.pop((str(Path(path).resolve()), sha256), None)


def share_identical_arrays(estimator: Any) -> None:
    """Make the transformer steps of a pipeline use one copy of each distinct fitted array in this process.

    Models trained on the same data often hold identical fitted vectors: the shipped
    logistic regression, linear SVM and decision tree keep the same hashed features
    (a bitmap and rank table each) and the first two the same IDF weights, each held
    three times over (what sharing saves: benchmarks/README.md). Only the steps before the final estimator
    take part, because online learning (partial_fit) changes the final estimator in
    place and never the transformers; the shared arrays are made read-only, so an
    in-place change to one would raise instead of changing another model.
    """
    for _, step in getattr(estimator, "steps", [])[:-1]:
        for name, value in list(vars(step).items()):
            if not isinstance(value, np.ndarray) or value.nbytes < MIN_SHARED_BYTES or value.dtype.hasobject:
                continue
            held = _ARRAYS.setdefault((value.dtype.str, value.shape), [])
            twin = next((array for array in held if np.array_equal(array, value)), None)
            if twin is None:
                value.flags.writeable = False
                held.append(value)
            else:
                setattr(step, name, twin)


def release_free_heap() -> None:
    """Give the heap memory that loading left free back to the system (glibc's malloc_trim).

    Loading checks the decision tree's fast path against scikit-learn's own prediction,
    which builds two arrays as long as all its hashed features; glibc keeps such
    freed blocks in the heap, resident in every worker, unless asked to return them.
    Requests never take that path (app/models/fast_linear.py). Not glibc (musl, macOS):
    nothing to do.
    """
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
