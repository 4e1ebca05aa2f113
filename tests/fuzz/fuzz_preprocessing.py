"""Coverage-guided fuzz target (atheris) for the image and text preprocessing.

Run: python tests/fuzz/fuzz_preprocessing.py CORPUS_DIR -runs=20000
Any exception other than the documented ImageError is a crash; libFuzzer saves
the input, and such inputs are kept in tests/fuzz/regressions/ and replayed by
tests/test_fuzz_regressions.py.
"""
import sys

import atheris

with atheris.instrument_imports(include=["app.preprocessing", "PIL"]):
    from app.preprocessing.image import ImageError, prepare_image
    from app.preprocessing.text import VECTORIZER_SETTINGS, ReviewTokenizer, build_vectorizer

TOKENIZER = ReviewTokenizer({"the", "a", "not"})
VECTORIZER = build_vectorizer(["the"])


def check_image(data: bytes) -> None:
    """Bytes -> model input, or a clean ImageError."""
    try:
        array = prepare_image(data, 32, max_pixels=1_000_000)
    except ImageError:
        return
    assert array.shape == (32, 32, 3) and 0.0 <= float(array.min()) and float(array.max()) <= 1.0


def check_text(text: str) -> None:
    """Any string tokenizes to strings and hashes to one row."""
    tokens = TOKENIZER(text)
    assert all(isinstance(t, str) and t for t in tokens)
    assert VECTORIZER.transform([text]).shape == (1, VECTORIZER_SETTINGS["n_features"])


def test_one_input(data: bytes) -> None:
    """First byte picks the target; the rest is its input."""
    if not data:
        return
    if data[0] % 2 == 0:
        check_image(data[1:])
    else:
        check_text(data[1:].decode("utf-8", errors="replace"))


def main() -> None:
    """libFuzzer entry point."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
