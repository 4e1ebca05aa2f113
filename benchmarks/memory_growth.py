"""How much a worker's memory grows while it serves, and with how many threads serving at once.

Usage: python benchmarks/memory_growth.py [--requests 3200] [--out benchmarks/results/memory_growth.md]

Each configuration runs in a fresh process that builds the app and loads the models as a
gunicorn worker does (main.py), warms up, then sends the same number of requests through
the app from T threads at once (Flask's test client, no HTTP server) and reports what grew:
the process's anonymous resident memory (less tracemalloc's own tables), what Python's
tracemalloc traced and still held (Python objects and NumPy arrays, after a collection), and the resident memory of glibc's main heap and of the other anonymous
mappings (glibc's per-thread arenas among them). It answers why `make compare` finds ours'
workers larger after a run than bare Flask's, whose workers run 4 threads to our 40.
"""
from __future__ import annotations

import argparse
import gc
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.classify_bench import sample_image  # noqa: E402
from benchmarks.loadgen import publish  # noqa: E402

REVIEW = "A thoughtful, well acted film with a script that never talks down to its audience. Loved it!"
# (label, endpoint, threads, extra environment)
CONFIGURATIONS = [
    ("CNN, 4 threads", "cnn", 4, {}),
    ("CNN, 32 threads", "cnn", 32, {}),
    ("CNN, 32 threads, MALLOC_ARENA_MAX=2", "cnn", 32, {"MALLOC_ARENA_MAX": "2"}),
    ("text, 32 threads", "text", 32, {}),
]


def resident_kib() -> dict[str, int]:
    """Resident KiB of this process: anonymous in all, glibc's main heap, other anonymous mappings."""
    totals = {"heap": 0, "other anonymous": 0}
    name = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        header = re.match(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$", line)
        if header:
            name = header.group(1).strip()
        elif line.startswith("Rss:"):
            key = "heap" if name == "[heap]" else "other anonymous" if not name else None
            if key:
                totals[key] += int(line.split()[1])
    status = Path("/proc/self/status").read_text()
    totals["anonymous"] = int(re.search(r"RssAnon:\s+(\d+)", status).group(1))
    return totals


def measure(endpoint: str, threads: int, requests: int) -> dict:
    """In this process: build the app as a worker does, serve `requests` from `threads` threads, report growth."""
    from app import create_app

    app = create_app()
    app.extensions["model_registry"].load_all()
    image = sample_image().read_bytes()

    def send(client, count: int) -> None:
        for _ in range(count):
            if endpoint == "cnn":
                response = client.post("/classify", data={"image": (io.BytesIO(image), "cell.png")})
            else:
                response = client.post("/review", data={"review": REVIEW})
            assert response.status_code == 200, response.get_data(as_text=True)

    def serve(count: int, width: int) -> None:
        with ThreadPoolExecutor(width) as pool:  # .result() raises a thread's failed request here
            for sent in [pool.submit(send, app.test_client(), count // width) for _ in range(width)]:
                sent.result()

    serve(8 * threads, threads)  # warm-up: every thread has served, every lazy structure exists
    gc.collect()
    tracemalloc.start()
    before, began = resident_kib(), time.perf_counter()
    serve(requests, threads)
    seconds = time.perf_counter() - began
    gc.collect()
    after, traced, own = resident_kib(), tracemalloc.get_traced_memory()[0], tracemalloc.get_tracemalloc_memory()
    growth = {key: (after[key] - before[key]) / 1024 for key in after}
    growth["anonymous"] -= own / 2**20  # tracemalloc's own tables are not the worker's
    return {"seconds": seconds, "traced": traced / 2**20, **growth}


def run_configuration(endpoint: str, threads: int, requests: int, env: dict) -> dict:
    """One configuration in a fresh interpreter (glibc reads MALLOC_* only at start)."""
    with tempfile.TemporaryDirectory() as metrics:
        out = subprocess.run([sys.executable, __file__, "--one", json.dumps([endpoint, threads, requests])],
                             env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics, "MODELSERVE_LOG_LEVEL": "WARNING",
                                  **env},
                             capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Every configuration, one after another; a Markdown table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3200)
    parser.add_argument("--out", default=None)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*json.loads(args.one))))
        return
    lines = [f"# Memory growth of one worker while it serves (benchmarks/memory_growth.py, {args.requests} requests "
             "after a warm-up, in process)", "",
             "| configuration | anonymous resident MiB | main heap MiB | other anonymous MiB | traced by tracemalloc MiB "
             "| seconds |", "| --- | --- | --- | --- | --- | --- |"]
    for label, endpoint, threads, env in CONFIGURATIONS:
        row = run_configuration(endpoint, threads, args.requests, env)
        lines.append(f"| {label} | +{row['anonymous']:.1f} | +{row['heap']:.1f} | +{row['other anonymous']:.1f} "
                     f"| +{row['traced']:.2f} | {row['seconds']:.0f} |")
        print(lines[-1], flush=True)
    publish(["\n".join(lines)], args.out)


if __name__ == "__main__":
    main()
