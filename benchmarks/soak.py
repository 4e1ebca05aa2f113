"""Soak test: /review at about 80 % of its measured peak for N minutes; errors, p99 and RSS growth per worker.

Usage: python benchmarks/soak.py [--minutes 10] [--out benchmarks/results/soak.md]
Worker recycling (max_requests) is switched off for the run so that any growth
in resident memory shows instead of being reset by a restart.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.serverctl import ROOT, gunicorn_server  # noqa: E402

SCRIPT = ROOT / "benchmarks" / "review.lua"


def wrk(url: str, connections: int, seconds: int, delay_ms: int = 0) -> dict:
    """One wrk run; requests/s, p50/p99 ms, errors."""
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(SCRIPT), url],
                         env={**os.environ, "BENCH_DELAY_MS": str(delay_ms)}, capture_output=True, text=True,
                         check=True).stdout
    f = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", out.split("RESULT", 1)[1])}
    return {"rps": f["requests"] / (f["duration_us"] / 1e6), "p50_ms": f["p50_us"] / 1000,
            "p99_ms": f["p99_us"] / 1000, "requests": f["requests"], "errors": f["non2xx"] + f["errors"]}


def rss_mib(pid: int) -> float:
    """Resident memory of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def workers(master: int) -> list[int]:
    """gunicorn worker pids."""
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def main() -> None:
    """Peak, then the paced soak with RSS samples."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    env = {"WEB_CONCURRENCY": "2", "GUNICORN_MAX_REQUESTS": "0", "MODELSERVE_MODELS": "review_sentiment"}
    with gunicorn_server(env) as (base, master, _):
        url = base + "/review"
        peak = wrk(url, 8, 15)
        # Pace 8 connections so that they ask for ~80 % of the peak rate.
        per_connection_ms = 8 * 1000 / (0.8 * peak["rps"])
        delay = max(1, int(per_connection_ms - peak["p50_ms"]))
        pids = workers(master)
        samples: list[tuple[float, list[float]]] = []
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                samples.append((time.monotonic(), [rss_mib(p) for p in pids]))
                stop.wait(10)

        sampler = threading.Thread(target=sample)
        sampler.start()
        soak = wrk(url, 8, int(args.minutes * 60), delay)
        stop.set()
        sampler.join()
        alive = workers(master) == pids
    warm = samples[min(3, len(samples) - 1)][1]  # after 30 s of load: caches and arenas are warm
    last = samples[-1][1]
    growth = [100 * (b - a) / a for a, b in zip(warm, last)]
    lines = [
        f"/review, gunicorn 2 workers x 4 threads, worker recycling off, {args.minutes:g} min",
        "",
        "| phase | req/s | p50 ms | p99 ms | requests | errors |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| peak (wrk c=8, 15 s) | {peak['rps']:.0f} | {peak['p50_ms']:.1f} | {peak['p99_ms']:.1f} | {peak['requests']} | {peak['errors']} |",
        f"| soak (paced to ~80 % of peak) | {soak['rps']:.0f} | {soak['p50_ms']:.1f} | {soak['p99_ms']:.1f} | {soak['requests']} | {soak['errors']} |",
        "",
        f"soak rate = {100 * soak['rps'] / peak['rps']:.0f} % of peak; error rate {100 * soak['errors'] / max(1, soak['requests']):.3f} %; "
        f"workers kept their pids: {alive}",
        "",
        "| worker | RSS after 30 s (MiB) | RSS at end (MiB) | growth |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {pid} | {a:.1f} | {b:.1f} | {g:+.2f} % |" for pid, a, b, g in zip(pids, warm, last, growth)]
    report = "\n".join(lines)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")


if __name__ == "__main__":
    main()
