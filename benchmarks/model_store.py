"""The shared model store: what a poll costs, how fast instances converge, and whether serving notices it.

Usage: python benchmarks/model_store.py [--rounds 3] [--seconds 10] [--poll 10] [--out benchmarks/results/model_store.md]

An S3-compatible server (moto's standalone server) runs on a loopback port in this process,
seeded with every committed model by `flask models publish`.
- Poll cost: StoreWatcher's check with nothing changed (RemoteStore.fingerprint), timed, with the
  number of store requests it makes, against the S3 server and a file:// store.
- Convergence: two gunicorn instances (2 workers each, empty local model folders, their own
  caches, the default poll interval unless --poll says otherwise); a promotion or rollback of
  review_sentiment by the CLI, then the time until each instance gave the new version in 10
  /review answers in a row.
- Throughput: one instance serving from the local folder and one from the S3 store, /review
  by wrk at 8 connections, alternating rounds in the same run; the ratio of the medians.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.loadgen import medians, publish, wrk  # noqa: E402
from benchmarks.serverctl import free_port, gunicorn_server  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REVIEW_BODY = b"review=A+wonderful%2C+moving+film+with+a+brilliant+cast."
FORM = "application/x-www-form-urlencoded"


def start_s3() -> str:
    """moto's S3 server on a free loopback port, with a bucket; returns the store URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False).start()
    import boto3

    boto3.client("s3").create_bucket(Bucket="bench")
    return "s3://bench/models"


def cli(work: Path, store: str, *args: str) -> None:
    """`flask models ...` against the store, in process."""
    from app import create_app

    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{work / 'cli.db'}", "MODEL_STORE": store,
                      "MODEL_CACHE": str(work / "cli-cache"), "LOG_LEVEL": "WARNING"})
    result = app.test_cli_runner().invoke(args=["models", *args])
    if result.exit_code:
        raise RuntimeError(result.output)


def poll_cost(store_url: str, work: Path, repeats: int) -> dict:
    """Median and p90 ms of one unchanged-store check, and the store requests it makes."""
    from app.models.store import RemoteStore

    store = RemoteStore(store_url, work / "poll-cache", 1 << 40)
    calls = {"n": 0}
    original = store._call

    def counted(what, func, *args, **kwargs):
        calls["n"] += 1
        return original(what, func, *args, **kwargs)

    store._call = counted
    store.fingerprint()
    calls["n"] = 0
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        store.fingerprint()
        timings.append((time.perf_counter() - started) * 1000)
    return {"median_ms": statistics.median(timings), "p90_ms": sorted(timings)[int(0.9 * (len(timings) - 1))],
            "requests": calls["n"] / repeats, "models": len(store.names())}


def review_version(base: str) -> str:
    """The version of review_sentiment a plain /review gets."""
    request = urllib.request.Request(base + "/review", data=REVIEW_BODY, headers={"Content-Type": FORM})
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.loads(response.read())["model"]["version"])


def converge(instances: list[str], expected: str, limit: float) -> float:
    """Seconds until every instance answered ``expected`` 10 times in a row."""
    started, done = time.monotonic(), {}
    streak = {base: 0 for base in instances}
    while len(done) < len(instances):
        if time.monotonic() - started > limit:
            raise RuntimeError(f"no convergence on v{expected} within {limit} s: {streak}")
        for base in instances:
            if base in done:
                continue
            streak[base] = streak[base] + 1 if review_version(base) == expected else 0
            if streak[base] >= 10:
                done[base] = time.monotonic() - started
        time.sleep(0.02)
    return max(done.values())


def next_version_folder(work: Path, version: str, new: str) -> Path:
    """A copy of the committed review model as version ``new`` (same artifacts), in a folder to publish."""
    target = work / "next" / "review_sentiment" / new
    shutil.copytree(ROOT / "saved_models" / "review_sentiment" / version, target)
    manifest = json.loads((target / "manifest.json").read_text())
    (target / "manifest.json").write_text(json.dumps({**manifest, "version": int(new)}))
    return work / "next"


def main() -> None:
    """Measure, print and save a markdown report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3, help="promotions (alternating with rollbacks); wrk rounds")
    parser.add_argument("--seconds", type=float, default=10, help="seconds of each wrk run")
    parser.add_argument("--poll", type=float, default=10, help="MODELSERVE_MODEL_POLL_SECONDS of the instances")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modelserve-store-bench-"))
    try:
        store = start_s3()
        cli(work, store, "publish", str(ROOT / "saved_models"))
        (work / "file-store").mkdir()
        file_store = (work / "file-store").as_uri()
        cli(work, file_store, "publish", str(ROOT / "saved_models"))
        costs = {"s3 (moto, loopback)": poll_cost(store, work, 50), "file://": poll_cost(file_store, work, 50)}

        current = sorted(p.name for p in (ROOT / "saved_models" / "review_sentiment").iterdir() if p.is_dir())[-1]
        new = str(int(current) + 1)
        cli(work, store, "promote", "review_sentiment", current)
        cli(work, store, "publish", str(next_version_folder(work, current, new)))
        common = {"MODELSERVE_MODEL_STORE": store, "MODELSERVE_MODEL_POLL_SECONDS": str(args.poll),
                  "MODELSERVE_MODEL_DIR": str(work / "empty"), "GUNICORN_MAX_REQUESTS": "0"}
        (work / "empty").mkdir()
        convergence = []
        with ExitStack() as stack:
            instances = [stack.enter_context(gunicorn_server({**common, "MODELSERVE_MODEL_CACHE": str(work / f"c{i}")}))[0]
                         for i in range(2)]
            for round_ in range(args.rounds):
                action, target = (("promote", new), ("rollback", current))[round_ % 2]
                time.sleep(args.poll * (0.25 + 0.5 * (round_ % 2)))  # promotions fall at different points of a poll cycle
                started = time.monotonic()
                cli(work, store, *(["promote", "review_sentiment", new] if action == "promote"
                                   else ["rollback", "review_sentiment"]))
                convergence.append((action, time.monotonic() - started, converge(instances, target, args.poll + 30)))
            if len(convergence) % 2:
                cli(work, store, "rollback", "review_sentiment")
                converge(instances, current, args.poll + 30)

        runs = {"local folder": [], "S3 store": []}
        with gunicorn_server({"GUNICORN_MAX_REQUESTS": "0"}) as (local, _, _), \
                gunicorn_server({**common, "MODELSERVE_MODEL_CACHE": str(work / "c0")}) as (remote, _, _):
            for _ in range(args.rounds):
                for label, base in (("local folder", local), ("S3 store", remote)):
                    runs[label].append(wrk(base + "/review", 8, args.seconds, "POST", REVIEW_BODY, FORM))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    throughput = {label: medians(r) for label, r in runs.items()}
    ratio = throughput["S3 store"]["rps"] / throughput["local folder"]["rps"]
    lines = ["# Model store", "",
             f"`python benchmarks/model_store.py --rounds {args.rounds} --seconds {args.seconds:g} --poll {args.poll:g}`; "
             f"{os.cpu_count()} cores; the S3 server is moto's, in the benchmark's process, on loopback.", "",
             "## One poll with nothing changed (StoreWatcher, per worker)", "",
             "| store | models | requests per poll | median ms | p90 ms |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {c['models']} | {c['requests']:.0f} | {c['median_ms']:.2f} | {c['p90_ms']:.2f} |"
              for name, c in costs.items()]
    lines += ["", f"## Convergence: 2 instances x 2 workers, poll every {args.poll:g} s", "",
              "| action | CLI command s | until both instances answer it s |", "| --- | --- | --- |"]
    lines += [f"| {action} | {cli_s:.2f} | {seconds:.2f} |" for action, cli_s, seconds in convergence]
    worst = max(seconds for _, _, seconds in convergence)
    lines += ["", f"Worst: {worst:.2f} s against the bound of one poll interval plus 5 s ({args.poll + 5:g} s).", "",
              f"## Throughput of one instance, /review, wrk c=8, {args.rounds} alternating rounds of {args.seconds:g} s", "",
              "| models from | req/s (median) | each round's req/s | p50 ms | p99 ms | failed |",
              "| --- | --- | --- | --- | --- | --- |"]
    for label, t in throughput.items():
        rounds = ", ".join(f"{run['rps']:.0f}" for run in runs[label])
        lines.append(f"| {label} | {t['rps']:.0f} | {rounds} | {t['p50_ms']:.2f} | {t['p99_ms']:.2f} | {t['errors']} |")
    lines += ["", f"S3 store / local folder: {ratio:.2f}x"]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
