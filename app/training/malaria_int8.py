"""int8 static quantization of the malaria CNN, cross-validated by patient like the float network.

    flask train malaria-int8 --variant vgg64-ls     # needs the variant's fold networks (flask train malaria-fold)

For each fold, the fold's float32 network (kept as ONNX by ``malaria-fold``) is quantized
with ONNX Runtime's static quantization (QDQ format, int8 weights per channel, uint8
activations), calibrated on cells of the fold's *training* patients only, and both
networks are scored on the held-out patients' cells. Speed is measured in the same run
on one core (one intra-op thread), float32 and int8 sessions alternating, medians of
the rounds. The int8 folds are written like float folds, under VARIANT-int8/ (with
summary.json and the per-patient figures); VARIANT-int8/int8_vs_float32.json says
whether int8 is kept: its cross-validated accuracy must stay within ``TOLERANCE`` of
float32's.
"""
from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

from app.training.malaria_cv import (FOLDS, RESULTS, VARIANTS, fold_metrics, fold_model_path, fold_path, fold_split,
                                     labels_of, load_cells, mean_std, read_rows, write_summary)

TOLERANCE = 0.003  # accuracy points (0.3 %) int8 may lose and still be kept
CALIBRATION_CELLS = 512
INT8_FILE = "model.int8.onnx"
QUANTIZATION = ("ONNX Runtime static quantization, QDQ, int8 weights per channel, uint8 activations, softmax kept "
                f"in float32, min-max calibration on {CALIBRATION_CELLS} cells")
METHOD = (f"{QUANTIZATION} of the fold's training patients; float32 and int8 scored on the held-out patients' cells; "
          "speed on one intra-op thread, sessions alternating, medians of 3 rounds")


class _Cells:
    """ONNX Runtime's CalibrationDataReader over float images, a batch at a time."""

    def __init__(self, input_name: str, images: np.ndarray, batch: int = 64):
        self.batches = iter([{input_name: images[i:i + batch]} for i in range(0, len(images), batch)])

    def get_next(self):
        """The next feed, or None when the cells are used up."""
        return next(self.batches, None)


def quantize(fp32: Path, int8: Path, calibration: np.ndarray) -> Path:
    """Write the int8 (QDQ) version of an ONNX network, calibrated (min-max) on float images in [0, 1]."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = int8.with_suffix(".prep.onnx")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)  # fixed-size images: ONNX shape inference suffices
    # The softmax stays in float: quantized, probabilities come in steps of 1/255 and do not sum to 1.
    graph = onnx.load(str(prepared))
    for number, node in enumerate(graph.graph.node):
        node.name = node.name or f"{node.op_type}_{number}"  # nodes are excluded by name
    onnx.save(graph, str(prepared))
    softmax = [node.name for node in graph.graph.node if node.op_type == "Softmax"]
    quantize_static(str(prepared), str(int8), _Cells(graph.graph.input[0].name, calibration), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=softmax)
    prepared.unlink()
    return int8


def one_core_session(path: Path):
    """The server's session settings (app.models.onnx.make_session) with one thread."""
    from app.models.onnx import make_session

    return make_session(path, threads=1)


def probabilities(session, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """P(Parasitized) of every image."""
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: images[i:i + batch]})[0][:, 0]
                           for i in range(0, len(images), batch)])


def images_per_second(sessions: dict, images: np.ndarray, batch: int, rounds: int = 3) -> dict[str, float]:
    """Median images/s of each session over alternating rounds, ``batch`` images per call."""
    rates: dict[str, list[float]] = {key: [] for key in sessions}
    for _ in range(rounds):
        for key, session in sessions.items():
            name = session.get_inputs()[0].name
            started = time.perf_counter()
            for i in range(0, len(images), batch):
                session.run(None, {name: images[i:i + batch]})
            rates[key].append(len(images) / (time.perf_counter() - started))
    return {key: round(statistics.median(values), 1) for key, values in rates.items()}


def int8_name(variant: str) -> str:
    """The cross-validation folder of a variant's int8 network."""
    return f"{variant}-int8"


def evaluate_fold(variant: str, fold: int, rows: list[dict], cells: np.ndarray, y: np.ndarray, seed: int) -> dict:
    """Quantize one fold's network on its training cells; score float32 and int8 on its held-out cells.

    The result has the layout of a float fold's file (malaria_cv.run_fold), with int8's
    probabilities, so the same summary, per-patient figures and plots apply; float32's
    figures from the same run and the speed are under "quantization".
    """
    fp32 = fold_model_path(variant, fold)
    if not fp32.exists():
        raise FileNotFoundError(f"{fp32} is missing: run `flask train malaria-fold --variant {variant} --fold {fold}`")
    float_fold = json.loads(fold_path(variant, fold).read_text())
    _, train_idx, test_idx = fold_split(rows, fold, seed)
    calibration_idx = np.sort(np.random.default_rng(seed).choice(train_idx, CALIBRATION_CELLS, replace=False))
    started = time.monotonic()
    int8 = quantize(fp32, fp32.with_suffix(".int8.onnx"), cells[calibration_idx].astype(np.float32) / 255.0)
    seconds = time.monotonic() - started
    sessions = {"fp32": one_core_session(fp32), "int8": one_core_session(int8)}
    images = cells[test_idx].astype(np.float32) / 255.0
    patients = [rows[i]["patient"] for i in test_idx]
    scored = {key: probabilities(session, images) for key, session in sessions.items()}
    float_metrics = fold_metrics(scored["fp32"], y[test_idx], patients)
    float_metrics.pop("per_patient")
    return {
        **float_fold,
        "variant": {**float_fold["variant"], "name": int8_name(variant),
                    "description": f"{variant} quantized to int8 (ONNX Runtime static quantization)"},
        "training_seconds": round(seconds),
        "metrics": fold_metrics(scored["int8"], y[test_idx], patients),
        "cells": [[cell[0], cell[1], cell[2], round(float(p), 5)] for cell, p in zip(float_fold["cells"], scored["int8"])],
        "quantization": {
            "method": METHOD,
            "float32_metrics": float_metrics,
            "same_label_as_float32": round(float(np.mean((scored["fp32"] >= 0.5) == (scored["int8"] >= 0.5))), 5),
            "max_abs_probability_difference": round(float(np.max(np.abs(scored["fp32"] - scored["int8"]))), 5),
            "images_per_second_one_core": {
                "batch_1": images_per_second(sessions, images[:256], batch=1),
                "batch_32": images_per_second(sessions, images[:1024], batch=32),
            },
            "bytes": {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size},
        },
    }


def compare(folds: list[dict]) -> dict:
    """Cross-validated float32 against int8 (same run), speed ratios, and whether int8 is kept."""
    metrics = {"fp32": [f["quantization"]["float32_metrics"] for f in folds], "int8": [f["metrics"] for f in folds]}
    summary = {key: {name: mean_std([m[name] for m in values]) for name in ("accuracy", "roc_auc", "sensitivity", "specificity")}
               for key, values in metrics.items()}
    loss = summary["fp32"]["accuracy"]["mean"] - summary["int8"]["accuracy"]["mean"]
    speed = [f["quantization"]["images_per_second_one_core"] for f in folds]
    speedup = {batch: round(float(np.median([s[batch]["int8"] / s[batch]["fp32"] for s in speed])), 3)
               for batch in ("batch_1", "batch_32")}
    return {**summary, "accuracy_lost": round(loss, 5), "int8_speedup_median": speedup,
            "images_per_second_one_core_median": {batch: {key: round(float(np.median([s[batch][key] for s in speed])), 1)
                                                          for key in ("fp32", "int8")} for batch in speedup},
            "kept": bool(loss <= TOLERANCE), "rule": f"int8 is kept when it loses at most {TOLERANCE:.1%} accuracy"}


def cross_validate_int8(data_dir: Path, variant: str, seed: int = 0, root: Path = RESULTS) -> tuple[Path, dict]:
    """Every fold quantized and scored: fold files and summary under VARIANT-int8/, and the comparison."""
    from tqdm import tqdm

    rows = read_rows(data_dir)
    cells, y = load_cells(rows, VARIANTS[variant].size), labels_of(rows)
    directory = Path(root) / int8_name(variant)
    directory.mkdir(parents=True, exist_ok=True)
    folds = []
    for fold in tqdm(range(FOLDS), desc="int8 folds"):
        folds.append(evaluate_fold(variant, fold, rows, cells, y, seed))
        fold_path(int8_name(variant), fold, root).write_text(json.dumps(folds[-1], indent=1) + "\n")
    write_summary(int8_name(variant), root)
    comparison = compare(folds)
    path = directory / "int8_vs_float32.json"
    path.write_text(json.dumps(comparison, indent=1) + "\n")
    return path, comparison


def publish_int8(data_dir: Path, model_dir: Path, seed: int = 0) -> Path:
    """The served malaria network quantized to int8, as the next version beside its float32 file.

    The newest version's float32 network (trained on every patient) is calibrated on
    cells of every patient, as the folds were on their training patients; its
    cross-validated variant must have been checked with ``cross_validate_int8`` and kept.
    """
    from app.models.artifacts import next_version, publish_version, staging_dir
    from app.training.malaria import LABELS, LIBRARIES, MODEL_NAME, ONNX_FILE
    from app.training.malaria_cv import cross_validated_metrics, pooled_curves, summarize
    from app.training.plots import save_evaluation_plots

    root = Path(model_dir) / MODEL_NAME
    source = root / str(next_version(root) - 1)
    manifest = json.loads((source / "manifest.json").read_text())
    variant = manifest["training"]["recipe"]["name"]
    comparison_file = RESULTS / int8_name(variant) / "int8_vs_float32.json"
    if not comparison_file.exists():
        raise FileNotFoundError(f"{comparison_file} is missing: run `flask train malaria-int8 --variant {variant}`")
    comparison = json.loads(comparison_file.read_text())
    if not comparison["kept"]:
        raise RuntimeError(f"int8 lost {comparison['accuracy_lost']:.2%} accuracy in cross-validation: not kept")
    version = next_version(root)
    staging = staging_dir(root, version)
    for name in (ONNX_FILE, "training_accuracy.png", "training_loss.png"):
        shutil.copy2(source / name, staging / name)
    rows = read_rows(data_dir)
    cells = load_cells(rows, VARIANTS[variant].size)
    sample = np.sort(np.random.default_rng(seed).choice(len(cells), CALIBRATION_CELLS, replace=False))
    quantize(staging / ONNX_FILE, staging / INT8_FILE, cells[sample].astype(np.float32) / 255.0)
    summary = summarize(int8_name(variant))
    metrics = cross_validated_metrics(summary)
    curves = pooled_curves(int8_name(variant))
    save_evaluation_plots(staging, f"{MODEL_NAME} v{version}: {variant} int8, cross-validated by patient", LABELS,
                          curves["matrix"], curves["fpr"], curves["tpr"], metrics["pooled"]["roc_auc"])
    shutil.copy2(RESULTS / int8_name(variant) / "per_patient_accuracy.png", staging / "per_patient_accuracy.png")
    manifest.update({
        "version": version,
        "description": f"{manifest['description']} int8 (static quantization) served; {ONNX_FILE} is the float32 network.",
        "config": {**manifest.get("config", {}), "file": INT8_FILE},
        "metrics": {**metrics, "float32_network": comparison["fp32"],
                    "int8_speedup_one_core": comparison["int8_speedup_median"]},
    })
    manifest["training"] = {
        **manifest["training"],
        "quantization": {"method": f"{QUANTIZATION} drawn from every patient",
                         "from_version": int(source.name),
                         "cross_validation": f"evaluation/malaria_cv/{int8_name(variant)}/ (int8_vs_float32.json)"},
    }
    for key in ("artifacts", "libraries", "created"):
        manifest.pop(key, None)
    return publish_version(staging, manifest, LIBRARIES)
