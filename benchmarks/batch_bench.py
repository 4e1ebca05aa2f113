"""Scoring whole datasets: `flask score`, Spark local[2], Beam, Flink and HTTP, items/s side by side in one run.

Usage: python benchmarks/batch_bench.py [--limit N] [--http-seconds 20] [--out benchmarks/results/batch.md]

Datasets: every cell of ../shared/data/malaria and malaria_extra (one folder tree), and the
25,000 IMDb test reviews. For each: the raw model (model.run on in-memory items, batches of 64:
what the command can at best reach), the local command (read files, score, write Parquet),
the Spark job (local[2], batches of 64, one ONNX thread per task), the Beam command
(DirectRunner, the model's own batches of up to 32), the Flink job (`--once` over a JSON Lines
file of the same items, one record at a time, in .venv-flink; the time of the same job over an
empty file, i.e. the JVM and mini-cluster start, is measured apart and subtracted) and the HTTP
endpoint (/classify or /review, wrk c=8, one fixed real item).
"""
from __future__ import annotations

import argparse
import base64
import csv
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.batch.core import load_model  # noqa: E402
from app.batch.files import image_files  # noqa: E402
from app.batch.local import score_dataset  # noqa: E402
from app.config import PROJECT_ROOT  # noqa: E402
from app.models.runner import Runner, items_of  # noqa: E402
from benchmarks.loadgen import multipart_body, publish, wrk  # noqa: E402
from benchmarks.serverctl import gunicorn_server  # noqa: E402

DATA = PROJECT_ROOT.parent / "shared" / "data"
MODELS = PROJECT_ROOT / "saved_models"


def cells_folder(work: Path, limit: int | None) -> Path:
    """Both cell folders under one tree of links (a patient's cells stay together; names do not clash)."""
    root = work / "cells"
    files = [p for source in ("malaria", "malaria_extra") for p in image_files(DATA / source)]
    for path in files[:limit]:
        link = root / path.relative_to(DATA)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path)
    return root


def reviews_table(work: Path, limit: int | None) -> Path:
    """The IMDb test reviews as a CSV with an id column."""
    path = work / "reviews.csv"
    with gzip.open(DATA / "imdb" / "test.csv.gz", "rt", encoding="utf-8") as source, \
            open(path, "w", encoding="utf-8", newline="") as target:
        writer = csv.writer(target)
        writer.writerow(["id", "text"])
        for number, row in enumerate(csv.DictReader(source)):
            if limit is not None and number >= limit:
                break
            writer.writerow([number, row["text"]])
    return path


def raw_rate(name: str, items: list) -> float:
    """Items/s of the model's runner over in-memory items in batches of 64 (every core)."""
    model = load_model(MODELS, name, batch_size=64, onnx_threads=os.cpu_count() or 1)
    serve = Runner(model).serve
    started = time.perf_counter()
    for start in range(0, len(items), 64):
        serve(items_of(model, items[start:start + 64]))
    return len(items) / (time.perf_counter() - started)


def local_rate(name: str, source: Path, output: Path, **options) -> float:
    """Items/s of the local command's code path (the same function `flask score` calls)."""
    model = load_model(MODELS, name, batch_size=64, onnx_threads=os.cpu_count() or 1)
    summary = score_dataset(model, source, output, batch_size=64, progress=False, **options)
    return summary.scored / summary.seconds


def spark_rate(name: str, source: Path, output: Path, count: int, *extra: str) -> float:
    """Items/s of the Spark job, local[2], session start included."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "app.batch.spark_score", "--master", "local[2]", "--model", name,
                    "--input", str(source), "--output", str(output), *extra], check=True, cwd=PROJECT_ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return count / (time.perf_counter() - started)


def beam_rate(name: str, source: Path, output: Path, count: int, *extra: str) -> float:
    """Items/s of the Beam command on the DirectRunner, start included (no JVM: a Python process)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "app.batch.beam_score", name, str(source), str(output), *extra], check=True,
                   cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return count / (time.perf_counter() - started)


def flink_seconds(name: str, records: Path, output: Path) -> float:
    """Seconds of the Flink job in --once mode over the JSON Lines files of ``records``, start included."""
    started = time.perf_counter()
    subprocess.run([str(PROJECT_ROOT / ".venv-flink" / "bin" / "python"), "-m", "app.batch.flink_score", name,
                    "--watch", str(records), "--output", str(output), "--once"], check=True, cwd=PROJECT_ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def flink_rates(name: str, records: list[dict], work: Path) -> tuple[float, float]:
    """(seconds to start and stop the job over an empty file, items/s once started)."""
    empty, full = work / f"{name}-empty", work / f"{name}-records"
    empty.mkdir()
    (empty / "none.jsonl").write_text("")
    full.mkdir()
    with open(full / "records.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)
    start = flink_seconds(name, empty, work / f"{name}-empty-out")
    total = flink_seconds(name, full, work / f"{name}-flink-out")
    return start, len(records) / max(total - start, 1e-9)


def http_rates(image: bytes, review: str, seconds: float) -> tuple[float, float]:
    """Successful items/s of /classify and /review under wrk c=8 against `make serve`'s gunicorn."""
    upload, upload_type = multipart_body("image", "cell.png", image)
    form = ("review=" + review.replace(" ", "+")).encode()
    with gunicorn_server() as (base, _, _):
        cnn = wrk(base + "/classify", 8, seconds, "POST", upload, upload_type)
        text = wrk(base + "/review", 8, seconds, "POST", form, "application/x-www-form-urlencoded")
    return cnn["ok_rps"], text["ok_rps"]


def main() -> None:
    """Measure and publish the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=None, help="items per dataset (default: all)")
    parser.add_argument("--http-seconds", type=float, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        cells, reviews = cells_folder(work, args.limit), reviews_table(work, args.limit)
        files = image_files(cells)
        with open(reviews, encoding="utf-8") as handle:
            texts = [row["text"] for row in csv.DictReader(handle)]
        image_records = [{"key": str(p), "image": base64.b64encode(p.read_bytes()).decode()} for p in files]
        text_records = [{"key": str(i), "text": text} for i, text in enumerate(texts)]
        rows = {
            "malaria_cell": (len(files), raw_rate("malaria_cell", [p.read_bytes() for p in files]),
                             local_rate("malaria_cell", cells, work / "cells.parquet"),
                             spark_rate("malaria_cell", cells, work / "cells-spark", len(files)),
                             beam_rate("malaria_cell", cells, work / "cells-beam.parquet", len(files)),
                             *flink_rates("malaria_cell", image_records, work)),
            "review_sentiment": (len(texts), raw_rate("review_sentiment", texts),
                                 local_rate("review_sentiment", reviews, work / "reviews.parquet", key="id",
                                            columns=["text"]),
                                 spark_rate("review_sentiment", reviews, work / "reviews-spark", len(texts),
                                            "--key", "id", "--column", "text"),
                                 beam_rate("review_sentiment", reviews, work / "reviews-beam.parquet", len(texts),
                                           "--key", "id", "--column", "text"),
                                 *flink_rates("review_sentiment", text_records, work)),
        }
        http = http_rates(files[len(files) // 2].read_bytes(), texts[0], args.http_seconds)
    lines = [f"One run on this machine ({os.cpu_count()} cores); items/s, higher is better.", "",
             "| model | items | raw model.run, batches of 64 | `flask score` | local / raw | Spark local[2] "
             "(start included) | Beam DirectRunner (start included) | Flink job (after its start) | Flink start "
             "and stop, s | HTTP c=8 (one item per request) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (name, (count, raw, ours, spark, beam, flink_start, flink)), served in zip(rows.items(), http):
        lines.append(f"| {name} | {count} | {raw:.0f} | {ours:.0f} | {ours / raw:.0%} | {spark:.0f} | {beam:.0f} "
                     f"| {flink:.0f} | {flink_start:.1f} | {served:.0f} |")
    lines += ["", "Command: `python benchmarks/batch_bench.py --out benchmarks/results/batch.md`"]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
