"""Backpressure: /classify under rising concurrency, with and without the admission gate.

Every gate configuration has the default 1 s deadline and 40 gunicorn threads per worker.

Usage: python benchmarks/backpressure.py [--seconds 10] [--out benchmarks/results/backpressure.md]
Each configuration is one gunicorn (2 workers); wrk drives the same upload at
each concurrency. "served/s" counts 2xx answers only; "shed" is the share of
503 + Retry-After answers. Latency percentiles are over every answer (a shed
answer is fast, so with shedding p99 slightly understates the served p99).
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.classify_bench import sample_image  # noqa: E402
from benchmarks.loadgen import multipart_body, publish, wrk  # noqa: E402
from benchmarks.serverctl import gunicorn_server  # noqa: E402

UNBOUNDED = {"MODELSERVE_MAX_QUEUED": "1000", "MODELSERVE_REQUEST_DEADLINE_SECONDS": "600"}
# (name, server environment, client modes)
CONFIGS = [
    ("no gate: 4 threads, gunicorn queues the rest", {"GUNICORN_THREADS": "4", "MODELSERVE_MAX_INFLIGHT": "4",
                                                      **UNBOUNDED}, (False,)),
    ("no gate: 40 threads, all admitted", {"GUNICORN_THREADS": "40", "MODELSERVE_MAX_INFLIGHT": "40", **UNBOUNDED},
     (False,)),
    ("gate: 1 running + 32 queued, refusals at once", {"MODELSERVE_SHED_DELAY_SECONDS": "0"}, (False, True)),
    ("gate: 1 running + 32 queued, refusals after 0.25 s (default)", {}, (False, True)),
    ("gate: 2 running + 32 queued, refusals after 0.25 s", {"MODELSERVE_MAX_INFLIGHT": "2"}, (False, True)),
]
CONCURRENCY = tuple(int(c) for c in os.environ.get("BENCH_CONCURRENCY", "8,32,128").split(","))


def main() -> None:
    """Every configuration at every concurrency; print and save a markdown table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    image = sample_image()
    body, content_type = multipart_body("image", image.name, image.read_bytes())
    lines = [f"POST /classify ({image.stat().st_size} bytes PNG), gunicorn 2 workers, wrk {args.seconds} s per row", "",
             "| configuration (per worker) | concurrency | client after a 503 | served/s | shed | p50 ms | p90 ms | p99 ms | other errors |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    only = os.environ.get("BENCH_CONFIGS")
    for name, env, client_modes in [c for c in CONFIGS if not only or c[0].startswith(only.split("|")[0]) or c[0] in only.split("|")]:
        with gunicorn_server({"WEB_CONCURRENCY": "2", **env}) as (base, _, _):
            for connections, honor in itertools.product(CONCURRENCY, client_modes):
                r = wrk(base + "/classify", connections, args.seconds, "POST", body, content_type,
                        honor_retry_after=honor)
                shed = 100 * r["shed"] / max(1, r["requests"])
                client = "waits Retry-After" if honor else "retries at once"
                lines.append(f"| {name} | {connections} | {client} | {r['ok_rps']:.0f} | {shed:.1f} % | {r['p50_ms']:.1f} | "
                             f"{r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {r['non2xx'] - r['shed'] + r['errors']} |")
                print(lines[-1], flush=True)
    publish(lines, args.out)


if __name__ == "__main__":
    main()
