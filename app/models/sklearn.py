"""scikit-learn estimators and pipelines: numeric feature vectors, or raw text when a vectorizer comes first."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from app.models.base import Manifest, ManifestError, Model

SKOPS_SUFFIX = ".skops"
JOBLIB_SUFFIXES = (".joblib", ".pkl")


def load_estimator(path: Path, trusted: list[str]):
    """Read a saved estimator; identical fitted transformer arrays are held once per process
    (app/models/shared.py, share_identical_arrays).

    skops files are checked: every type they hold must be one scikit-learn trusts by
    default or one the manifest lists as trusted, else the model is refused. joblib
    files can run code when read, so they are accepted only because the manifest pins
    their SHA-256 (checked before this is called).
    """
    from app.models.shared import share_identical_arrays

    estimator = read_estimator_file(path, trusted)
    share_identical_arrays(estimator)
    return estimator


class UntrustedTypes(ManifestError):
    """A .skops file holds types nobody said to trust; ``types`` names them."""

    def __init__(self, path: Path, types: list[str]):
        super().__init__(f"{path.name} holds types the manifest does not trust: {', '.join(types)}")
        self.types = types


def read_estimator_file(path: Path, trusted: list[str]):
    """The object a .skops or .joblib file holds; a .skops file only when every type in it is trusted
    (scikit-learn's own, or named in ``trusted``), checked before anything in it runs."""
    suffix = path.suffix.lower()
    if suffix == SKOPS_SUFFIX:
        import skops.io as sio

        try:
            untrusted = sorted(set(sio.get_untrusted_types(file=path)) - set(trusted))
        except Exception as exc:  # not a zip, or not skops's layout
            raise ManifestError(f"{path.name} is not a readable skops file: {exc}") from exc
        if untrusted:
            raise UntrustedTypes(path, untrusted)
        return sio.load(path, trusted=list(trusted))
    if suffix in JOBLIB_SUFFIXES:
        import joblib

        return joblib.load(path)
    raise ManifestError(f"{path.name}: not a .skops or .joblib file")


def estimator_outputs(estimator) -> list[str]:
    """Which outputs an estimator can give: label plus probabilities or decision score; or a prediction."""
    if not hasattr(estimator, "classes_"):
        return ["prediction"]
    if hasattr(estimator, "predict_proba"):
        return ["label", "probabilities"]
    if hasattr(estimator, "decision_function"):
        return ["label", "decision_score"]
    return ["label"]


class SklearnModel(Model):
    """Any fitted scikit-learn estimator or Pipeline, read from skops (or a hash-pinned joblib) file.

    Classifiers answer ``label`` plus ``probabilities`` (predict_proba) or, failing
    those, ``decision_score`` (never an invented probability); regressors answer
    ``prediction``.
    """

    platform = "sklearn"

    @classmethod
    def estimator_file(cls, manifest: Manifest) -> str:
        """The artifact holding the fitted estimator (named by the manifest's config)."""
        return str(manifest.config.get("estimator", ""))

    def _load(self) -> None:
        """Read the estimator and check its classes against the manifest's labels."""
        self.estimator = self.read_estimator()
        self._check_classes()

    def read_estimator(self):
        """The estimator file's object: the copy gunicorn's master read before forking when it read these
        very bytes (app/models/shared.py), else read now. Call after the manifest's hashes were verified."""
        from app.models.shared import take

        filename = self.estimator_file(self.manifest)
        path = self.manifest.artifact_path(filename)
        shared = take(path, self.manifest.artifacts[filename].get("sha256"))
        if shared is not None:
            return shared
        return load_estimator(path, self.manifest.config.get("trusted_types", []))

    def _check_classes(self) -> None:
        """The manifest's labels name the estimator's classes, one each."""
        classes = getattr(self.estimator, "classes_", None)
        if classes is not None and self.labels and len(classes) != len(self.labels):
            raise ValueError(f"estimator has {len(classes)} classes, manifest lists {len(self.labels)} labels")

    def features(self, batch: dict):
        """What the estimator takes: the one decoded input (texts or a 2-D array)."""
        return batch[self.inputs[0].name]

    def predict(self, batch: dict) -> dict:
        """label and probabilities / decision score, or prediction, as the manifest declares."""
        return self.predict_features(self.features(batch))

    def predict_features(self, X) -> dict:
        """Outputs for already-built features."""
        names = self.output_names
        out: dict = {}
        if "prediction" in names:
            out["prediction"] = np.asarray(self.estimator.predict(X))
        if "probabilities" in names:
            out["probabilities"] = np.asarray(self.estimator.predict_proba(X), dtype=np.float64)
        if "decision_score" in names:
            out["decision_score"] = np.asarray(self.estimator.decision_function(X), dtype=np.float64)
        if "label" in names:
            out["label"] = self.label_names(np.asarray(self.estimator.predict(X)))
        return out

    def label_names(self, predicted: np.ndarray) -> np.ndarray:
        """The manifest's label for each predicted class."""
        classes = list(self.estimator.classes_)
        labels = self.labels or [str(c) for c in classes]
        return np.array([labels[classes.index(c)] for c in predicted], dtype=object)
