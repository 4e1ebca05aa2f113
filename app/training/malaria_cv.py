"""Patient-level cross-validation of malaria CNN variants, one fold per command, results committed.

    flask train malaria-fold --variant vgg64 --fold 0      # ~ one training run; writes evaluation/malaria_cv/vgg64/fold-0.json
    flask train malaria-cv-report --variant vgg64          # pools the folds written so far -> summary.json + plot
    flask train malaria --variant vgg64                    # the served model: the recipe on every patient

Cells of both data folders (malaria/ and malaria_extra/, the same 180 patients) are
dealt into five folds by patient, infected and healthy patients separately, so every
fold holds both kinds and no patient is ever on both sides. A fold trains on the
other four for a fixed number of epochs (no epoch or setting is chosen on the
held-out fold) and is measured once on it. Each fold's file holds every held-out
cell's probability, so pooled figures and per-patient accuracy can be recomputed
from the committed files alone, and a cross-validation can span several sittings.
"""
from __future__ import annotations

import csv
import hashlib
import json
import platform
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from app.config import PROJECT_ROOT
from app.training.cards import CARDS

FOLDS = 5
FOLDERS = ("malaria", "malaria_extra")
RESULTS = PROJECT_ROOT / "evaluation" / "malaria_cv"
CACHE = PROJECT_ROOT / "instance" / "cache"


@dataclass(frozen=True)
class Variant:
    """One network and training recipe, cross-validated as a whole."""

    name: str
    description: str
    architecture: str = "vgg"        # "vgg" (7 conv3x3) or "inverted" (MobileNetV2-style blocks)
    size: int = 64                   # input pixels per side
    epochs: int = 30
    width: float = 1.0               # channel multiplier
    label_smoothing: float = 0.0
    stain_augmentation: bool = True  # brightness/contrast/saturation/hue jitter
    batch_size: int = 64
    learning_rate: float = 2e-3


VARIANTS = {v.name: v for v in [
    Variant("vgg112", "the served v1 network and recipe (133 M multiply-adds), fixed 30 epochs", size=112),
    Variant("vgg64", "the v1 network at 64x64 input (about 43 M multiply-adds)"),
    Variant("vgg64-ls", "vgg64 with label smoothing 0.1 (the labels are known to be noisy)", label_smoothing=0.1),
    Variant("inverted96", "inverted-residual (MobileNetV2-style) blocks at 96x96", architecture="inverted", size=96),
]}


def read_rows(data_dir: Path) -> list[dict]:
    """MANIFEST.csv rows of both cell folders, each with its file's full path."""
    rows = []
    for folder in FOLDERS:
        root = Path(data_dir).resolve() / folder
        if not (root / "MANIFEST.csv").exists():
            continue
        with open(root / "MANIFEST.csv", newline="", encoding="utf-8") as fh:
            rows += [{**row, "file": str(root / row["path"]), "folder": folder} for row in csv.DictReader(fh)]
    if not rows:
        raise FileNotFoundError(f"no MANIFEST.csv under {data_dir}/{{{','.join(FOLDERS)}}}")
    return rows


def patient_folds(rows: list[dict], seed: int, folds: int = FOLDS) -> list[list[str]]:
    """Patients dealt into ``folds`` groups: infected and healthy patients shuffled and dealt separately."""
    infected = sorted({r["patient"] for r in rows if r["label"] == "Parasitized"})
    healthy = sorted({r["patient"] for r in rows} - set(infected))
    rng = random.Random(seed)
    groups: list[list[str]] = [[] for _ in range(folds)]
    dealt = 0
    for kind in (infected, healthy):
        kind = kind[:]
        rng.shuffle(kind)
        for patient in kind:
            groups[dealt % folds].append(patient)
            dealt += 1
    return [sorted(g) for g in groups]


def load_cells(rows: list[dict], size: int) -> np.ndarray:
    """Every row's image, preprocessed as the server does, as uint8 (N, size, size, 3); cached on disk.

    The server's preprocessing resizes in 8 bits and divides by 255, so uint8 stores it exactly.
    """
    from app.training.malaria import load_images

    key = hashlib.sha256("\n".join(f"{r['file']}:{r['sha256']}" for r in rows).encode()).hexdigest()[:16]
    cache = CACHE / f"malaria-{size}-{key}.npy"
    if cache.exists():
        return np.load(cache)
    images, _ = load_images(Path("/"), [{**r, "path": r["file"]} for r in rows], size, f"loading cells at {size}px")
    cells = np.round(images * 255).astype(np.uint8)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, cells)
    return cells


def labels_of(rows: list[dict]) -> np.ndarray:
    """0 = Parasitized, 1 = Uninfected (the served model's label order)."""
    from app.training.malaria import LABELS

    return np.array([LABELS.index(r["label"]) for r in rows], dtype=np.int64)


def fold_metrics(p_parasitized: np.ndarray, y: np.ndarray, patients: list[str]) -> dict:
    """Accuracy, ROC AUC, sensitivity and specificity for Parasitized, and accuracy per patient."""
    from sklearn.metrics import roc_auc_score

    infected = y == 0
    said_infected = p_parasitized >= 0.5
    correct = said_infected == infected
    per_patient: dict[str, list[int]] = {}
    for patient, right in zip(patients, correct):
        tally = per_patient.setdefault(patient, [0, 0])
        tally[0] += int(right)
        tally[1] += 1
    return {
        "cells": int(len(y)),
        "patients": len(per_patient),
        "accuracy": round(float(correct.mean()), 5),
        "roc_auc": round(float(roc_auc_score(infected, p_parasitized)), 5),
        "sensitivity": round(float(said_infected[infected].mean()), 5),
        "specificity": round(float((~said_infected[~infected]).mean()), 5),
        "per_patient": {p: {"correct": c, "cells": n, "accuracy": round(c / n, 5)} for p, (c, n) in sorted(per_patient.items())},
    }


def fold_path(variant: str, fold: int, root: Path = RESULTS) -> Path:
    """Where a fold's result lives (committed)."""
    return Path(root) / variant / f"fold-{fold}.json"


def fold_model_path(variant: str, fold: int) -> Path:
    """Where a fold's network is kept as ONNX (not committed: it is for the int8 cross-validation)."""
    return CACHE / "malaria_cv" / variant / f"fold-{fold}.onnx"


def tensorflow():
    """The TensorFlow module, or a one-line reason it is missing (a training-only dependency)."""
    try:
        import tensorflow as tf
    except ImportError:
        raise RuntimeError("training needs TensorFlow, which the serving and test environments leave out: "
                           "run `make train-env` and use .venv-train/bin/flask") from None
    return tf


def fold_split(rows: list[dict], fold: int, seed: int) -> tuple[set[str], np.ndarray, np.ndarray]:
    """A fold's held-out patients, and the row indices of the other folds' cells and of its own."""
    held_out = set(patient_folds(rows, seed)[fold])
    train_idx = np.array([i for i, r in enumerate(rows) if r["patient"] not in held_out])
    test_idx = np.array([i for i, r in enumerate(rows) if r["patient"] in held_out])
    return held_out, train_idx, test_idx


def run_fold(data_dir: Path, variant: Variant, fold: int, seed: int = 0) -> Path:
    """Train on four folds' patients, measure on the fifth, write the fold's result file."""
    tf = tensorflow()

    from app.training.malaria import count_macs, export_onnx, train_keras_model

    tf.config.experimental.enable_op_determinism()
    rows = read_rows(data_dir)
    held_out, train_idx, test_idx = fold_split(rows, fold, seed)
    cells, y = load_cells(rows, variant.size), labels_of(rows)
    started = time.monotonic()
    model, _ = train_keras_model(cells[train_idx], y[train_idx], None, None, seed=seed, epochs=variant.epochs,
                                 recipe=variant)
    seconds = time.monotonic() - started
    probabilities = model.predict(cells[test_idx].astype(np.float32) / 255.0, batch_size=256, verbose=0)
    onnx_file = fold_model_path(variant.name, fold)
    onnx_file.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(model, onnx_file, cells[test_idx[:512]].astype(np.float32) / 255.0, probabilities[:512])
    result = {
        "variant": asdict(variant),
        "fold": fold,
        "folds": FOLDS,
        "seed": seed,
        "held_out_patients": sorted(held_out),
        "train": {"cells": int(len(train_idx)), "patients": len({rows[i]["patient"] for i in train_idx})},
        "multiply_adds_per_image": count_macs(model),
        "parameters": int(model.count_params()),
        "training_seconds": round(seconds),
        "machine": f"{platform.machine()}, {len(tf.config.list_physical_devices('GPU'))} GPU(s), TensorFlow {tf.__version__}",
        "metrics": fold_metrics(probabilities[:, 0], y[test_idx], [rows[i]["patient"] for i in test_idx]),
        # Every held-out cell: [folder/path, patient, true label (0 = Parasitized), P(Parasitized)].
        "cells": [[f"{rows[i]['folder']}/{rows[i]['path']}", rows[i]["patient"], int(y[i]), round(float(p), 5)]
                  for i, p in zip(test_idx, probabilities[:, 0])],
    }
    path = fold_path(variant.name, fold)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path


def read_folds(variant: str, root: Path = RESULTS) -> list[dict]:
    """The fold results of a variant written so far, in fold order."""
    files = sorted((Path(root) / variant).glob("fold-*.json"))
    if not files:
        raise FileNotFoundError(f"no fold results for variant {variant!r} under {Path(root) / variant}")
    return [json.loads(f.read_text()) for f in files]


def mean_std(values: list[float]) -> dict:
    """Mean and sample standard deviation (0 for one value), rounded."""
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": round(float(np.mean(values)), 5), "std": round(std, 5)}


def summarize(variant: str, root: Path = RESULTS) -> dict:
    """Mean and standard deviation over the folds written so far, pooled figures and the worst patients."""
    results = read_folds(variant, root)
    names = ("accuracy", "roc_auc", "sensitivity", "specificity")
    spread = {n: mean_std([r["metrics"][n] for r in results]) for n in names}
    y = np.array([c[2] for r in results for c in r["cells"]])
    p = np.array([c[3] for r in results for c in r["cells"]])
    patients = [c[1] for r in results for c in r["cells"]]
    pooled = fold_metrics(p, y, patients)
    per_patient = pooled.pop("per_patient")
    accuracies = np.array([v["accuracy"] for v in per_patient.values()])
    worst = sorted(per_patient.items(), key=lambda kv: (kv[1]["accuracy"], -kv[1]["cells"]))[:8]
    return {
        "variant": results[0]["variant"],
        "folds_done": sorted(r["fold"] for r in results),
        "folds": results[0]["folds"],
        "multiply_adds_per_image": results[0]["multiply_adds_per_image"],
        "parameters": results[0]["parameters"],
        "training_seconds_per_fold": round(float(np.mean([r["training_seconds"] for r in results]))),
        "per_fold": {str(r["fold"]): {n: r["metrics"][n] for n in ("cells", "patients", *names)} for r in results},
        "mean_std": spread,
        "pooled": pooled,
        "per_patient_accuracy": {
            "median": round(float(np.median(accuracies)), 5),
            "p10": round(float(np.percentile(accuracies, 10)), 5),
            "min": round(float(accuracies.min()), 5),
            "patients_below_90": int((accuracies < 0.9).sum()),
            "worst": {name: tally for name, tally in worst},
        },
        "all_patients": per_patient,
    }


def write_summary(variant: str, root: Path = RESULTS) -> tuple[Path, dict]:
    """summary.json and per_patient_accuracy.png beside the fold files."""
    from app.training.plots import save_bar_chart

    summary = summarize(variant, root)
    directory = Path(root) / variant
    (directory / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    ranked = sorted(summary["all_patients"].items(), key=lambda kv: kv[1]["accuracy"])[:40]
    save_bar_chart(directory / "per_patient_accuracy.png",
                   f"{variant}: the 40 hardest of {len(summary['all_patients'])} patients",
                   [name for name, _ in ranked], [t["accuracy"] for _, t in ranked], "accuracy on the patient's cells",
                   overall=summary["pooled"]["accuracy"])
    return directory / "summary.json", summary


def table_row(summary: dict) -> str:
    """One markdown row of the variants table."""
    ms, pooled = summary["mean_std"], summary["pooled"]
    done = f"{len(summary['folds_done'])}/{summary['folds']}"
    return (f"| {summary['variant']['name']} | {summary['multiply_adds_per_image'] / 1e6:.1f} M | {done} | "
            f"{ms['accuracy']['mean']:.2%} ± {ms['accuracy']['std']:.2%} | {ms['roc_auc']['mean']:.4f} ± {ms['roc_auc']['std']:.4f} | "
            f"{pooled['sensitivity']:.2%} | {pooled['specificity']:.2%} | {summary['per_patient_accuracy']['min']:.0%} | "
            f"{summary['training_seconds_per_fold'] / 60:.0f} min |")


def pooled_curves(variant: str, root: Path = RESULTS) -> dict:
    """Confusion matrix and ROC curve of every held-out cell of every fold (for the served model's plots)."""
    from sklearn.metrics import confusion_matrix, roc_curve

    cells = [c for result in read_folds(variant, root) for c in result["cells"]]
    y = np.array([c[2] for c in cells])
    p = np.array([c[3] for c in cells])
    fpr, tpr, _ = roc_curve(y == 0, p)
    return {"matrix": confusion_matrix(y, (p < 0.5).astype(int), labels=[0, 1]), "fpr": fpr, "tpr": tpr}


def cross_validated_metrics(summary: dict) -> dict:
    """The manifest's metrics: what to expect on new patients, from the patient-level cross-validation."""
    ms, pooled = summary["mean_std"], summary["pooled"]
    return {
        "dataset": (f"{summary['folds']}-fold cross-validation by patient over {pooled['patients']} patients and "
                    f"{pooled['cells']:,} cells (malaria/ and malaria_extra/): each fold's model never saw the "
                    f"patients it was measured on; mean ± standard deviation over folds"),
        "examples": pooled["cells"],
        "accuracy": ms["accuracy"]["mean"], "accuracy_std": ms["accuracy"]["std"],
        "roc_auc": ms["roc_auc"]["mean"], "roc_auc_std": ms["roc_auc"]["std"],
        "sensitivity": ms["sensitivity"]["mean"], "specificity": ms["specificity"]["mean"],
        "pooled": {k: pooled[k] for k in ("accuracy", "roc_auc", "sensitivity", "specificity")},
        "per_patient_accuracy": {k: v for k, v in summary["per_patient_accuracy"].items() if k != "worst"},
        "worst_patients": summary["per_patient_accuracy"]["worst"],
    }


def train_final(data_dir: Path, model_dir: Path, variant: Variant, seed: int = 0) -> Path:
    """The served model: the variant's recipe trained on every patient, with its cross-validated figures."""

    from app.models.artifacts import next_version, publish_version, staging_dir
    from app.training.malaria import (
        LABELS, LIBRARIES, MODEL_NAME, ONNX_FILE, count_macs, export_onnx, train_keras_model,
    )
    from app.training.plots import save_evaluation_plots, save_training_curves

    summary = summarize(variant.name)
    if len(summary["folds_done"]) < summary["folds"]:
        raise RuntimeError(f"variant {variant.name} has folds {summary['folds_done']} of {summary['folds']}: "
                           f"finish the cross-validation first (make malaria-cv VARIANT={variant.name})")
    tensorflow().config.experimental.enable_op_determinism()
    rows = read_rows(data_dir)
    cells, y = load_cells(rows, variant.size), labels_of(rows)
    model, history = train_keras_model(cells, y, None, None, seed=seed, epochs=variant.epochs, recipe=variant)
    root = Path(model_dir) / MODEL_NAME
    version = next_version(root)
    staging = staging_dir(root, version)
    sample = np.random.default_rng(seed).choice(len(cells), 512, replace=False)
    _, max_diff = export_onnx(model, staging / ONNX_FILE, cells[sample].astype(np.float32) / 255.0)
    metrics = cross_validated_metrics(summary)
    curves = pooled_curves(variant.name)
    title = f"{MODEL_NAME} v{version}: {variant.name}, cross-validated by patient"
    save_training_curves(staging, history, f"{MODEL_NAME} v{version} (all patients)")
    save_evaluation_plots(staging, title, LABELS, curves["matrix"], curves["fpr"], curves["tpr"], metrics["pooled"]["roc_auc"])
    shutil.copy2(RESULTS / variant.name / "per_patient_accuracy.png", staging / "per_patient_accuracy.png")
    size = variant.size
    manifest = {
        "name": MODEL_NAME,
        "version": version,
        "task": "image-classification",
        "runtime": "onnx-image",
        "description": f"Thin blood smear cell crops: Parasitized vs Uninfected. {variant.description}; ONNX.",
        "card": CARDS["malaria_cell"],
        "labels": LABELS,
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1], "content": "image",
                    "description": f"an encoded PNG or JPEG file per item; also accepted: a UINT8 (0..255) or "
                                   f"FP32 (0..1) tensor [N, {size}, {size}, 3] already padded to square with "
                                   f"black and resized (bilinear)"}],
        "outputs": [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                    {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(LABELS)]}],
        # Requests merged while a prediction runs, no waiting (benchmarks/results/batching.md: 1.08x
        # req/s at 8 connections; a wait gained nothing measurable for this model).
        "batching": {"max_batch_size": 32, "max_wait_ms": 0.0},
        "preprocessing": {"input_size": size, "resize": "pad", "filter": "bilinear", "scale": 1 / 255,
                          "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "layout": "NHWC",
                          "output_kind": "probabilities"},
        "multiply_adds_per_image": count_macs(model),
        "parameters": int(model.count_params()),
        "metrics": metrics,
        "training": {
            "data": f"every cell of both folders: {len(cells):,} cells of {len({r['patient'] for r in rows})} patients",
            "recipe": asdict(variant),
            "seed": seed,
            "cross_validation": f"evaluation/malaria_cv/{variant.name}/ (one file per fold, summary.json)",
            "epochs": "fixed (the last epoch's weights; nothing chosen on held-out patients)",
            "onnx_vs_keras_max_abs_diff": max_diff,
        },
    }
    return publish_version(staging, manifest, LIBRARIES)
