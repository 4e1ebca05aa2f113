"""Models written as a Python class: `module:Class` in the model folder, implementing app.models.base.Model.

This runs the user's code inside the server. The manifest's SHA-256 list covers
every file of the folder, and the hashes are checked before the module is imported.
"""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

from app.models.base import Manifest, ManifestError, Model

CLASS_SPEC = re.compile(r"^(?P<module>[A-Za-z_][A-Za-z0-9_]*):(?P<cls>[A-Za-z_][A-Za-z0-9_]*)$")


def load_python_model(manifest: Manifest, options: dict | None = None) -> Model:
    """Verify the folder's hashes, import `module.py` from it and build the named Model subclass."""
    spec = str(manifest.config.get("class", ""))
    match = CLASS_SPEC.match(spec)
    if not match:
        raise ManifestError(f"config 'class' must be 'module:Class', got {spec!r}")
    manifest.artifact_path(f"{match['module']}.py")  # listed with its hash, inside the folder
    manifest.verify_artifacts()  # before any of the folder's code runs
    cls = import_model_class(manifest.directory, spec, f"modelserve_user.{manifest.name}.v{manifest.version}")
    return cls(manifest, options)


def import_model_class(directory: Path, spec: str, package: str) -> type[Model]:
    """Import `module.py` from a folder (under a private module name) and return its Model subclass."""
    match = CLASS_SPEC.match(spec)
    if not match:
        raise ManifestError(f"the class must be given as 'module:Class', got {spec!r}")
    filename = f"{match['module']}.py"
    if not (directory / filename).is_file():
        raise ManifestError(f"{filename} not found in the model folder")
    module_name = f"{package}.{match['module']}"
    import_spec = importlib.util.spec_from_file_location(module_name, directory / filename)
    module = importlib.util.module_from_spec(import_spec)
    sys.modules[module_name] = module
    try:
        import_spec.loader.exec_module(module)
    except Exception:
        sys.modules.pop(module_name, None)
        raise
    cls = getattr(module, match["cls"], None)
    if cls is None:
        raise ManifestError(f"class {match['cls']!r} not found in {filename}")
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise ManifestError(f"{spec} is not a subclass of app.models.base.Model")
    return cls
