"""Training, evaluation and online updates of the movie-review sentiment model.

Run through the CLI: ``flask train review --data ../shared/data``.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import joblib
import numpy as np
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score, roc_curve
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer
from tqdm import tqdm

from app.models.text import ESTIMATOR_FILE, STOPWORDS_FILE, SklearnTextModel
from app.preprocessing.text import (VECTORIZER_SETTINGS, LogCountRatioScaler, SeenFeatures, build_vectorizer,
                                    save_stopwords)
from app.models.artifacts import next_version, publish_version, staging_dir
from app.training.cards import CARDS
from app.training.data import read_imdb_split

log = logging.getLogger(__name__)

MODEL_NAME = "review_sentiment"
LABELS = ["negative", "positive"]
# Settings searched by 5-fold cross-validation on the train split (the test split is never seen).
GRID = {
    "seen__min_df": [2, 3, 4, 5],
    "nb_scale__smoothing": [1.0, 2.0],
    "clf__alpha": [4e-6, 3e-6, 2e-6, 1e-6],
}
LIBRARIES = ["scikit-learn", "numpy", "scipy", "joblib"]
DESCRIPTION = ("Movie-review sentiment (IMDb): hashed binary word 1-3-grams (those seen in training), naive-Bayes "
               "log-count-ratio scaling, L2 normalisation, logistic-loss SGD (NBSVM-style).")
TEST_SET = "IMDb official test split (25,000 reviews; never used for training or model selection)"


def read_stopwords_with_nltk(stopwords_dir: Path) -> list[str]:
    """NLTK's English stopword list, read with NLTK's own word-list reader."""
    import nltk
    from nltk.corpus.reader import WordListCorpusReader

    # NLTK only reads corpora from folders on its data path.
    if str(stopwords_dir) not in nltk.data.path:
        nltk.data.path.append(str(stopwords_dir))
    return list(WordListCorpusReader(str(stopwords_dir), ["english.txt"]).words())


def hash_texts(vectorizer, texts: list[str], desc: str, chunk: int = 2000):
    """Hash texts in chunks, with a progress bar."""
    import scipy.sparse as sp

    parts = [vectorizer.transform(texts[i:i + chunk]) for i in tqdm(range(0, len(texts), chunk), desc=desc, unit="chunk")]
    return sp.vstack(parts).tocsr()


def make_pipeline(seed: int) -> Pipeline:
    """Features seen in training -> NB log-count-ratio scaling -> L2 normalisation -> logistic loss SGD.

    The SGD classifier supports partial_fit (online learning from feedback).
    """
    return Pipeline([
        ("seen", SeenFeatures()),
        ("nb_scale", LogCountRatioScaler()),
        ("l2", Normalizer()),
        ("clf", SGDClassifier(loss="log_loss", max_iter=200, tol=1e-6, random_state=seed)),
    ])


def positive_scores(estimator, features) -> np.ndarray:
    """Probability of the positive class, or the decision score when there is none."""
    if hasattr(estimator, "predict_proba"):
        return estimator.predict_proba(features)[:, 1]
    return estimator.decision_function(features)


def measure(estimator, features, y_true: np.ndarray) -> tuple[dict, dict]:
    """Accuracy, ROC AUC and confusion matrix on held-out data; also the ROC curve."""
    predicted = estimator.predict(features)
    scores = positive_scores(estimator, features)
    matrix = confusion_matrix(y_true, predicted, labels=[0, 1])
    fpr, tpr, _ = roc_curve(y_true, scores)
    metrics = {
        "dataset": TEST_SET,
        "examples": int(len(y_true)),
        "accuracy": round(float(accuracy_score(y_true, predicted)), 5),
        "roc_auc": round(float(roc_auc_score(y_true, scores)), 5),
        "confusion_matrix": {"labels": LABELS, "rows_true_columns_predicted": matrix.tolist()},
    }
    return metrics, {"fpr": fpr, "tpr": tpr, "matrix": matrix}


def short_params(params: dict) -> str:
    """'smoothing=1.0 min_df=2 alpha=1e-06' for a grid point."""
    return " ".join(f"{key.split('__')[-1]}={value:g}" for key, value in params.items())


def grid_search(pipeline: Pipeline, grid: dict, features, y: np.ndarray, seed: int, folds: int) -> GridSearchCV:
    """Fit every grid point with stratified k-fold CV on the training data only, refit the best on all of it."""
    search = GridSearchCV(pipeline, grid, cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed),
                          scoring="accuracy", n_jobs=1, refit=True, verbose=2)
    return search.fit(features, y)


def cv_table(search: GridSearchCV) -> dict[str, float]:
    """Mean CV accuracy of every grid point, keyed by short_params()."""
    return {short_params(p): round(float(s), 5)
            for p, s in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"])}


# How the server merges concurrent requests for these models (app/models/batching.py): up to 32
# reviews, waiting up to 2 ms only while other requests are on their way (what it gains, and that it
# costs a lone request nothing: benchmarks/results/batching.md).
TEXT_BATCHING = {"max_batch_size": 32, "max_wait_ms": 2.0}


def base_manifest(name: str, version: int, description: str, has_probabilities: bool = True) -> dict:
    """Manifest fields every hashed-text model shares."""
    score_output = ({"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]} if has_probabilities
                    else {"name": "decision_score", "datatype": "FP64", "shape": [-1],
                          "description": "signed distance from the separating hyperplane; > 0 means positive"})
    return {
        "name": name,
        "version": version,
        "task": "text-classification",
        "runtime": "sklearn-text",
        "description": description,
        "card": CARDS[name],
        "labels": LABELS,
        "inputs": [{"name": "review", "datatype": "BYTES", "shape": [-1], "content": "text", "description": "review text, UTF-8, any length up to the server's MAX_TEXT_CHARS"}],
        "outputs": [{"name": "label", "datatype": "BYTES", "shape": [-1]}, score_output],
        "batching": TEXT_BATCHING,
        "preprocessing": {
            "tokenizer": ("app.preprocessing.text.ReviewAnalyzer: strip HTML, keep emoticons, lowercase, split on non-word "
                          "characters; NLTK English stopwords (stopwords.pkl) dropped as single words, kept inside n-grams"),
            "vectorizer": VECTORIZER_SETTINGS,
        },
    }


def save_plot(directory: Path, name: str, version: int, metrics: dict, curves: dict) -> None:
    """Confusion matrix and ROC curve PNGs beside the model."""
    from app.training.plots import save_evaluation_plots

    save_evaluation_plots(
        directory, f"{name} v{version}: IMDb test accuracy {metrics['accuracy']:.2%}",
        LABELS, curves["matrix"], curves["fpr"], curves["tpr"], metrics["roc_auc"],
    )


def imdb_reference(data_dir: Path):
    """A text model's reference profile (what drift is measured against): its answers and the reviews'
    features over the IMDb test split, unknown words counted against the train split."""
    from app.monitoring.report import reference_from_data

    imdb = Path(data_dir) / "imdb"
    return lambda model: reference_from_data(model, imdb / "test.csv.gz", ["text"], imdb / "train.csv.gz")


def publish_text_model(model_dir: Path, manifest: dict, estimator, stopwords: list[str], curves: dict,
                       data_dir: Path) -> Path:
    """Write estimator, stopword pickle, plot, reference profile and manifest as the next version of
    manifest['name']."""
    root = Path(model_dir) / manifest["name"]
    version = next_version(root)
    staging = staging_dir(root, version)
    joblib.dump(estimator, staging / ESTIMATOR_FILE, compress=3)
    save_stopwords(stopwords, staging / STOPWORDS_FILE)
    save_plot(staging, manifest["name"], version, manifest["metrics"], curves)
    return publish_version(staging, {**manifest, "version": version}, LIBRARIES, imdb_reference(data_dir))


def load_hashed_imdb(data_dir: Path) -> tuple[list[str], object, np.ndarray, object, np.ndarray]:
    """Stopwords, and the hashed IMDb train and test splits with their labels."""
    stopwords = read_stopwords_with_nltk(Path(data_dir) / "stopwords")
    vectorizer = build_vectorizer(stopwords)
    train_texts, y_train = read_imdb_split(Path(data_dir) / "imdb", "train")
    test_texts, y_test = read_imdb_split(Path(data_dir) / "imdb", "test")
    x_train = hash_texts(vectorizer, train_texts, "hashing train")
    x_test = hash_texts(vectorizer, test_texts, "hashing test")
    return stopwords, x_train, y_train, x_test, y_test


def train_review_model(data_dir: Path, model_dir: Path, seed: int = 0) -> Path:
    """Train on the IMDb train split, measure on the test split, write a new model version."""
    stopwords, x_train, y_train, x_test, y_test = load_hashed_imdb(data_dir)
    search = grid_search(make_pipeline(seed), GRID, x_train, y_train, seed, folds=5)
    log.info("cross-validated accuracy: %s; chose %s", cv_table(search), short_params(search.best_params_))
    metrics, curves = measure(search.best_estimator_, x_test, y_test)
    manifest = base_manifest(MODEL_NAME, 0, DESCRIPTION)
    manifest["metrics"] = metrics
    manifest["training"] = {
        "data": "IMDb official train split (25,000 reviews), shuffled by SGD with the seed below",
        "seed": seed,
        "hyperparameters": {**{k.split("__")[-1]: v for k, v in search.best_params_.items()},
                            "loss": "log_loss", "max_iter": 200, "tol": 1e-6},
        "model_selection": {"method": "5-fold stratified cross-validation on the train split",
                            "cv_accuracy": cv_table(search)},
    }
    return publish_text_model(model_dir, manifest, search.best_estimator_, stopwords, curves, data_dir)


def evaluate_text_model(model: SklearnTextModel, data_dir: Path) -> dict:
    """Re-measure a loaded text model on the IMDb test split."""
    test_texts, y_test = read_imdb_split(Path(data_dir) / "imdb", "test")
    features = hash_texts(model.vectorizer, test_texts, f"hashing test for {model.name} v{model.version}")
    metrics, _ = measure(model.estimator, features, y_test)
    return metrics


def learn_from_feedback(model: SklearnTextModel, texts: list[str], labels: list[str],
                        data_dir: Path | None) -> Path:
    """partial_fit the model on feedback and write the result as a new version (old one kept)."""
    model.learn(texts, labels)
    root = model.manifest.directory.parent
    version = next_version(root)
    staging = staging_dir(root, version)
    joblib.dump(model.estimator, staging / ESTIMATOR_FILE, compress=3)
    shutil.copy2(model.manifest.directory / STOPWORDS_FILE, staging / STOPWORDS_FILE)
    manifest = {**model.manifest.document, "version": version}
    for key in ("artifacts", "libraries", "created"):
        manifest.pop(key, None)
    manifest["training"] = {
        **model.manifest.get("training", {}),
        "online_update": {"from_version": model.version, "feedback_examples": len(texts), "method": "SGDClassifier.partial_fit"},
    }
    reference = None
    if data_dir is not None and (Path(data_dir) / "imdb" / "test.csv.gz").exists():
        test_texts, y_test = read_imdb_split(Path(data_dir) / "imdb", "test")
        metrics, curves = measure(model.estimator, hash_texts(model.vectorizer, test_texts, "hashing test"), y_test)
        save_plot(staging, model.name, version, metrics, curves)
        manifest["metrics"] = metrics
        reference = imdb_reference(data_dir)
    else:
        manifest["metrics"] = {"note": f"not re-measured after the online update (no test data); version {model.version} measured {model.manifest.metrics.get('accuracy')}"}
    return publish_version(staging, manifest, LIBRARIES, reference)
