"""The committed sentiment model is what `flask train review` produces."""
import json

import joblib
import numpy as np
import pytest

from tests.conftest import SAVED_MODELS, committed_version


def test_train_review_reproduces_committed_model(tmp_path, shared_data):
    from app import create_app

    app = create_app({"TESTING": True, "MODEL_DIR": str(tmp_path / "models"),
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"})
    result = app.test_cli_runner().invoke(args=["train", "review", "--data", str(shared_data), "--seed", "0"])
    assert result.exit_code == 0, result.output

    new_dir = tmp_path / "models" / "review_sentiment" / "1"
    new = json.loads((new_dir / "manifest.json").read_text())
    committed_dir = SAVED_MODELS / "review_sentiment" / committed_version("review_sentiment")
    committed = json.loads((committed_dir / "manifest.json").read_text())
    assert new["metrics"] == committed["metrics"]
    assert new["metrics"]["accuracy"] >= 0.918
    assert new["training"] == committed["training"] and new["card"] == committed["card"]
    assert new["preprocessing"] == committed["preprocessing"]
    for plot in ("confusion_matrix.png", "roc_curve.png"):
        assert (new_dir / plot).stat().st_size > 10_000

    fresh = joblib.load(new_dir / "estimator.joblib")
    saved = joblib.load(committed_dir / "estimator.joblib")
    np.testing.assert_allclose(fresh[-1].coef_, saved[-1].coef_, rtol=1e-6, atol=1e-9)
    assert new["artifacts"]["stopwords.pkl"] == committed["artifacts"]["stopwords.pkl"]

    # Its reference profile (what drift is measured against) is written with it, over the held-out test split:
    # the committed version's, from the same data.
    fresh_reference = json.loads((new_dir / "reference.json").read_text())
    committed_reference = json.loads((committed_dir / "reference.json").read_text())
    assert "reference.json" in new["artifacts"]
    for part in ("source", "examples", "features", "vocabulary", "labels"):
        assert fresh_reference[part] == committed_reference[part], part
    np.testing.assert_allclose(fresh_reference["score"]["shares"], committed_reference["score"]["shares"], atol=1e-4)


def same_figures(ours, theirs) -> bool:
    """Equal JSON documents, floats compared to a relative 1e-12."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return ours.keys() == theirs.keys() and all(same_figures(ours[k], theirs[k]) for k in ours)
    if isinstance(ours, list) and isinstance(theirs, list):
        return len(ours) == len(theirs) and all(same_figures(a, b) for a, b in zip(ours, theirs))
    if isinstance(ours, float) or isinstance(theirs, float):
        return ours == pytest.approx(theirs, rel=1e-12)
    return ours == theirs


def test_the_cell_check_is_refitted_to_the_committed_figures(tmp_path, shared_data):
    """`flask train malaria-cell-check` on a copy of the model folder gives the committed check and figures."""
    import shutil

    from app import create_app

    models = tmp_path / "models"
    shutil.copytree(SAVED_MODELS / "malaria_cell", models / "malaria_cell")
    app = create_app({"TESTING": True, "MODEL_DIR": str(models), "DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}"})
    done = app.test_cli_runner().invoke(args=["train", "malaria-cell-check", "--data", str(shared_data),
                                              "--results", str(tmp_path / "figures.json")])
    assert done.exit_code == 0, done.output
    # The same figures; floats to 1e-12 (a sum's last digit can differ with the BLAS threads' split of the work).
    assert same_figures(json.loads((tmp_path / "figures.json").read_text()),
                        json.loads((SAVED_MODELS.parent / "evaluation" / "malaria_cell_check.json").read_text()))
    version = committed_version("malaria_cell")
    ours = json.loads((models / "malaria_cell" / version / "cell_check.json").read_text())
    committed = json.loads((SAVED_MODELS / "malaria_cell" / version / "cell_check.json").read_text())
    assert ours["threshold"] == pytest.approx(committed["threshold"], rel=1e-12)
    assert np.allclose(ours["mean"], committed["mean"])
    registry = app.extensions["model_registry"]
    registry.load_all()
    assert not registry.refused and registry.get("malaria_cell").cell_check is not None
