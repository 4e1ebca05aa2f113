"""Prediction cost of text-model versions side by side: reviews/s one at a time and in batches of 64.

Usage: python benchmarks/text_models.py MODEL_DIR:NAME:VERSION[+sklearn] ... [--reviews 2000] [--rounds 3]
                                       [--out benchmarks/results/text_models.md]

Each model is loaded through the serving interface (hashes checked, fast linear path on where it
applies) and scores the same IMDb test reviews through `model.run`, the path /review takes. Rounds
alternate between the models and the table gives medians, so a machine whose speed drifts affects
every model alike; the last column is the ratio to the first model. A spec ending in `+sklearn`
loads the model with scikit-learn's own prediction path instead of the fast one, for comparison.
A version no longer in saved_models/ can be checked out of the history into a folder, e.g.
`git archive REV saved_models/review_sentiment/1 | tar -x -C /tmp/old`.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.batch.core import load_model  # noqa: E402
from app.models.runner import Runner  # noqa: E402
from app.config import PROJECT_ROOT  # noqa: E402
from benchmarks.loadgen import publish  # noqa: E402

DATA = PROJECT_ROOT.parent / "shared" / "data"


def test_reviews(count: int) -> list[str]:
    """The first ``count`` reviews of the IMDb test split."""
    with gzip.open(DATA / "imdb" / "test.csv.gz", "rt", encoding="utf-8") as fh:
        return [row["text"] for _, row in zip(range(count), csv.DictReader(fh))]


def rate(model, reviews: list[str], batch: int) -> float:
    """Reviews/s of the model's runner over the reviews, ``batch`` at a time."""
    serve = Runner(model).serve
    started = time.perf_counter()
    for start in range(0, len(reviews), batch):
        serve({"review": reviews[start:start + batch]})
    return len(reviews) / (time.perf_counter() - started)


def load(spec: str):
    """A model by MODEL_DIR:NAME:VERSION, on scikit-learn's own path when the spec ends in +sklearn."""
    where, _, variant = spec.partition("+")
    if variant not in ("", "sklearn"):
        raise SystemExit(f"unknown variant {variant!r} in {spec!r} (only +sklearn)")
    model = load_model(*where.rsplit(":", 2), batch_size=64)
    if variant:
        model._fast = None
    return model


def main() -> None:
    """Measure every model in alternating rounds and publish the medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+", help="MODEL_DIR:NAME:VERSION, +sklearn for scikit-learn's own path")
    parser.add_argument("--reviews", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    reviews = test_reviews(args.reviews)
    models = {spec: load(spec) for spec in args.models}
    rates: dict[tuple[str, int], list[float]] = {(spec, b): [] for spec in models for b in (1, 64)}
    for _ in range(args.rounds):
        for spec, model in models.items():
            for batch in (1, 64):
                rates[spec, batch].append(rate(model, reviews, batch))
    first = args.models[0]
    rows = ["| model | IMDb test accuracy | reviews/s, one at a time | reviews/s, batches of 64 | one at a time vs first |",
            "| --- | --- | --- | --- | --- |"]
    for spec, model in models.items():
        one, many = (statistics.median(rates[spec, b]) for b in (1, 64))
        ratio = one / statistics.median(rates[first, 1])
        path = " (scikit-learn's path)" if spec.endswith("+sklearn") else ""
        rows.append(f"| {model.name} v{model.version}{path} | {model.manifest.metrics.get('accuracy')} | {one:,.0f} | "
                    f"{many:,.0f} | {ratio:.2f}x |")
    publish([f"# Text models: prediction cost ({args.reviews} IMDb test reviews, medians of {args.rounds} "
             "alternating rounds, one process)", "", *rows], args.out)


if __name__ == "__main__":
    main()
