"""Text preprocessing shared by training, serving and tests (no Flask imports).

The classic movie-review recipe: strip HTML, keep emoticons, lowercase,
tokenize on non-word characters, drop stopwords, hash the tokens.
"""
from __future__ import annotations

import io
import pickle
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import HashingVectorizer

# :) :-) ;) =) :( :D :P and their nose-less / nosed variants.
_EMOTICON = re.compile(r"(?::|;|=)(?:-)?(?:\)|\(|D|P)")
_NON_WORD = re.compile(r"\W+")

# Settings of the HashingVectorizer. They are recorded in every text model's
# manifest; loading refuses a model whose manifest disagrees with the code.
VECTORIZER_SETTINGS: dict = {
    "n_features": 2**21,
    "ngram_range": [1, 2],
    "alternate_sign": False,
    "norm": None,
    "binary": True,
}


def strip_tags(text: str) -> str:
    """Replace every '<...>' with a space, in linear time.

    The same result as re.sub(r"<[^>]*>", " ", text), which is quadratic when many '<' have
    no '>' after them (50,000 of them took 1.5 s): once the first unmatched '<' is found,
    no later '<' can have a '>' after it either, so the scan stops there.
    """
    pieces, position = [], 0
    while (start := text.find("<", position)) >= 0 and (end := text.find(">", start)) >= 0:
        pieces += [text[position:start], " "]
        position = end + 1
    pieces.append(text[position:])
    return "".join(pieces)


def normalize_text(text: str) -> str:
    """Strip HTML tags, lowercase, and move emoticons (nose removed) to the end."""
    text = strip_tags(text)
    emoticons = _EMOTICON.findall(text)
    text = _NON_WORD.sub(" ", text.lower())
    if emoticons:
        text += " " + " ".join(emoticons).replace("-", "")
    return text


class ReviewTokenizer:
    """Callable tokenizer: normalize_text() then drop stopwords."""

    def __init__(self, stopwords: Iterable[str] = ()):
        """Store the stopword set (no other work)."""
        self.stopwords = frozenset(stopwords)

    def __call__(self, text: str) -> list[str]:
        """Return the tokens of ``text`` that are not stopwords."""
        stop = self.stopwords
        return [tok for tok in normalize_text(text).split() if tok not in stop]


def build_vectorizer(stopwords: Iterable[str], settings: dict | None = None) -> HashingVectorizer:
    """The HashingVectorizer used by every text model, training and serving alike."""
    params = dict(VECTORIZER_SETTINGS if settings is None else settings)
    params["ngram_range"] = tuple(params["ngram_range"])
    return HashingVectorizer(
        tokenizer=ReviewTokenizer(stopwords),
        preprocessor=None,
        lowercase=False,
        token_pattern=None,
        dtype=np.float32,
        **params,
    )


def read_stopword_list(path: Path) -> list[str]:
    """Read a one-word-per-line stopword file (NLTK's format)."""
    return [w.strip() for w in Path(path).read_text(encoding="utf-8").splitlines() if w.strip()]


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global, so a pickle can hold only plain data."""

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        """Refuse to resolve any class or function: no code can run."""
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a data pickle")


def save_stopwords(words: Iterable[str], path: Path) -> None:
    """Write the stopwords as a pickled list of str (the classic stopwords.pkl)."""
    with open(path, "wb") as fh:
        pickle.dump(sorted(set(words)), fh, protocol=4)


def load_stopwords(path: Path) -> list[str]:
    """Load a stopword pickle safely: only a list of str is accepted."""
    data = Path(path).read_bytes()
    words = _NoGlobalsUnpickler(io.BytesIO(data)).load()
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise ValueError(f"{path}: expected a pickled list of str")
    return words


class LogCountRatioScaler(TransformerMixin, BaseEstimator):
    """Scale each hashed feature by its naive-Bayes log-count ratio (Wang & Manning 2012, NBSVM).

    ``r = log((p / |p|_1) / (q / |q|_1))`` with p, q the smoothed per-class
    feature counts. Words that separate the classes get large weights before
    the linear model sees them; fitted state is ``ratio_``.
    """

    def __init__(self, smoothing: float = 1.0):
        """Store the additive smoothing; no work here."""
        self.smoothing = smoothing

    def fit(self, X, y):
        """Compute the log-count ratio from binary features X and 0/1 labels y."""
        y = np.asarray(y)
        p = np.asarray(X[y == 1].sum(axis=0)).ravel() + self.smoothing
        q = np.asarray(X[y == 0].sum(axis=0)).ravel() + self.smoothing
        self.ratio_ = np.log((p / p.sum()) / (q / q.sum())).astype(np.float32)
        return self

    def transform(self, X):
        """Multiply column j of X by ratio_[j] (on the stored values only: O(non-zeros))."""
        # astype copies; building through sp.csr_matrix(...) re-validates the structure and
        # cost a quarter of a one-review prediction.
        X = sp.csr_matrix(X) if not sp.issparse(X) else X.tocsr()
        X = X.astype(np.float32, copy=True)
        X.data *= self.ratio_[X.indices]
        return X
