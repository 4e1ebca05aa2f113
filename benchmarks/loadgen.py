"""wrk, driven from Python: one function shared by every benchmark script.

wrk (C, event loop) is the load generator: on a 2-core machine a Python client
would steal as much CPU as the server it measures.
"""
from __future__ import annotations

import os
import re
import statistics
import subprocess
import tempfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "request.lua"


def publish(lines: list[str], out: str | None) -> None:
    """Print a benchmark's markdown report and, when asked, save it (results/...)."""
    report = "\n".join(lines)
    print(report)
    if out:
        Path(out).write_text(report + "\n")


def multipart_body(field: str, filename: str, data: bytes, content_type: str = "image/png") -> tuple[bytes, str]:
    """A multipart/form-data body with one file field, and its Content-Type header."""
    boundary = "----modelservebench"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def wrk(url: str, connections: int, seconds: float, method: str = "GET", body: bytes | None = None,
        content_type: str = "", delay_ms: int = 0, threads: int = 2, honor_retry_after: bool = False,
        headers: dict[str, str] | None = None) -> dict:
    """One wrk run: req/s (all answers), ok_rps (2xx), p50/p90/p99 ms, requests, non-2xx, shed (503), errors."""
    with tempfile.NamedTemporaryFile(suffix=".body") as body_file:
        if body is not None:
            body_file.write(body)
            body_file.flush()
        env = {**os.environ, "BENCH_METHOD": method, "BENCH_BODY_FILE": body_file.name if body is not None else "",
               "BENCH_CONTENT_TYPE": content_type, "BENCH_DELAY_MS": str(delay_ms),
               "BENCH_HONOR_RETRY_AFTER": "1" if honor_retry_after else "0",
               "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in (headers or {}).items())}
        out = subprocess.run(["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                              "--timeout", "10s", "-s", str(SCRIPT), url],
                             env=env, capture_output=True, text=True, check=True).stdout
    f = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", out.split("RESULT", 1)[1])}
    elapsed = f["duration_us"] / 1e6
    return {"rps": f["requests"] / elapsed, "ok_rps": (f["requests"] - f["non2xx"]) / elapsed,
            "p50_ms": f["p50_us"] / 1000, "p90_ms": f["p90_us"] / 1000, "p99_ms": f["p99_us"] / 1000,
            "requests": f["requests"], "non2xx": f["non2xx"], "shed": f["shed"], "errors": f["errors"]}


def medians(runs: list[dict], keys=("rps", "p50_ms", "p99_ms")) -> dict:
    """Median of each key over repeated wrk runs, and every failed answer counted (non-2xx + socket errors)."""
    return ({key: statistics.median(run[key] for run in runs) for key in keys}
            | {"errors": sum(run["non2xx"] + run["errors"] for run in runs)})
