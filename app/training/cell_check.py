"""Fit and measure the cell-likeness check of the served malaria model (app/preprocessing/cell_check.py).

    flask train malaria-cell-check --data ../shared/data

Its false-alarm rate is measured by patient, as the network's accuracy is: the cells are
dealt into the five patient folds of the cross-validation, the check is fitted on four and
counted on the fifth (cells of patients it never saw), for each fold. Its detection rate is
measured on images that are not cell crops, made here with a fixed seed and encoded as files
a user would send (noise, flat colours, gradients, a text page, smooth photo-like fields,
cells with inverted colours). The shipped check is then fitted on every cell and added to the
served version's folder (hashed in its manifest, which records the figures).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from app.config import PROJECT_ROOT
from app.preprocessing.cell_check import CellCheck, cell_features
from app.preprocessing.image import prepare_image
from app.models.artifacts import add_artifact
from app.training.malaria_cv import load_cells, patient_folds, read_rows

RESULTS = PROJECT_ROOT / "evaluation" / "malaria_cell_check.json"
CHECK_FILE = "cell_check.json"
SIZE = 64


def png(array: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 array as PNG file bytes."""
    out = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def made_up_images(rng: np.random.Generator, cells: np.ndarray, count: int = 200) -> dict[str, list[bytes]]:
    """Files that are not cell crops, ``count`` of each kind."""
    def side():
        return int(rng.integers(48, 257))

    def text_page():
        page = Image.new("RGB", (side(), side()), "white")
        draw = ImageDraw.Draw(page)
        for y in range(4, page.height - 10, 12):
            draw.text((4, y), "".join(rng.choice(list("abcdefghij klmnop qrstuvwxyz")) for _ in range(40)), fill="black")
        out = io.BytesIO()
        page.save(out, format="PNG")
        return out.getvalue()

    def smooth_field():
        small = rng.integers(0, 256, size=(4, 4, 3)).astype(np.uint8)
        return png(np.asarray(Image.fromarray(small).resize((side(), side()), Image.Resampling.BICUBIC)))

    def gradient():
        h, w = side(), side()
        start, end = rng.integers(0, 256, size=3), rng.integers(0, 256, size=3)
        t = np.linspace(0, 1, w)[None, :, None]
        return png(np.broadcast_to(start + (end - start) * t, (h, w, 3)))

    picks = rng.choice(len(cells), size=count, replace=False)
    return {
        "uniform noise": [png(rng.integers(0, 256, size=(side(), side(), 3))) for _ in range(count)],
        "grey noise": [png(np.clip(rng.normal(128, 40, size=(side(), side(), 3)), 0, 255)) for _ in range(count)],
        "flat colour": [png(np.broadcast_to(rng.integers(0, 256, size=3), (side(), side(), 3))) for _ in range(count)],
        "colour gradient": [gradient() for _ in range(count)],
        "text page": [text_page() for _ in range(count)],
        "smooth photo-like field": [smooth_field() for _ in range(count)],
        "cell with inverted colours": [png(255 - cells[i]) for i in picks],
    }


def evaluate_and_ship(data_dir: Path, quantile: float, seed: int = 0) -> dict:
    """Cross-validated false alarms, detection of made-up images, and the shipped check; returns the figures."""
    rows = read_rows(data_dir)
    cells = load_cells(rows, SIZE)
    features = cell_features(cells.astype(np.float32) / 255.0)
    patients = np.array([r["patient"] for r in rows])
    folds = []
    for number, held_out in enumerate(patient_folds(rows, seed)):
        out = np.isin(patients, held_out)
        check = CellCheck.fit(features[~out], quantile)
        alarms = int((check.distances(features[out]) > check.threshold).sum())
        folds.append({"fold": number, "cells": int(out.sum()), "patients": len(held_out), "false_alarms": alarms,
                      "false_alarm_rate": round(alarms / int(out.sum()), 5)})
    shipped = CellCheck.fit(features, quantile)
    made_up = made_up_images(np.random.default_rng(seed), cells)
    detection = {}
    for kind, files in made_up.items():
        flagged = shipped.unlike(np.stack([prepare_image(data, SIZE) for data in files]))
        detection[kind] = round(float(flagged.mean()), 4)
    alarms, total = sum(f["false_alarms"] for f in folds), sum(f["cells"] for f in folds)
    return {
        "method": f"Mahalanobis distance over {', '.join(shipped.features)} of the image as the network sees it; "
                  f"threshold: the {quantile} quantile of the fitted cells' own distances",
        "false_alarms": {"measured": "5-fold by patient (seed 0, the cross-validation's folds): fitted on four "
                                     "folds, counted on the held-out patients' cells", "cells": total,
                         "false_alarm_rate": round(alarms / total, 5), "folds": folds},
        "detection_rate": {"measured": f"{len(next(iter(made_up.values())))} made-up files of each kind (seed {seed}), "
                                       "flagged by the check fitted on every cell", **detection},
        "shipped": shipped,
    }


def ship(version_dir: Path, figures: dict) -> None:
    """Write the check into the served version's folder and record it, hashed, in the manifest."""
    check: CellCheck = figures["shipped"]
    check.save(version_dir / CHECK_FILE)
    manifest_path = version_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["config"]["cell_check"] = CHECK_FILE
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    stated = {k: figures[k] for k in ("method", "detection_rate")}
    stated["false_alarms"] = {k: v for k, v in figures["false_alarms"].items() if k != "folds"}
    add_artifact(version_dir, CHECK_FILE, {"cell_check": {"method": stated["method"], "false_alarms": stated["false_alarms"],
                                                          "detection_rate": stated["detection_rate"]}})
