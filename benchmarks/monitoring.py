"""The prediction log's cost and the drift computation's speed, in one run.

Usage: python benchmarks/monitoring.py [--seconds 15] [--rounds 5] [--out benchmarks/results/monitoring.md]

1. Throughput of POST /review (gunicorn as `make serve` runs it, wrk c=8, one real review) with the
   log on (every request, MONITOR_SAMPLE_RATE 1.0) and off (MODELSERVE_MONITOR=false), alternating,
   `rounds` times each; the ratio of the medians is the overhead. The server's CPU time per request
   (master and workers, the log's writer included) is measured in the same runs: on a shared 2-core
   machine, where wrk takes a core too, it says the cost with less noise than req/s.
2. With --instructions: the CPU instructions per request, log on and off, counted by valgrind's callgrind
   for the same requests in one process (an in-process app, the writer's work included; the periodic
   retention and gauge refresh, which valgrind's slowness would run many times more often, are left out).
   Counted, not timed, this figure does not drift with the machine's load.
3. Seconds to compute drift (every feature and the predictions, PSI against review_sentiment's
   reference) for a window of 10,000 logged records, read from the database, and for the records alone.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.loadgen import publish, wrk  # noqa: E402
from benchmarks.serverctl import ROOT, gunicorn_server  # noqa: E402

REVIEW = "A thoughtful, well acted film with a script that never talks down to its audience. Loved it!"


def server_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of the server's master and workers so far."""
    import psutil

    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def throughput(monitor: bool, seconds: float) -> tuple[float, float]:
    """(successful req/s of /review, the server's CPU milliseconds per request) with the log on or off; with
    it on, the writer's work on the records queued during the run is counted too."""
    body = ("review=" + REVIEW.replace(" ", "+")).encode()
    with gunicorn_server({"MODELSERVE_MONITOR": "true" if monitor else "false"}) as (base, pid, _):
        wrk(base + "/review", 8, 2, "POST", body, "application/x-www-form-urlencoded")  # warm-up
        time.sleep(1.0)
        cpu = server_cpu_seconds(pid)
        run = wrk(base + "/review", 8, seconds, "POST", body, "application/x-www-form-urlencoded")
        time.sleep(1.0)  # the writer's last batches
        return run["ok_rps"], (server_cpu_seconds(pid) - cpu) * 1000 / run["requests"]


INSTRUCTIONS_SCRIPT = """
import sys, tempfile
from app import create_app
work = tempfile.mkdtemp()
app = create_app({"DATABASE_URL": f"sqlite:///{work}/m.db", "MODELS": "review_sentiment",
                  "MONITOR": sys.argv[1] == "on", "LOG_LEVEL": "WARNING"})
app.extensions["model_registry"].load_all()
log = app.extensions.get("prediction_log")
if log:
    log.settings.gauge_seconds, log._last_retention = 1e12, 1e18
client = app.test_client()
for _ in range(int(sys.argv[2])):
    client.post("/review", data={"review": sys.argv[3]})
if log:
    log.flush(600)
"""


def instructions(monitor: bool, requests: int) -> int:
    """Instructions valgrind counts for an in-process app answering ``requests`` reviews (start included)."""
    import re
    import subprocess

    done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-c",
                           INSTRUCTIONS_SCRIPT, "on" if monitor else "off", str(requests), REVIEW],
                          cwd=ROOT, capture_output=True, text=True, check=True,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})  # no pool of BLAS threads spinning
    return int(re.search(r"refs:\s+([\d,]+)", done.stderr).group(1).replace(",", ""))


def instructions_per_request(monitor: bool, few: int = 200, many: int = 1200) -> float:
    """Instructions per request: the difference of two runs, so that the start cancels out."""
    return (instructions(monitor, many) - instructions(monitor, few)) / (many - few)


def drift_seconds(records: int = 10_000) -> tuple[float, float]:
    """(seconds for the report over ``records`` logged records, read included; seconds for drift alone)."""
    import csv
    import gzip
    import random

    from app import create_app
    from app.monitoring.log import reference_of
    from app.monitoring.report import monitoring_report

    with gzip.open(ROOT.parent / "shared" / "data" / "imdb" / "test.csv.gz", "rt", encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    with tempfile.TemporaryDirectory() as work:
        app = create_app({"DATABASE_URL": f"sqlite:///{work}/m.db", "MONITOR_QUEUE_SIZE": records + 10,
                          "MODELS": "review_sentiment"})
        registry = app.extensions["model_registry"]
        registry.load_all()
        model, log = registry.get("review_sentiment"), app.extensions["prediction_log"]
        sample = random.Random(0).sample(texts, records)
        for start in range(0, records, 32):
            batch = model.decode({"review": sample[start:start + 32]})
            log.record(model, batch, model.predict(batch), 0.001, "rest")
        log.flush(120)
        started = time.perf_counter()
        report = monitoring_report(log, model, last=records)
        whole = time.perf_counter() - started
        assert report["requests"] == records
        rows = log.window(model.name, model.version, last=records)
        started = time.perf_counter()
        reference_of(model).drift([r["features"] for r in rows], [r["label"] for r in rows], [r["score"] for r in rows])
        alone = time.perf_counter() - started
        app.extensions["db_engine"].dispose()
    return whole, alone


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--out", default=None)
    parser.add_argument("--instructions", action="store_true", help="also count instructions per request (valgrind)")
    args = parser.parse_args()
    runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(args.rounds):
        for monitor in (False, True):
            runs[monitor].append(throughput(monitor, args.seconds))
    whole, alone = drift_seconds(args.records)
    rps = {m: [r for r, _ in runs[m]] for m in runs}
    cpu = {m: [c for _, c in runs[m]] for m in runs}
    ratio = statistics.median(rps[True]) / statistics.median(rps[False])
    cpu_ratio = statistics.median(cpu[True]) / statistics.median(cpu[False])
    lines = [f"One run on this machine ({os.cpu_count()} cores), {dt.date.today()}: rounds alternate off and on.", "",
             "| POST /review, wrk c=8 | req/s per round | median req/s | server CPU ms per request, per round "
             "| median |", "| --- | --- | --- | --- | --- |"]
    for monitor, name in ((False, "prediction log off"), (True, "prediction log on (every request)")):
        lines.append(f"| {name} | {', '.join(f'{v:.0f}' for v in rps[monitor])} | {statistics.median(rps[monitor]):.0f} "
                     f"| {', '.join(f'{v:.3f}' for v in cpu[monitor])} | {statistics.median(cpu[monitor]):.3f} |")
    lines += ["", f"Throughput, log on / off: {ratio:.3f} ({(1 - ratio):+.1%}). Server CPU per request, on / off: "
              f"{cpu_ratio:.3f} ({cpu_ratio - 1:+.1%}; the writer's work included).", ""]
    if args.instructions:
        counted = {monitor: instructions_per_request(monitor) for monitor in (False, True)}
        lines += ["| POST /review in process, valgrind callgrind | instructions per request |", "| --- | --- |",
                  f"| prediction log off | {counted[False]:,.0f} |", f"| prediction log on | {counted[True]:,.0f} |", "",
                  f"Instructions per request, on / off: {counted[True] / counted[False]:.3f} "
                  f"({counted[True] / counted[False] - 1:+.1%}).", ""]
    lines += [
             f"| drift over {args.records:,} logged records | seconds |", "| --- | --- |",
             f"| the whole report (read from the database, drift, latency, live accuracy) | {whole:.3f} |",
             f"| drift alone (every feature and the predictions) | {alone:.3f} |", "",
             "Command: `python benchmarks/monitoring.py --instructions --out benchmarks/results/monitoring.md`"]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
