"""Text preprocessing shared by training, serving and tests (no Flask imports).

The classic movie-review recipe: strip HTML, keep emoticons, lowercase,
tokenize on non-word characters, drop stopwords, hash the tokens (or the
word n-grams).
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

# Settings of the HashingVectorizer that `flask train review` and `flask train trio` use.
# Every text model records its own in its manifest (preprocessing.vectorizer) and is
# served with those, so models trained with older settings keep working.
# "stopwords": "all" drops stopwords before n-grams are formed; "unigrams" drops them
# as single-word features only, so n-grams such as "not good" or "waste of time" stay whole.
VECTORIZER_SETTINGS: dict = {
    "n_features": 2**24,
    "ngram_range": [1, 3],
    "stopwords": "unigrams",
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


class ReviewAnalyzer:
    """Callable analyzer: normalize_text(), then unigrams without stopwords and n-grams of every word."""

    def __init__(self, stopwords: Iterable[str], ngram_range: tuple[int, int]):
        """Store the stopword set and the n-gram range (no other work)."""
        self.stopwords = frozenset(stopwords)
        self.min_n, self.max_n = ngram_range

    def __call__(self, text: str) -> list[str]:
        """Unigram features (stopwords dropped) and min_n..max_n-grams over all words."""
        words = normalize_text(text).split()
        stop = self.stopwords
        features = [w for w in words if w not in stop] if self.min_n == 1 else []
        grams = words
        for n in range(2, self.max_n + 1):  # each n-gram is an (n-1)-gram and the word after it
            grams = [gram + " " + word for gram, word in zip(grams, words[n - 1:])]
            if n >= self.min_n:
                features += grams
        return features


def build_vectorizer(stopwords: Iterable[str], settings: dict | None = None) -> HashingVectorizer:
    """The HashingVectorizer of a text model, training and serving alike, from its recorded settings."""
    params = dict(VECTORIZER_SETTINGS if settings is None else settings)
    params["ngram_range"] = tuple(params["ngram_range"])
    scope = params.pop("stopwords", "all")
    if scope == "unigrams":
        words = {"analyzer": ReviewAnalyzer(stopwords, params.pop("ngram_range"))}
    elif scope == "all":
        words = {"tokenizer": ReviewTokenizer(stopwords), "preprocessor": None, "lowercase": False, "token_pattern": None}
    else:
        raise ValueError(f"vectorizer setting stopwords must be 'all' or 'unigrams', not {scope!r}")
    return HashingVectorizer(dtype=np.float32, **words, **params)


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


class SeenFeatures(TransformerMixin, BaseEstimator):
    """Keep the hashed features present in at least ``min_df`` training documents, numbered 0..k-1.

    A hashed vocabulary is mostly empty or noise: of 2^24 word 1-3-gram buckets, the
    25,000 IMDb training reviews fill 4.4 M and only 1.3 M hold an n-gram seen in two
    reviews or more. A feature never seen in training can only get a zero weight, one
    seen once is mostly noise; dropping them before the later steps shrinks every fitted
    vector after this one (weights, ratios, idf) to the kept features.

    Fitted state is a bitmap of the kept features (one bit per hashed feature, 2 MiB for
    2^24) with the number of kept features before each 64-bit word, so a feature's new
    number is a rank query: two array lookups and a popcount, in memory that stays in
    cache (a binary search of the kept indices cost three times as much per review).
    """

    def __init__(self, min_df: int = 1):
        """Store the document-count floor; no work here."""
        self.min_df = min_df

    def fit(self, X, y=None):
        """Count the documents each feature occurs in (stored entries of a CSR column)."""
        X = sp.csr_matrix(X)
        kept = np.bincount(X.indices, minlength=X.shape[1]) >= self.min_df
        padded = np.zeros(-(-X.shape[1] // 64) * 64, dtype=bool)
        padded[:X.shape[1]] = kept
        self.bits_ = np.packbits(padded, bitorder="little").view("<u8")
        kept_up_to = np.cumsum(np.bitwise_count(self.bits_))
        self.rank_ = np.concatenate(([0], kept_up_to[:-1])).astype(np.int32)
        self.n_kept_ = int(kept_up_to[-1]) if len(kept_up_to) else 0
        self.n_features_in_ = X.shape[1]
        return self

    @property
    def columns_(self) -> np.ndarray:
        """The kept hashed feature indices, ascending."""
        bits = np.unpackbits(self.bits_.view(np.uint8), bitorder="little")[:self.n_features_in_]
        return np.flatnonzero(bits).astype(np.int32)

    def select(self, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The kept entries of a CSR matrix's arrays, renumbered by rank in the bitmap; O(non-zeros)."""
        word_index = indices >> 6
        words = self.bits_[word_index]
        bit = np.left_shift(np.uint64(1), (indices & 63).astype(np.uint64))
        found = (words & bit) != 0
        # The new number: kept features in the words before, plus those below the bit in its word.
        position = (self.rank_[word_index] + np.bitwise_count(words & (bit - np.uint64(1))))[found]
        kept_so_far = np.zeros(len(found) + 1, dtype=np.int32)
        np.cumsum(found, out=kept_so_far[1:])
        return data[found], position.astype(np.int32, copy=False), kept_so_far[indptr]

    def transform(self, X):
        """The kept columns of X, renumbered."""
        X = X.tocsr() if sp.issparse(X) else sp.csr_matrix(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"expected {self.n_features_in_} hashed features, got {X.shape[1]}")
        return sp.csr_matrix(self.select(X.data, X.indices, X.indptr), shape=(X.shape[0], self.n_kept_))


class LogCountRatioScaler(TransformerMixin, BaseEstimator):
    """Scale each hashed feature by its naive-Bayes log-count ratio (Wang & Manning 2012, NBSVM).

    ``r = log((p / |p|_1) / (q / |q|_1))`` with p, q the smoothed per-class
    feature counts. Words that separate the classes get large weights before
    the linear model sees them; fitted state is ``ratio_``. Rare features are
    dropped before this step (SeenFeatures).
    """

    def __init__(self, smoothing: float = 1.0):
        """Store the additive smoothing; no work here."""
        self.smoothing = smoothing

    def fit(self, X, y):
        """Compute the log-count ratio from binary features X and 0/1 labels y."""
        y = np.asarray(y)
        positive = np.asarray(X[y == 1].sum(axis=0)).ravel()
        negative = np.asarray(X[y == 0].sum(axis=0)).ravel()
        p, q = positive + self.smoothing, negative + self.smoothing
        self.ratio_ = np.log((p / p.sum()) / (q / q.sum())).astype(np.float32)
        return self

    def scale(self, data: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """A CSR matrix's stored values, each multiplied by its column's ratio (a new float32 array)."""
        return data.astype(np.float32) * self.ratio_[indices]

    def transform(self, X):
        """Multiply column j of X by ratio_[j] (on the stored values only: O(non-zeros))."""
        # astype copies; building through sp.csr_matrix(...) re-validates the structure and
        # cost a quarter of a one-review prediction.
        X = sp.csr_matrix(X) if not sp.issparse(X) else X.tocsr()
        X = X.astype(np.float32, copy=True)
        X.data = self.scale(X.data, X.indices)
        return X
