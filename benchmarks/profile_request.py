"""Where a request's time goes: py-spy samples a gunicorn worker while wrk drives one endpoint.

Usage (py-spy is in the bench environment; sampling another process needs ptrace rights, e.g. root):
    .venv-bench/bin/python benchmarks/profile_request.py [--endpoint review|classify] [--seconds 15]
        [--out benchmarks/results/profile-review.md]

One worker, so every request lands in the sampled process. The table gives, for
the busiest frames, the share of samples in which each one is on the stack
(inclusive) and at the top (self), idle threads excluded.
"""
from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.classify_bench import sample_image  # noqa: E402
from benchmarks.loadgen import multipart_body, publish, wrk  # noqa: E402
from benchmarks.serverctl import gunicorn_server  # noqa: E402
from benchmarks.soak import REVIEW_BODY, workers  # noqa: E402

PY_SPY = Path(sys.executable).parent / "py-spy"


def request_for(endpoint: str) -> tuple[str, bytes, str]:
    """(path, body, content type) of the endpoint's request."""
    if endpoint == "review":
        return "/review", REVIEW_BODY, "application/x-www-form-urlencoded"
    image = sample_image()
    body, content_type = multipart_body("image", image.name, image.read_bytes())
    return "/classify", body, content_type


def summarize(collapsed: Path, top: int) -> tuple[int, list[tuple[str, float, float]]]:
    """(samples, [(frame, inclusive share, self share)]) from py-spy's collapsed stacks."""
    inclusive: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0] + ")" if " (" in f else f
                  for f in stack.split(";")[1:]]  # the first frame is the thread name
        if not frames:
            continue
        samples = int(count)
        total += samples
        for frame in set(frames):
            inclusive[frame] += samples
        own[frames[-1]] += samples
    rows = [(frame, inclusive[frame] / total, own[frame] / total) for frame, _ in inclusive.most_common(top)]
    return total, rows


def main() -> None:
    """Profile one endpoint under load and print (and save) the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", choices=("review", "classify"), default="review")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    path, body, content_type = request_for(args.endpoint)
    env = {"WEB_CONCURRENCY": "1", "MODELSERVE_LOG_LEVEL": "INFO"}
    with gunicorn_server(env) as (base, master, _), tempfile.TemporaryDirectory() as tmp:
        collapsed = Path(tmp) / "stacks.txt"
        worker = workers(master)[0]
        load: dict = {}
        driver = threading.Thread(target=lambda: load.update(
            wrk(base + path, 8, args.seconds + 2, "POST", body, content_type)))
        driver.start()
        subprocess.run([str(PY_SPY), "record", "--pid", str(worker), "--duration", str(args.seconds),
                        "--rate", "250", "--format", "raw", "--output", str(collapsed), "--nonblocking"],
                       check=True, capture_output=True)
        driver.join()
        total, rows = summarize(collapsed, args.top)
    lines = [f"POST {path}, 1 gunicorn worker, wrk c=8: {load['rps']:.0f} req/s, p99 {load['p99_ms']:.1f} ms; "
             f"py-spy {total} samples in {args.seconds} s (idle threads excluded)", "",
             "| frame | on stack | self |", "| --- | --- | --- |"]
    lines += [f"| `{frame}` | {100 * inc:.1f} % | {100 * own:.1f} % |" for frame, inc, own in rows]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
