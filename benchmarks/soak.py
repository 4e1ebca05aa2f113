"""Soak test: /review at about 80 % of its measured peak for N minutes; errors, p99 and RSS growth per worker.

Usage: python benchmarks/soak.py [--minutes 10] [--out benchmarks/results/soak.md]
The load is 32 connections, each pausing between requests; the pause is
calibrated by 10 s runs so that the rate is at least 80 % of the measured peak.
Worker recycling (max_requests) is switched off for the run so that any growth
in resident memory shows instead of being reset by a restart.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.loadgen import publish, wrk  # noqa: E402
from benchmarks.serverctl import gunicorn_server  # noqa: E402

REVIEW_BODY = b"review=A+thoughtful,+well+acted+film+with+a+script+that+never+talks+down+to+its+audience.+Loved+it!"


def review_load(url: str, connections: int, seconds: int, delay_ms: int = 0) -> dict:
    """One wrk run posting a review form; requests/s, p50/p99 ms, errors (any non-2xx included)."""
    result = wrk(url, connections, seconds, "POST", REVIEW_BODY, "application/x-www-form-urlencoded", delay_ms)
    return {**result, "errors": result["non2xx"] + result["errors"]}


TARGET_SHARE = 0.8
# Many connections, each pausing between requests: wrk's pause is whole milliseconds, so a
# long pause per connection (tens of ms) sets the total rate to within a few percent.
PACED_CONNECTIONS = 32


def calibrate_pacing(url: str, target_rps: float, rounds: int = 5) -> tuple[int, list[str]]:
    """The per-connection pause (ms) whose measured rate is nearest above target_rps, found by short runs."""
    delay = max(1, round(PACED_CONNECTIONS * 1000 / target_rps))
    tried: dict[int, float] = {}
    for _ in range(rounds):
        if delay in tried:
            break
        tried[delay] = review_load(url, PACED_CONNECTIONS, 10, delay)["rps"]
        # The rate per connection is about 1 / (pause + service time): correct the pause by the ratio.
        delay = max(1, round(delay * tried[delay] / target_rps))
    # The soak must run at no less than the target: take the closest rate at or above it,
    # and the closest overall only when every pause tried fell short.
    reaching = [d for d in tried if tried[d] >= target_rps]
    best = min(reaching or tried, key=lambda d: abs(tried[d] - target_rps))
    return best, [f"pause {d} ms -> {rps:.0f} req/s" for d, rps in tried.items()]


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
        peak = review_load(url, 8, 15)
        target = TARGET_SHARE * peak["rps"]
        delay, calibration = calibrate_pacing(url, target)
        pids = workers(master)
        samples: list[tuple[float, list[float]]] = []
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                samples.append((time.monotonic(), [rss_mib(p) for p in pids]))
                stop.wait(10)

        sampler = threading.Thread(target=sample)
        sampler.start()
        soak = review_load(url, PACED_CONNECTIONS, int(args.minutes * 60), delay)
        stop.set()
        sampler.join()
        alive = workers(master) == pids
    warm = samples[min(3, len(samples) - 1)][1]  # after 30 s of load: caches and arenas are warm
    last = samples[-1][1]
    growth = [100 * (b - a) / a for a, b in zip(warm, last)]
    lines = [
        f"/review, gunicorn 2 workers (default threads and backpressure), worker recycling off, {args.minutes:g} min",
        "",
        "| phase | req/s | p50 ms | p99 ms | requests | errors |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| peak (wrk c=8, 15 s) | {peak['rps']:.0f} | {peak['p50_ms']:.1f} | {peak['p99_ms']:.1f} | {peak['requests']} | {peak['errors']} |",
        f"| soak ({PACED_CONNECTIONS} connections, {delay} ms pause each) | {soak['rps']:.0f} | {soak['p50_ms']:.1f} | {soak['p99_ms']:.1f} | {soak['requests']} | {soak['errors']} |",
        "",
        f"soak rate = {100 * soak['rps'] / peak['rps']:.0f} % of peak; error rate {100 * soak['errors'] / max(1, soak['requests']):.3f} %; "
        f"workers kept their pids: {alive}",
        "",
        f"pacing calibrated for {target:.0f} req/s (80 % of peak) with 10 s runs: " + "; ".join(calibration),
        "",
        "| worker | RSS after 30 s (MiB) | RSS at end (MiB) | growth |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {pid} | {a:.1f} | {b:.1f} | {g:+.2f} % |" for pid, a, b, g in zip(pids, warm, last, growth)]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
