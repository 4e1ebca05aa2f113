"""Text preprocessing units: normalisation, tokenizer, stopword pickle, NB scaling."""
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from app.preprocessing.text import (
    VECTORIZER_SETTINGS, LogCountRatioScaler, ReviewAnalyzer, ReviewTokenizer, SeenFeatures, build_vectorizer, load_stopwords,
    normalize_text, save_stopwords,
)


def test_normalize_strips_html_lowercases_and_keeps_emoticons():
    text = "This <br /><b>GREAT</b> film :-) ends well ;) but :( once"
    normalized = normalize_text(text)
    assert "<" not in normalized and "great" in normalized and "GREAT" not in normalized
    assert normalized.split()[-3:] == [":)", ";)", ":("]


def test_tokenizer_drops_stopwords_and_punctuation():
    tokens = ReviewTokenizer({"the", "is", "a"})("The plot is a mess!!! Really.")
    assert tokens == ["plot", "mess", "really"]


def test_vectorizer_is_deterministic_and_uses_trigrams():
    vec = build_vectorizer(["the"])
    a = vec.transform(["great acting"])
    b = vec.transform(["great acting"])
    assert (a != b).nnz == 0
    assert a.nnz == 3  # "great", "acting", "great acting"
    assert a.shape[1] == VECTORIZER_SETTINGS["n_features"] == 2**24
    assert vec.transform(["not the best"]).nnz == 2 + 2 + 1  # "not", "best"; two bigrams; one trigram


def test_stopwords_leave_unigrams_but_stay_inside_ngrams():
    features = ReviewAnalyzer({"the", "of", "not"}, (1, 3))("Not the best: a waste of time")
    assert "not" not in features and "the" not in features and "best" in features
    assert "waste of time" in features and "not the best" in features and "not the" in features
    assert ReviewAnalyzer({"the"}, (2, 2))("the cat sat") == ["the cat", "cat sat"]


def test_models_keep_the_vectorizer_settings_they_were_trained_with():
    old = {"n_features": 2**21, "ngram_range": [1, 2], "alternate_sign": False, "norm": None, "binary": True}
    vec = build_vectorizer(["the"], old)  # no "stopwords" key: dropped before n-grams, as version 1 did
    assert vec.transform(["the plot"]).shape[1] == 2**21
    assert vec.transform(["great the plot"]).nnz == 3  # "great", "plot", "great plot": "the" gone first
    with pytest.raises(ValueError, match="stopwords"):
        build_vectorizer(["the"], {**old, "stopwords": "sometimes"})


def test_stopword_pickle_round_trip(tmp_path, shared_data):
    text = (shared_data / "stopwords" / "english.txt").read_text(encoding="utf-8")
    words = [w.strip() for w in text.splitlines() if w.strip()]  # NLTK's one word a line
    assert len(words) == 179 and "not" in words
    save_stopwords(words, tmp_path / "stop.pkl")
    assert load_stopwords(tmp_path / "stop.pkl") == sorted(set(words))


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_stopword_loader_refuses_pickles_that_run_code(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_stopwords(path)


def test_stopword_loader_refuses_non_list(tmp_path):
    path = tmp_path / "dict.pkl"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError):
        load_stopwords(path)


def test_log_count_ratio_weights_separating_features():
    X = sp.csr_matrix(np.array([[1, 0, 1], [1, 0, 1], [0, 1, 1], [0, 1, 1]], dtype=np.float32))
    y = np.array([1, 1, 0, 0])
    scaler = LogCountRatioScaler().fit(X, y)
    assert scaler.ratio_[0] > 0 > scaler.ratio_[1]
    assert abs(scaler.ratio_[2]) < 1e-6  # appears equally in both classes
    out = scaler.transform(X)
    assert np.allclose(out.toarray()[:, 0], X.toarray()[:, 0] * scaler.ratio_[0])


def test_seen_features_keeps_columns_in_enough_documents_renumbered():
    X = sp.csr_matrix(np.array([[1, 1, 0, 0, 1], [1, 0, 0, 0, 1], [0, 0, 1, 0, 1], [0, 0, 0, 0, 0]], dtype=np.float32))
    seen = SeenFeatures(min_df=2).fit(X)
    assert seen.columns_.tolist() == [0, 4]  # columns 1 and 2 are in one document each, 3 in none
    new = sp.csr_matrix(np.array([[0, 1, 1, 1, 0], [1, 0, 1, 0, 3], [0, 0, 0, 0, 0]], dtype=np.float32))
    out = seen.transform(new)
    assert out.shape == (3, 2)
    assert np.array_equal(out.toarray(), new.toarray()[:, [0, 4]])
    assert SeenFeatures(min_df=1).fit(X).columns_.tolist() == [0, 1, 2, 4]


def test_seen_features_matches_column_selection_on_hashed_text():
    vectorizer = build_vectorizer(["the"], {**VECTORIZER_SETTINGS, "n_features": 2**10})
    train = vectorizer.transform(["a good film", "a bad film", "good acting, bad plot", "the end"])
    seen = SeenFeatures(min_df=2).fit(train)
    test = vectorizer.transform(["a good plot", "nothing seen before", "bad bad film"])
    assert np.array_equal(seen.transform(test).toarray(), test.toarray()[:, seen.columns_])


def test_seen_features_matches_column_selection_at_word_edges():
    rng = np.random.default_rng(0)
    n = 1000  # not a multiple of 64: the bitmap's last word is partly padding
    train = sp.random(300, n, density=0.004, format="lil", random_state=rng, dtype=np.float32)
    train[:2, [0, 63, 64, 127, 999]] = 1.0  # first and last bits of words, and the last feature
    seen = SeenFeatures(min_df=2).fit(train.tocsr())
    assert {0, 63, 64, 127, 999} <= set(seen.columns_.tolist())
    test = sp.random(50, n, density=0.02, format="csr", random_state=rng, dtype=np.float32)
    assert seen.transform(test).shape == (50, len(seen.columns_))
    assert np.array_equal(seen.transform(test).toarray(), test.toarray()[:, seen.columns_])


def test_seen_features_refuses_another_feature_count():
    seen = SeenFeatures().fit(sp.csr_matrix(np.ones((2, 4), dtype=np.float32)))
    with pytest.raises(ValueError, match="expected 4 hashed features"):
        seen.transform(sp.csr_matrix(np.ones((1, 5), dtype=np.float32)))


def test_strip_tags_matches_the_regex_and_is_linear():
    import random
    import re
    import time

    from app.preprocessing.text import strip_tags

    pattern = re.compile(r"<[^>]*>")
    rng = random.Random(0)
    for _ in range(2000):
        text = "".join(rng.choice("ab<> \n") for _ in range(rng.randrange(40)))
        assert strip_tags(text) == pattern.sub(" ", text), text
    hostile = "<" * 50_000
    started = time.perf_counter()
    assert strip_tags(hostile) == hostile
    linear = time.perf_counter() - started
    started = time.perf_counter()
    pattern.sub(" ", "<" * 5_000)  # a tenth of the length already costs the regex far more
    assert linear < time.perf_counter() - started
