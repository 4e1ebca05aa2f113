"""Jobs per second through the HTTP job protocol, with the SQLite and the PostgreSQL store.

Usage: python benchmarks/jobs_bench.py [--jobs 500] [--workers 4] [--postgres URL] [--out FILE]
For each store: start gunicorn (2 workers), submit N text jobs over HTTP (timed),
then let W built-in pull workers (threads in this process, sentiment model)
drain the queue (timed). Each job costs a submit, a lease and a result post.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.loadgen import publish  # noqa: E402
from benchmarks.serverctl import ROOT, gunicorn_server  # noqa: E402

TOKEN = "bench-token"


def submit(base: str, text: str) -> None:
    """One POST /jobs."""
    request = urllib.request.Request(base + "/jobs", json.dumps({"model": "review_sentiment", "text": text}).encode(),
                                     {"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30).read()


def run(database_url: str, jobs: int, workers: int) -> dict:
    """Timed submit and drain phases against one store."""
    import sqlalchemy as sa

    from app.database import make_engine
    from app.jobs.store import JobStore
    from app.jobs.pull import Server, run_worker
    from app.migrations import upgrade_database
    from app.models.registry import ModelRegistry

    engine = make_engine(database_url)
    upgrade_database(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM jobs"))
    store = JobStore(engine)
    env = {"DATABASE_URL": database_url, "MODELSERVE_WORKER_TOKEN": TOKEN, "WEB_CONCURRENCY": "2"}
    with gunicorn_server(env) as (base, _, _):
        started = time.perf_counter()
        submitters = [threading.Thread(target=lambda k=k: [submit(base, f"review {i}: a fine film")
                                                          for i in range(k, jobs, 4)]) for k in range(4)]
        for t in submitters:
            t.start()
        for t in submitters:
            t.join()
        submit_seconds = time.perf_counter() - started
        registry = ModelRegistry(ROOT / "saved_models", {"review_sentiment"})
        registry.load_all()
        stop = threading.Event()
        started = time.perf_counter()
        threads = [threading.Thread(target=run_worker, args=(Server(base, TOKEN), registry, ["review_sentiment"]),
                                    kwargs={"wait": 1, "stop": stop, "name": f"bench-{i}"}) for i in range(workers)]
        for t in threads:
            t.start()
        while store.counts().get("succeeded", 0) < jobs:
            time.sleep(0.05)
        drain_seconds = time.perf_counter() - started
        stop.set()
        for t in threads:
            t.join()
    engine.dispose()
    return {"submit_per_s": jobs / submit_seconds, "drain_per_s": jobs / drain_seconds}


def main() -> None:
    """Both stores, one table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    lines = [f"{args.jobs} text jobs, {args.workers} pull workers (threads), gunicorn 2 workers x 4 threads", "",
             "| store | submitted jobs/s (4 clients) | completed jobs/s (lease + predict + result) |",
             "| --- | --- | --- |"]
    for name, url in (("SQLite (WAL)", "sqlite:////tmp/modelserve-jobs-bench.db"), ("PostgreSQL", args.postgres)):
        result = run(url, args.jobs, args.workers)
        lines.append(f"| {name} | {result['submit_per_s']:.0f} | {result['drain_per_s']:.0f} |")
    publish(lines, args.out)


if __name__ == "__main__":
    main()
