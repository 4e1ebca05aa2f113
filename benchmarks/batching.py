"""Adaptive batching, measured: the same server with batching off and on, per model, at c = 1, 8, 32.

Usage: python benchmarks/batching.py [--seconds 8] [--rounds 3] [--out benchmarks/results/batching.md]

Each configuration is one gunicorn (2 workers, every feature on, the two
flagship models) started with a MODELSERVE_BATCHING setting; wrk drives
/review (form post) and /classify (multipart upload) in turn, rounds
alternating the order of the configurations so that drift of this shared
machine falls on each alike; the table gives medians over rounds and the
batch sizes the model actually ran (from the server's own metrics).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.classify_bench import sample_image  # noqa: E402
from benchmarks.compare import REVIEW, REVIEW_FORM  # noqa: E402
from benchmarks.loadgen import medians, multipart_body, publish, wrk  # noqa: E402
from benchmarks.serverctl import gunicorn_server  # noqa: E402

MODELS = {"text": "review_sentiment", "cnn": "malaria_cell"}


def setting(size: int, wait_ms: float = 0.0) -> dict:
    """The same batching for both models."""
    return {m: {"max_batch_size": size, "max_wait_ms": wait_ms} for m in MODELS.values()}


CONFIGS = {
    "off (one request per prediction)": setting(1),
    "on: up to 32, no wait": setting(32),
    "on: up to 32, wait up to 2 ms": setting(32, 2.0),
    "on: up to 32, wait up to 5 ms": setting(32, 5.0),
}


def batch_sizes(base: str, model: str) -> tuple[float, float]:
    """(predictions, items) counted so far by the server's metrics for a model."""
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    count = items = 0.0
    for line in text.splitlines():
        if f'model="{model}"' not in line:
            continue
        if line.startswith("modelserve_inference_batch_size_count"):
            count += float(line.rsplit(" ", 1)[1])
        elif line.startswith("modelserve_inference_batch_size_sum"):
            items += float(line.rsplit(" ", 1)[1])
    return count, items


def main() -> None:
    """Every configuration, both models, every concurrency; print and save the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--configs", default=",".join(str(i) for i in range(len(CONFIGS))))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    chosen = [list(CONFIGS)[int(i)] for i in args.configs.split(",")]
    image = sample_image()
    upload, upload_type = multipart_body("image", image.name, image.read_bytes())
    requests = {"text": ("/review", REVIEW_FORM, "application/x-www-form-urlencoded"),
                "cnn": ("/classify", upload, upload_type)}
    runs: dict[tuple, list[dict]] = {}
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(gunicorn_server({
            "WEB_CONCURRENCY": "2", "MODELSERVE_MODELS": ",".join(MODELS.values()), "MODELSERVE_LOG_LEVEL": "INFO",
            "MODELSERVE_BATCHING": json.dumps(CONFIGS[name])}))[0] for name in chosen}
        for kind in ("text", "cnn"):
            path, body, content_type = requests[kind]
            for connections in levels:
                for round_number in range(args.rounds):
                    for name in (chosen if round_number % 2 == 0 else chosen[::-1]):
                        base = servers[name]
                        before = batch_sizes(base, MODELS[kind])
                        result = wrk(base + path, connections, args.seconds, "POST", body, content_type)
                        after = batch_sizes(base, MODELS[kind])
                        result["mean_batch"] = (after[1] - before[1]) / max(1.0, after[0] - before[0])
                        runs.setdefault((kind, connections, name), []).append(result)
                        print(kind, connections, name, f"{result['rps']:.0f} req/s", flush=True)
    publish(render(args, chosen, levels, runs, image), args.out)


def render(args, chosen: list[str], levels: list[int], runs: dict, image: Path) -> list[str]:
    """Markdown: per model and concurrency, each configuration's medians and its gain over batching off."""
    lines = [f"gunicorn 2 workers, every feature on; wrk {args.seconds:g} s per run, {args.rounds} alternating rounds, "
             f"medians; /review with a {len(REVIEW)}-character review, /classify with {image.name}", "",
             "| model | concurrency | batching | req/s | p50 ms | p99 ms | mean batch | req/s vs off | p50 vs off | errors |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for kind in ("text", "cnn"):
        for connections in levels:
            median = {name: medians(runs[(kind, connections, name)], ("rps", "p50_ms", "p99_ms", "mean_batch"))
                      for name in chosen}
            off = median[chosen[0]]
            for name in chosen:
                m = median[name]
                lines.append(f"| {kind} | {connections} | {name} | {m['rps']:.0f} | {m['p50_ms']:.1f} | "
                             f"{m['p99_ms']:.1f} | {m['mean_batch']:.1f} | {m['rps'] / off['rps']:.2f}x | "
                             f"{m['p50_ms'] / off['p50_ms']:.2f}x | {m['errors']} |")
    return lines


if __name__ == "__main__":
    main()
