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
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer
from tqdm import tqdm

from app.models.text import ESTIMATOR_FILE, STOPWORDS_FILE, SklearnTextModel
from app.preprocessing.text import VECTORIZER_SETTINGS, LogCountRatioScaler, build_vectorizer, save_stopwords
from app.training.artifacts import next_version, publish_version, staging_dir
from app.training.data import read_imdb_split

log = logging.getLogger(__name__)

MODEL_NAME = "review_sentiment"
LABELS = ["negative", "positive"]
ALPHAS = (1e-5, 3e-6, 1e-6, 3e-7)
LIBRARIES = ["scikit-learn", "numpy", "scipy", "joblib"]
DESCRIPTION = "Movie-review sentiment (IMDb): hashed word 1-2-grams, NB log-count-ratio scaling, logistic-loss SGD."
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


def make_pipeline(alpha: float, seed: int) -> Pipeline:
    """NB log-count-ratio scaling -> L2 normalisation -> logistic loss SGD (supports partial_fit)."""
    return Pipeline([
        ("nb_scale", LogCountRatioScaler()),
        ("l2", Normalizer()),
        ("clf", SGDClassifier(loss="log_loss", alpha=alpha, max_iter=200, tol=1e-6, random_state=seed)),
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


def select_alpha(features, y: np.ndarray, seed: int, alphas=ALPHAS) -> tuple[float, dict[str, float]]:
    """Pick the SGD regularisation by 5-fold cross-validation on the training split only."""
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    scores = {}
    for alpha in tqdm(alphas, desc="choosing alpha (5-fold CV)", unit="alpha"):
        fold_scores = cross_val_score(make_pipeline(alpha, seed), features, y, cv=folds, scoring="accuracy")
        scores[f"{alpha:g}"] = round(float(fold_scores.mean()), 5)
    best = max(alphas, key=lambda a: scores[f"{a:g}"])
    return best, scores


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
        "labels": LABELS,
        "inputs": [{"name": "review", "datatype": "BYTES", "shape": [-1], "content": "text", "description": "review text, UTF-8, any length up to the server's MAX_TEXT_CHARS"}],
        "outputs": [{"name": "label", "datatype": "BYTES", "shape": [-1]}, score_output],
        "preprocessing": {
            "tokenizer": "app.preprocessing.text.ReviewTokenizer: strip HTML, keep emoticons, lowercase, split on non-word characters, drop NLTK English stopwords (stopwords.pkl)",
            "vectorizer": VECTORIZER_SETTINGS,
        },
    }


def save_plot(directory: Path, name: str, version: int, metrics: dict, curves: dict) -> None:
    """Confusion matrix and ROC curve PNG beside the model."""
    from app.training.plots import save_evaluation_plot

    save_evaluation_plot(
        directory / "evaluation.png",
        f"{name} v{version}: IMDb test accuracy {metrics['accuracy']:.2%}",
        LABELS, curves["matrix"], curves["fpr"], curves["tpr"], metrics["roc_auc"],
    )


def publish_text_model(model_dir: Path, manifest: dict, estimator, stopwords: list[str], curves: dict) -> Path:
    """Write estimator, stopword pickle, plot and manifest as the next version of manifest['name']."""
    root = Path(model_dir) / manifest["name"]
    version = next_version(root)
    staging = staging_dir(root, version)
    joblib.dump(estimator, staging / ESTIMATOR_FILE, compress=3)
    save_stopwords(stopwords, staging / STOPWORDS_FILE)
    save_plot(staging, manifest["name"], version, manifest["metrics"], curves)
    return publish_version(staging, {**manifest, "version": version}, LIBRARIES)


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
    alpha, validation = select_alpha(x_train, y_train, seed)
    log.info("validation accuracy by alpha: %s; chose %g", validation, alpha)
    pipeline = make_pipeline(alpha, seed).fit(x_train, y_train)
    metrics, curves = measure(pipeline, x_test, y_test)
    manifest = base_manifest(MODEL_NAME, 0, DESCRIPTION)
    manifest["metrics"] = metrics
    manifest["training"] = {
        "data": "IMDb official train split (25,000 reviews), shuffled by SGD with the seed below",
        "seed": seed,
        "hyperparameters": {"alpha": alpha, "loss": "log_loss", "max_iter": 200, "tol": 1e-6},
        "model_selection": {"method": "5-fold stratified cross-validation on the train split", "cv_accuracy_by_alpha": validation},
    }
    return publish_text_model(model_dir, manifest, pipeline, stopwords, curves)


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
    if data_dir is not None and (Path(data_dir) / "imdb" / "test.csv.gz").exists():
        test_texts, y_test = read_imdb_split(Path(data_dir) / "imdb", "test")
        metrics, curves = measure(model.estimator, hash_texts(model.vectorizer, test_texts, "hashing test"), y_test)
        save_plot(staging, model.name, version, metrics, curves)
        manifest["metrics"] = metrics
    else:
        manifest["metrics"] = {"note": f"not re-measured after the online update (no test data); version {model.version} measured {model.manifest.metrics.get('accuracy')}"}
    return publish_version(staging, manifest, LIBRARIES)
