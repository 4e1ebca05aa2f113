"""/classify under gunicorn at concurrency 1, 8 and 32, beside raw ONNX Runtime throughput.

Usage: python benchmarks/classify_bench.py [--duration 10] [--out benchmarks/results/classify.md]
Needs `wrk` (Debian package) as the loopback load generator. Everything runs on
this machine in one go, so the figures are comparable with each other; the load
generator shares the CPU with the server, as a sidecar or reverse proxy would.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.batch.core import find_manifest  # noqa: E402
from app.models.base import Manifest  # noqa: E402
from app.models.onnx import onnx_file  # noqa: E402
from benchmarks.loadgen import multipart_body, publish, wrk  # noqa: E402
from benchmarks.serverctl import ROOT, gunicorn_server  # noqa: E402

MODEL_DIR = find_manifest(ROOT / "saved_models", "malaria_cell").directory  # the version served by default
DATA = ROOT.parent / "shared" / "data" / "malaria"


def sample_image() -> Path:
    """A real held-out cell image (median size)."""
    rows = [line.split(",") for line in (DATA / "MANIFEST.csv").read_text().splitlines()[1:]]
    rows.sort(key=lambda r: (int(r[3]), r[0]))
    return DATA / rows[len(rows) // 2][0]


def raw_runtime(threads: int, batch: int, seconds: float = 3.0) -> float:
    """Images/s of ONNX Runtime alone on preprocessed input."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    manifest = Manifest.read(MODEL_DIR / "manifest.json")
    session = ort.InferenceSession(str(onnx_file(manifest)), options, providers=["CPUExecutionProvider"])
    size = manifest.config["input_size"]
    x = np.random.default_rng(0).random((batch, size, size, 3), dtype=np.float32)
    name = session.get_inputs()[0].name
    session.run(None, {name: x})
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run(None, {name: x})
        count += batch
    return count / (time.perf_counter() - started)


def decode_cost(image: Path, seconds: float = 2.0) -> float:
    """Seconds per image for prepare_image (decode, pad, resize, scale)."""
    from app.preprocessing.image import prepare_image

    data = image.read_bytes()
    size = json.loads((MODEL_DIR / "manifest.json").read_text())["preprocessing"]["input_size"]
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        prepare_image(data, size)
        count += 1
    return (time.perf_counter() - started) / count


def run_wrk(url: str, image: Path, connections: int, duration: int) -> dict:
    """One wrk run uploading `image`; requests/s, p50, p99 (ms) and errors."""
    body, content_type = multipart_body("image", image.name, image.read_bytes())
    result = wrk(url, connections, duration, "POST", body, content_type)
    return {**result, "errors": result["non2xx"] + result["errors"]}


def main() -> None:
    """Run everything and print (and save) a markdown table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    image = sample_image()
    lines = [f"image: {image.name} ({image.stat().st_size} bytes); CPU cores: {os.cpu_count()}", ""]
    lines += ["| raw ONNX Runtime | images/s |", "| --- | --- |"]
    raw = {}
    for threads in (1, 2):
        for batch in (1, 32):
            raw[(threads, batch)] = raw_runtime(threads, batch)
            lines.append(f"| {threads} thread(s), batch {batch} | {raw[(threads, batch)]:.0f} |")
    decode = decode_cost(image)
    lines.append(f"| decode + preprocess alone (1 core) | {1 / decode:.0f} |")
    # What 2 cores could do end to end at batch 1: each image costs decode + 1-thread inference on one core.
    ceiling = os.cpu_count() / (decode + 1 / raw[(1, 1)])
    lines += ["", f"hardware ceiling for /classify (decode + batch-1 inference on every core): {ceiling:.0f} images/s", ""]
    lines += ["| server (2 workers x 4 threads) | concurrency | req/s | p50 ms | p99 ms | errors | % of ceiling |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for onnx_threads in ("1", "2"):
        with gunicorn_server({"WEB_CONCURRENCY": "2", "MODELSERVE_ONNX_THREADS": onnx_threads}) as (base, _, _):
            for connections in (1, 8, 32):
                result = run_wrk(base + "/classify", image, connections, args.duration)
                lines.append(f"| ONNX threads {onnx_threads} | {connections} | {result['rps']:.0f} | "
                             f"{result['p50_ms']:.1f} | {result['p99_ms']:.1f} | {result['errors']} | "
                             f"{100 * result['rps'] / ceiling:.0f} % |")
    publish(lines, args.out)


if __name__ == "__main__":
    main()
