"""`flask models add`: put a user's model file or folder into the model folder, with a manifest.

Takes an ``.onnx`` file, a scikit-learn ``.skops`` (or hash-pinned ``.joblib``) file,
or a folder holding a Python class; infers inputs and outputs, records hashes and
library versions, and publishes the version only after a smoke prediction passed.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.models.base import MANIFEST_NAME, MODEL_NAME, NUMPY_TYPES, ManifestError, TensorSpec
from app.models.artifacts import loaded_version, write_manifest

ONNX_TYPES = {
    "tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16", "tensor(int64)": "INT64",
    "tensor(int32)": "INT32", "tensor(int16)": "INT16", "tensor(int8)": "INT8", "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16", "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64", "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}


class AddError(Exception):
    """The model cannot be added; the message says why."""


@dataclass
class AddOptions:
    """What the user told `models add` beyond the file itself."""

    version: int | None = None
    labels: list[str] = field(default_factory=list)
    description: str = ""
    python_class: str = "model:Model"
    trust: list[str] = field(default_factory=list)
    # onnx-image settings; None: serve the ONNX graph's tensors as they are.
    image: dict | None = None
    # Held-out data (a table, or a folder of images) to write the reference profile drift is measured against.
    reference: Path | None = None


def add_model(store, name: str, source: Path, options: AddOptions) -> tuple[str, dict, list[dict]]:
    """Copy, describe, smoke-test and publish into the model store; returns (where, manifest, smoke rows)."""
    if not MODEL_NAME.fullmatch(name):
        raise AddError(f"model name {name!r} must be 1-64 letters, digits, '_', '.' or '-', starting with a "
                       "letter or digit")
    source = Path(source)
    if not source.exists():
        raise AddError(f"{source} does not exist")
    version = options.version or int(max(store.versions(name), key=int, default="0")) + 1
    if store.exists(f"{name}/{version}/{MANIFEST_NAME}"):
        raise AddError(f"{name} version {version} already exists in {store.url}")
    staging = store.staging(name, version)
    try:
        manifest, libraries = describe(source, staging, options)
        manifest.update({"name": name, "version": version})
        if options.description:
            manifest["description"] = options.description
        rows = smoke_test(write_manifest(staging, manifest, libraries), options.reference)
        written = json.loads((staging / MANIFEST_NAME).read_text())
        where = store.publish(staging, name, str(version))
    except Exception as exc:  # leave nothing behind; a failed load or prediction is said as such
        store.discard(staging)
        if isinstance(exc, AddError):
            raise
        raise AddError(f"the model failed its smoke test: {type(exc).__name__}: {exc}") from exc
    return where, written, rows


def smoke_test(manifest_path: Path, reference: Path | None = None) -> list[dict]:
    """Load the staged version as the server would and predict one example input; with ``reference`` (held-out
    data), write its reference profile (what drift is measured against) into the version."""
    with loaded_version(manifest_path.parent) as model:
        rows = model.postprocess(model.predict(model.decode(model.example_inputs())))
        if reference is not None:
            reference_profile(model, reference).add_to(manifest_path.parent)
    return rows


def reference_profile(model, data: Path):
    """The version's reference profile over DATA; an AddError when DATA gives no item it can use."""
    from app.batch.core import ScoringError
    from app.monitoring.report import reference_from_data

    try:
        return reference_from_data(model, data)
    except (ScoringError, OSError, ValueError, KeyError) as exc:
        raise AddError(f"--reference {data}: {exc}") from exc


def describe(source: Path, staging: Path, options: AddOptions) -> tuple[dict, list[str]]:
    """The manifest fields of a source, by its kind; copies its files into staging."""
    if source.is_dir():
        return describe_python(source, staging, options)
    suffix = source.suffix.lower()
    if suffix == ".onnx":
        return describe_onnx(source, staging, options)
    if suffix in (".skops", ".joblib", ".pkl"):
        return describe_sklearn(source, staging, options)
    raise AddError(f"unknown model format {source.name!r}: give an .onnx, .skops or .joblib file, "
                   "or a folder with a Python class")


# --- ONNX -----------------------------------------------------------------------------------

def onnx_spec(node) -> TensorSpec:
    """A TensorSpec from an ONNX Runtime input or output description."""
    datatype = ONNX_TYPES.get(node.type)
    if datatype is None:
        hint = " (a scikit-learn classifier exported with ZipMap: export with options={'zipmap': False})" \
            if "map" in node.type or "seq" in node.type else ""
        raise AddError(f"graph tensor {node.name!r} has type {node.type}, which the server cannot send{hint}")
    shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in (node.shape or []))
    return TensorSpec(node.name, datatype, shape or (-1,))


def describe_onnx(source: Path, staging: Path, options: AddOptions) -> tuple[dict, list[str]]:
    """Graph inputs and outputs as they are, or an image classifier when image settings are given."""
    from app.models.onnx import ONNX_FILE, make_session

    shutil.copy2(source, staging / ONNX_FILE)
    try:
        session = make_session(staging / ONNX_FILE, 1)
    except Exception as exc:
        raise AddError(f"{source.name} is not a loadable ONNX model: {exc}") from exc
    inputs = [onnx_spec(node) for node in session.get_inputs()]
    outputs = [onnx_spec(node) for node in session.get_outputs()]
    libraries = ["onnxruntime", "numpy"]
    if options.image is None:
        served, graph_names = classifier_outputs(session, inputs, outputs, options.labels)
        config = {"file": ONNX_FILE, **({"graph_outputs": graph_names} if graph_names else {})}
        if graph_names and options.labels and served[0]["datatype"] == "BYTES" and outputs[0].datatype != "BYTES":
            config["label_by_index"] = True
        return {"runtime": "onnx", "task": "tensors", "labels": options.labels,
                "inputs": [s.to_dict() for s in inputs], "outputs": served, "config": config}, libraries
    return describe_onnx_image(inputs, outputs, options), libraries + ["pillow"]


SCORE_TYPES = ("FP16", "FP32", "FP64")
INDEX_TYPES = ("INT64", "INT32", "INT16", "INT8", "UINT8", "UINT16", "UINT32", "UINT64")


def classifier_outputs(session, inputs: list[TensorSpec], outputs: list[TensorSpec],
                       labels: list[str]) -> tuple[list[dict], dict]:
    """The served outputs of a graph, and {served name: graph name} where they differ.

    A classifier as scikit-learn exports it (a label per row, then a score per class) is served as
    ``label`` and ``probabilities`` only when its scores are probabilities, which is judged on probe
    rows (every row in [0, 1] and summing to 1); otherwise as ``decision_scores``, named for what they
    are. Integer labels become the names given with --labels. Any other graph is served as it is.
    """
    plain = [s.to_dict() for s in outputs]
    if len(outputs) != 2 or len(outputs[0].shape) != 1 or len(outputs[1].shape) != 2 \
            or outputs[1].datatype not in SCORE_TYPES or outputs[0].datatype not in ("BYTES", *INDEX_TYPES):
        return plain, {}
    label, scores = outputs
    probe = probe_rows(session, inputs)
    if probe is None:
        return plain, {}
    classes, score_rows = probe[0], probe[1].astype(np.float64)
    columns = score_rows.shape[1]
    if labels and len(labels) != columns:
        raise AddError(f"--labels names {len(labels)} classes; the graph scores {columns}")
    is_probability = bool(np.all((score_rows >= 0) & (score_rows <= 1))
                          and np.allclose(score_rows.sum(axis=1), 1.0, atol=1e-3))
    name = "probabilities" if is_probability else "decision_scores"
    label_spec = {"name": "label", "datatype": label.datatype, "shape": [-1]}
    if labels and label.datatype in INDEX_TYPES:
        if not all(0 <= int(c) < len(labels) for c in classes):
            raise AddError(f"the graph's labels {sorted(set(int(c) for c in classes))} are not class indices "
                           f"0..{len(labels) - 1}, so --labels cannot name them")
        label_spec["datatype"] = "BYTES"
    score_spec = {"name": name, "datatype": scores.datatype, "shape": [-1, columns]}
    if not is_probability:
        score_spec["description"] = ("the classifier's decision function, one score per class (the highest wins); "
                                     "not probabilities: they are not in [0, 1] and do not sum to 1")
    return [label_spec, score_spec], {"label": label.name, name: scores.name}


def probe_rows(session, inputs: list[TensorSpec], rows: int = 32):
    """The graph's two outputs for ``rows`` random rows of every numeric input with a known width (a fixed
    seed: the same model, the same judgement); None when an input cannot be made up."""
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in inputs:
        if spec.datatype not in NUMPY_TYPES or spec.datatype == "BYTES" or any(d <= 0 for d in spec.shape[1:]):
            return None
        feeds[spec.name] = (rng.normal(size=(rows, *spec.shape[1:])) * 3).astype(NUMPY_TYPES[spec.datatype])
    try:
        return session.run(None, feeds)
    except Exception:  # a graph that refuses made-up values: serve its outputs as they are
        return None


def describe_onnx_image(inputs: list[TensorSpec], outputs: list[TensorSpec], options: AddOptions) -> dict:
    """An image classifier: encoded images in, label and probabilities out."""
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise AddError("an image model takes one 4-D input ([N, H, W, 3] or [N, 3, H, W])")
    shape = inputs[0].shape
    layout = options.image.get("layout") or ("NCHW" if shape[1] == 3 else "NHWC")
    height, width = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
    size = options.image.get("input_size") or [height, width]
    if not all(isinstance(d, int) and d > 0 for d in size):
        raise AddError("the graph's input has no fixed height and width: give --input-size H,W")
    classes = outputs[0].shape[-1] if outputs[0].shape[-1] > 0 else len(options.labels)
    if not options.labels or len(options.labels) != classes:
        raise AddError(f"an image classifier needs --labels, one per class ({classes} in the graph's output)")
    config = {"graph_input": inputs[0].name, "graph_output": outputs[0].name, "input_size": list(size),
              "layout": layout, **{k: v for k, v in options.image.items() if k not in ("layout", "input_size")}}
    return {
        "runtime": "onnx-image", "task": "image-classification", "labels": options.labels,
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1], "content": "image",
                    "description": "an encoded PNG or JPEG file per item"}],
        "outputs": [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                    {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]}],
        "config": config,
    }


# --- scikit-learn ---------------------------------------------------------------------------

def read_sklearn(source: Path, trust: list[str]):
    """The estimator in a skops file (types checked against --trust, as the server checks them) or a joblib file."""
    from app.models.sklearn import UntrustedTypes, read_estimator_file

    try:
        return read_estimator_file(source, trust)
    except UntrustedTypes as exc:
        raise AddError(f"{source.name} holds types that are not trusted: {', '.join(exc.types)}. "
                       "Read them, and if you trust them add --trust TYPE for each") from exc
    except ManifestError as exc:
        raise AddError(str(exc)) from exc


def takes_text(estimator) -> bool:
    """Whether a pipeline starts with a text vectorizer (raw strings in)."""
    from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer

    first = estimator.steps[0][1] if hasattr(estimator, "steps") else estimator
    return isinstance(first, (CountVectorizer, HashingVectorizer))


def describe_sklearn(source: Path, staging: Path, options: AddOptions) -> tuple[dict, list[str]]:
    """Inputs from n_features_in_ / feature_names_in_ (or text), outputs from what the estimator offers."""
    from app.models.sklearn import estimator_outputs

    estimator = read_sklearn(source, options.trust)
    filename = "estimator" + source.suffix.lower()
    shutil.copy2(source, staging / filename)
    text_in = takes_text(estimator)
    if text_in:
        inputs = [{"name": "text", "datatype": "BYTES", "shape": [-1], "content": "text", "description": "UTF-8 text"}]
    elif hasattr(estimator, "n_features_in_"):
        names = [str(n) for n in getattr(estimator, "feature_names_in_", [])]
        inputs = [{"name": "input", "datatype": "FP64", "shape": [-1, int(estimator.n_features_in_)],
                   "description": ("features in this order: " + ", ".join(names)) if names else "feature vector"}]
    else:
        raise AddError("the estimator is not fitted (no n_features_in_) and does not start with a text vectorizer")
    classes = [str(c) for c in getattr(estimator, "classes_", [])]
    labels = options.labels or classes
    if classes and len(labels) != len(classes):
        raise AddError(f"--labels names {len(labels)} labels; the estimator has {len(classes)} classes {classes}")
    outputs = [output_spec(name, len(classes)) for name in estimator_outputs(estimator)]
    config = {"estimator": filename, "trusted_types": sorted(options.trust),
              "estimator_class": type(estimator).__name__}
    task = "classification" if classes else "regression"
    if text_in and classes:
        task = "text-classification"
    libraries = ["scikit-learn", "numpy", "scipy", "skops" if filename.endswith(".skops") else "joblib"]
    return {"runtime": "sklearn", "task": task, "labels": labels, "inputs": inputs, "outputs": outputs,
            "config": config}, libraries


def output_spec(name: str, classes: int) -> dict:
    """The manifest entry of one scikit-learn output."""
    if name == "label":
        return {"name": "label", "datatype": "BYTES", "shape": [-1]}
    if name == "probabilities":
        return {"name": "probabilities", "datatype": "FP64", "shape": [-1, classes]}
    if name == "decision_score":
        shape = [-1] if classes == 2 else [-1, classes]
        return {"name": "decision_score", "datatype": "FP64", "shape": shape,
                "description": "decision function (for two classes: > 0 means the second); not a probability"}
    return {"name": "prediction", "datatype": "FP64", "shape": [-1]}


# --- Python class ---------------------------------------------------------------------------

def describe_python(source: Path, staging: Path, options: AddOptions) -> tuple[dict, list[str]]:
    """Copy the folder's files; inputs, outputs and labels come from the class's INPUTS, OUTPUTS, LABELS."""
    from app.models.python import import_model_class

    for file in sorted(source.iterdir()):
        if file.is_file() and not file.name.startswith("."):
            shutil.copy2(file, staging / file.name)
    try:
        cls = import_model_class(staging, options.python_class, f"modelserve_add.{staging.parent.name}")
    except Exception as exc:
        raise AddError(f"cannot use {options.python_class} from {source}: {exc}") from exc
    if not getattr(cls, "INPUTS", None) or not getattr(cls, "OUTPUTS", None):
        raise AddError(f"{options.python_class} must declare INPUTS and OUTPUTS (lists of name/datatype/shape)")
    return {"runtime": "python", "task": getattr(cls, "TASK", ""), "labels": options.labels or list(getattr(cls, "LABELS", [])),
            "inputs": list(cls.INPUTS), "outputs": list(cls.OUTPUTS), "config": {"class": options.python_class}}, ["numpy"]
