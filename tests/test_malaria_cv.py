"""Patient-level cross-validation of the malaria CNN: the folds, the per-fold figures and their pooling.

The training itself needs TensorFlow (`make malaria-cv`); these tests check everything around it
on the real manifests and on fold files made here.
"""
import json

import numpy as np
import pytest

from app.training.malaria_cv import FOLDS, fold_metrics, patient_folds, read_rows, summarize, write_summary


def test_folds_split_by_patient_with_both_kinds_in_each(shared_data):
    rows = read_rows(shared_data)
    assert {r["folder"] for r in rows} == {"malaria", "malaria_extra"}
    folds = patient_folds(rows, seed=0)
    patients = [p for fold in folds for p in fold]
    assert len(patients) == len(set(patients)) == len({r["patient"] for r in rows})  # each patient in one fold
    infected = {r["patient"] for r in rows if r["label"] == "Parasitized"}
    for fold in folds:
        assert set(fold) & infected and set(fold) - infected
        assert abs(len(fold) - len(patients) / FOLDS) <= 1
    # A patient's cells from both folders are held out together.
    fold_of = {p: i for i, fold in enumerate(folds) for p in fold}
    extra = [r for r in rows if r["folder"] == "malaria_extra"]
    assert extra and all(r["patient"] in fold_of for r in extra)
    assert patient_folds(rows, seed=0) == folds and patient_folds(rows, seed=1) != folds


def test_fold_metrics_by_hand():
    # labels: 0 = Parasitized; two patients, four cells each
    y = np.array([0, 0, 1, 1, 0, 1, 1, 1])
    p = np.array([0.9, 0.4, 0.2, 0.6, 0.8, 0.1, 0.3, 0.2])
    metrics = fold_metrics(p, y, ["A"] * 4 + ["B"] * 4)
    assert metrics["accuracy"] == 0.75
    assert metrics["sensitivity"] == pytest.approx(2 / 3, abs=1e-5)  # 0.9 and 0.8 found, 0.4 missed
    assert metrics["specificity"] == 0.8                               # 0.6 is the one false alarm
    assert metrics["per_patient"] == {"A": {"correct": 2, "cells": 4, "accuracy": 0.5},
                                      "B": {"correct": 4, "cells": 4, "accuracy": 1.0}}


def fold_file(root, fold, cells):
    y = np.array([c[2] for c in cells])
    p = np.array([c[3] for c in cells])
    result = {"variant": {"name": "toy"}, "fold": fold, "folds": FOLDS, "multiply_adds_per_image": 1_000_000,
              "parameters": 10, "training_seconds": 60, "metrics": fold_metrics(p, y, [c[1] for c in cells]),
              "cells": cells}
    (root / "toy").mkdir(parents=True, exist_ok=True)
    (root / "toy" / f"fold-{fold}.json").write_text(json.dumps(result))


def test_summary_pools_the_folds_written_so_far(tmp_path):
    fold_file(tmp_path, 0, [["a.png", "P1", 0, 0.9], ["b.png", "P1", 0, 0.2], ["c.png", "P2", 1, 0.1]])
    fold_file(tmp_path, 3, [["d.png", "P3", 1, 0.7], ["e.png", "P3", 1, 0.3], ["f.png", "P4", 0, 0.6]])
    summary = summarize("toy", tmp_path)
    assert summary["folds_done"] == [0, 3]
    assert summary["per_fold"]["0"]["accuracy"] == pytest.approx(2 / 3, abs=1e-5)
    assert summary["mean_std"]["accuracy"]["mean"] == pytest.approx(2 / 3, abs=1e-5)
    assert summary["pooled"]["cells"] == 6 and summary["pooled"]["accuracy"] == pytest.approx(4 / 6, abs=1e-5)
    assert summary["per_patient_accuracy"]["min"] == 0.5
    assert list(summary["per_patient_accuracy"]["worst"])[:2] == ["P1", "P3"]
    path, _ = write_summary("toy", tmp_path)
    assert json.loads(path.read_text())["folds_done"] == [0, 3]
    assert (tmp_path / "toy" / "per_patient_accuracy.png").stat().st_size > 1000


def test_no_folds_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no fold results"):
        summarize("nothing", tmp_path)


def test_training_without_tensorflow_is_a_one_line_error(runner, shared_data, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorflow", None)  # as in the serving and test environments
    for args in (["malaria-fold", "--variant", "vgg64", "--fold", "0"], ["malaria", "--variant", "vgg64"]):
        result = runner.invoke(args=["train", *args, "--data", str(shared_data)])
        assert result.exit_code == 1 and "make train-env" in result.output and "Traceback" not in result.output
