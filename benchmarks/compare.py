"""This project against BentoML, Seldon MLServer, LitServe and a bare Flask endpoint: same models, same machine, one run.

Usage (in the prepared environment, `make bench-env`):
    .venv-bench/bin/python benchmarks/compare.py [--seconds 10] [--rounds 2] [--concurrency 1,8,32]
        [--servers ours,bare,mlserver,bentoml,litserve] [--out benchmarks/results/compare.md]

Every server runs 2 processes on loopback and serves the same two committed
models through the project's own model classes (benchmarks/peers/common.py), so
only the serving stack differs: the malaria CNN (ONNX Runtime, 1 thread per
process; decode + preprocess + inference per request) and the review pipeline.
wrk drives each server in turn, rounds alternating the order (A B C D, then
D C B A, ...) so that drift of this shared machine falls on every server alike;
the table gives the median over rounds. Each run also records the CPU time the
server's processes spent per request served (user + system, from /proc): on
this shared machine it moved a few percent between rounds where req/s moved
by a quarter. Memory is PSS (shared pages divided
among the processes that share them), summed over each server's process tree.
Nothing is installed at run time.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.classify_bench import sample_image  # noqa: E402
from benchmarks.loadgen import medians, multipart_body, publish, wrk  # noqa: E402
from benchmarks.serverctl import ROOT, free_port, running_server  # noqa: E402

PROCESSES = 2
PEERS = ("mlserver", "bentoml", "litserve")
REVIEW = "A thoughtful, well acted film with a script that never talks down to its audience. Loved it!"
REVIEW_FORM = ("review=" + REVIEW.replace(" ", "+")).encode()
BIN = Path(sys.executable).parent
# Ours and the bare reference run from the serving environment, as `make serve` starts the server
# (requirements.txt only: no pandas, which scikit-learn imports whenever it is installed, ~67 MiB
# per process); without it, from this interpreter's environment.
SERVE_PYTHON = ROOT / ".venv-serve" / "bin" / "python"


@dataclass
class Request:
    """One HTTP request as wrk sends it."""

    path: str
    body: bytes
    content_type: str
    headers: dict = field(default_factory=dict)


@dataclass
class Server:
    """A running server: how to reach it and what it costs."""

    name: str
    base: str
    pid: int
    ready_seconds: float
    requests: dict[str, Request]


def serve_python() -> str:
    """The interpreter for ours and the bare reference: the serving environment's where it exists."""
    return str(SERVE_PYTHON) if SERVE_PYTHON.exists() else sys.executable


def server_commands(image: bytes, workdir: Path) -> dict[str, tuple[list[str], dict, str, dict]]:
    """name -> (command, extra environment, readiness path, {model: request}) for every server."""
    upload, upload_type = multipart_body("image", "cell.png", image)
    form = REVIEW_FORM
    v2_image = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                       "data": [base64.b64encode(image).decode()]}]}).encode()
    v2_text = json.dumps({"inputs": [{"name": "review", "shape": [1], "datatype": "BYTES",
                                      "data": [REVIEW]}]}).encode()
    gunicorn = [serve_python(), "-m", "gunicorn", "-c", "gunicorn.conf.py"]
    mlserver_dir = workdir / "mlserver"
    for model, runtime in (("malaria_cell", "CellRuntime"), ("review_sentiment", "ReviewRuntime")):
        (mlserver_dir / model).mkdir(parents=True, exist_ok=True)
        (mlserver_dir / model / "model-settings.json").write_text(json.dumps(
            {"name": model, "implementation": f"benchmarks.peers.mlserver_runtime.{runtime}"}))
    return {
        # Every feature on: validation, registry with verified manifests, metrics, request ids, JSON request
        # log, backpressure, batching as the manifests set it; the default set of models (all of
        # saved_models/, the trio included), as `make serve` starts it.
        "ours": (gunicorn + ["main:app"], {"MODELSERVE_LOG_LEVEL": "INFO"}, "/v2/health/ready",
                 {"cnn": Request("/classify", upload, upload_type), "text": Request("/review", form,
                                                                                 "application/x-www-form-urlencoded")}),
        # The bare reference gets the project's gunicorn settings that suit it best (4 threads, see
        # benchmarks/results/backpressure.md: 40 unguarded threads are slower); gunicorn's master
        # reads before forking only the two models it serves (MODELSERVE_MODELS), not all five.
        "bare": (gunicorn + ["--threads", "4", "benchmarks.peers.bare_flask:app"],
                 {"MODELSERVE_MODELS": "malaria_cell,review_sentiment"}, "/ready",
                 {"cnn": Request("/classify", upload, upload_type),
                  "text": Request("/review", form, "application/x-www-form-urlencoded")}),
        "mlserver": ([str(BIN / "mlserver"), "start", str(mlserver_dir)], {"MLSERVER_PARALLEL_WORKERS": str(PROCESSES)},
                     "/v2/health/ready",
                     {"cnn": Request("/v2/models/malaria_cell/infer", v2_image, "application/json"),
                      "text": Request("/v2/models/review_sentiment/infer", v2_text, "application/json")}),
        "bentoml": ([str(BIN / "bentoml"), "serve", "benchmarks.peers.bento_service:Models"],
                    {"BENCH_PROCESSES": str(PROCESSES), "BENTOML_HOME": str(workdir / "bentoml")}, "/readyz",
                    {"cnn": Request("/classify", upload, upload_type),
                     "text": Request("/review", json.dumps({"review": REVIEW}).encode(), "application/json")}),
        # LitServe: one LitAPI per model with its own batching, 2 inference processes each.
        "litserve": ([sys.executable, "-m", "benchmarks.peers.litserve_app"], {"BENCH_PROCESSES": str(PROCESSES)},
                     "/health", {"cnn": Request("/classify", upload, upload_type),
                                 "text": Request("/review", form, "application/x-www-form-urlencoded")}),
    }


def port_settings(name: str, port: int, workdir: Path) -> tuple[list[str], dict]:
    """Extra arguments and environment that put a server on `port`."""
    if name == "litserve":
        return [], {"PORT": str(port), "HOST": "127.0.0.1"}
    if name in ("ours", "bare"):
        # Worker recycling (GUNICORN_MAX_REQUESTS) off for both: a run serves 100,000 requests per worker
        # in a few minutes here, and a worker replaced during a 10 s measurement leaves every kept-alive
        # wrk connection on the other worker for the rest of it (one run of ours fell to 46 % of bare).
        return [], {"PORT": str(port), "HOST": "127.0.0.1", "WEB_CONCURRENCY": str(PROCESSES),
                    "GUNICORN_MAX_REQUESTS": "0", "GUNICORN_PIDFILE": str(workdir / f"{name}.pid"),
                    "DATABASE_URL": f"sqlite:///{workdir / (name + '.db')}"}
    if name == "mlserver":
        return [], {"MLSERVER_HTTP_PORT": str(port), "MLSERVER_GRPC_PORT": str(free_port()),
                    "MLSERVER_METRICS_PORT": str(free_port())}
    return ["--port", str(port), "--host", "127.0.0.1"], {}


@contextlib.contextmanager
def start(name: str, spec: tuple, workdir: Path, timeout: float = 180):
    """Start one server, wait for its readiness endpoint, yield a Server; stop it afterwards."""
    command, env_extra, ready_path, requests = spec
    port = free_port()
    args, port_env = port_settings(name, port, workdir)
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra, **port_env}
    base = f"http://127.0.0.1:{port}"
    with open(workdir / f"{name}.log", "w+b") as log, running_server(
            command + args, env, base + ready_path, log, ready=lambda: all_answer(base, requests),
            timeout=timeout) as (proc, seconds):
        yield Server(name, base, proc.pid, seconds, requests)


@contextlib.contextmanager
def only_running(measured: Server, servers: list[Server]):
    """Pause every other server's processes (SIGSTOP) while one is measured, resume them afterwards.

    An idle server is not always idle: LitServe's processes poll their queues and took about half a
    core between requests, which would be taken from whichever server was being measured.
    """
    paused = [pid for s in servers if s is not measured for pid in tree(s.pid)]
    signal_all(paused, signal.SIGSTOP)
    try:
        yield
    finally:
        signal_all(paused, signal.SIGCONT)


def signal_all(pids: list[int], signum: int) -> None:
    """Send a signal to every pid still alive."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def all_answer(base: str, requests: dict[str, Request]) -> bool:
    """Whether every model endpoint answers 200 (every process loaded, not just the first)."""
    for request in requests.values():
        call = urllib.request.Request(base + request.path, request.body,
                                      {"Content-Type": request.content_type, **request.headers})
        with urllib.request.urlopen(call, timeout=10) as response:
            if response.status != 200:
                return False
    return True


def tree(pid: int) -> list[int]:
    """pid and every descendant."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        child, parent = map(int, line.split())
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def pss_mib(pid: int) -> float:
    """Proportional set size of one process (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by a process tree: the live processes' own, plus what each
    has collected from children it reaped (a replaced gunicorn worker's time moves to its master)."""
    total = 0
    for process in tree(pid):
        try:
            fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime (fields 14-17 of proc(5))
    return total / os.sysconf("SC_CLK_TCK")


def hardware_limits(image: bytes, seconds: float = 3.0) -> dict[str, dict[str, float]]:
    """Per model: the model alone (batch 1 and best batch) and decode + preprocess, on one core; ceilings on all."""
    from benchmarks.peers.common import Models

    models = Models()
    cores = os.cpu_count() or 1

    def rate(function) -> float:
        function()
        count, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            function()
            count += 1
        return count / (time.perf_counter() - began)

    image_input = models.cell.inputs[0].name
    array = models.cell.decode({image_input: [image]})[image_input]
    batch = __import__("numpy").repeat(array, 32, axis=0)
    cnn_b1 = rate(lambda: models.cell.probabilities(array))
    cnn_b32 = 32 * rate(lambda: models.cell.probabilities(batch))
    decode = rate(lambda: models.cell.decode({image_input: [image]}))
    text_b1 = rate(lambda: models.sentiment(REVIEW))
    text_b64 = 64 * rate(lambda: models.predict(models.review, [REVIEW] * 64))
    return {
        "cnn": {"model batch 1 (1 core)": cnn_b1, "model batch 32 (1 core)": cnn_b32,
                "decode + preprocess (1 core)": decode,
                "ceiling: decode + batch-1 model on every core": cores / (1 / decode + 1 / cnn_b1)},
        "text": {"model batch 1, vectorizing included (1 core)": text_b1, "model batch 64 (1 core)": text_b64,
                 "ceiling: batch-1 model on every core": cores * text_b1},
    }


def main() -> None:
    """Start every server, drive them in alternating rounds, print and save the tables."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--servers", default="ours,bare,mlserver,bentoml,litserve")
    parser.add_argument("--out", default=None)
    parser.add_argument("--readme", default=None, help="copy the summary into this README (between its markers)")
    args = parser.parse_args()
    names = args.servers.split(",")
    levels = [int(c) for c in args.concurrency.split(",")]
    image_path = sample_image()
    image = image_path.read_bytes()
    results: dict[tuple[str, str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        specs = server_commands(image, workdir)
        servers = [stack.enter_context(start(name, specs[name], workdir)) for name in names]
        for model in ("cnn", "text"):
            for connections in levels:
                for round_number in range(args.rounds):
                    order = servers if round_number % 2 == 0 else servers[::-1]
                    for server in order:
                        request = server.requests[model]
                        cpu_before = cpu_seconds(server.pid)
                        with only_running(server, servers):
                            result = wrk(server.base + request.path, connections, args.seconds, "POST",
                                         request.body, request.content_type, headers=request.headers)
                        result["cpu_ms"] = 1000 * (cpu_seconds(server.pid) - cpu_before) / max(result["requests"], 1)
                        results.setdefault((server.name, model, connections), []).append(result)
        memory = {s.name: [pss_mib(pid) for pid in tree(s.pid)] for s in servers}
        versions = package_versions(names)
    limits = hardware_limits(image, min(3.0, args.seconds))
    report = render(args, servers, results, memory, limits, versions, levels, image_path)
    publish([report], args.out)
    if args.readme:
        copy_summary(report, Path(args.readme))


def package_versions(names: list[str]) -> str:
    """The versions of the serving stacks compared."""
    from importlib.metadata import PackageNotFoundError, version

    packages = {"ours": ["flask", "gunicorn"], "bare": ["flask", "gunicorn"], "mlserver": ["mlserver", "uvicorn"],
                "bentoml": ["bentoml"], "litserve": ["litserve", "fastapi", "uvicorn"]}
    found = []
    for package in dict.fromkeys(p for name in names for p in packages[name]):
        with contextlib.suppress(PackageNotFoundError):
            found.append(f"{package} {version(package)}")
    return ", ".join(found + [f"onnxruntime {version('onnxruntime')}", f"scikit-learn {version('scikit-learn')}"])


SUMMARY_START, SUMMARY_END = "<!-- compare summary: start -->", "<!-- compare summary: end -->"


def pss_total(memory: dict, name: str) -> float:
    """PSS of a server's whole process tree, MiB."""
    return sum(p for p in memory[name] if p > 0)


def summary(servers: list[Server], median: dict, memory: dict, levels: list[int]) -> list[str]:
    """The headline table and the goals, met or missed by how much; copied into benchmarks/README.md."""
    names = [s.name for s in servers]
    ready = {s.name: s.ready_seconds for s in servers}
    shown = [c for c in (8, 32) if c in levels] or levels[-1:]
    lines = [SUMMARY_START, "", "| server | " + " | ".join(f"CNN req/s c={c}" for c in shown) + " | "
             + " | ".join(f"text req/s c={c}" for c in shown) + " | PSS, all processes | start to ready |",
             "| --- " * (3 + 2 * len(shown)) + "|"]
    for name in names:
        cells = [f"{median[(name, m, c)]['rps']:,.0f}" for m in ("cnn", "text") for c in shown]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {pss_total(memory, name):.0f} MiB | {ready[name]:.1f} s |")
    if "ours" in names:
        lines += ["", "| goal | measured | met? |", "| --- | --- | --- |", *goals(names, median, memory, ready, levels)]
    return lines + ["", SUMMARY_END]


def goals(names: list[str], median: dict, memory: dict, ready: dict, levels: list[int]) -> list[str]:
    """One row per goal of the performance issue that this run can check."""
    rows = []

    def row(goal: str, value: float, target: float, shown: str, higher_is_better: bool = True):
        met = value >= target if higher_is_better else value <= target
        rows.append(f"| {goal} | {shown} | {'yes' if met else 'no'} |")

    peers = [n for n in names if n in PEERS]
    for model, connections, bare_share, peer_ratio in (("text", 8, 1.0, 2.0), ("text", 32, 1.0, 2.0),
                                                        ("cnn", 8, 0.95, 1.5)):
        ours = median.get(("ours", model, connections))
        if ours is None:
            continue
        if "bare" in names:
            bare = median[("bare", model, connections)]
            row(f"{model} c={connections}: at least {bare_share:.0%} of bare Flask's req/s",
                ours["rps"] / bare["rps"], bare_share, f"{ours['rps'] / bare['rps']:.0%}")
        if peers:
            best = max((median[(p, model, connections)] for p in peers), key=lambda m: m["rps"])
            best_name = next(p for p in peers if median[(p, model, connections)] is best)
            row(f"{model} c={connections}: at least {peer_ratio:.1f}x the best peer ({best_name})",
                ours["rps"] / best["rps"], peer_ratio, f"{ours['rps'] / best['rps']:.2f}x")
            if model == "text":
                row(f"text c={connections}: p99 no worse than the best peer's", ours["p99_ms"], best["p99_ms"],
                    f"{ours['p99_ms']:.1f} ms against {best['p99_ms']:.1f} ms", higher_is_better=False)
    per_process = pss_total(memory, "ours") / PROCESSES
    row("PSS per serving process at most 150 MiB (all processes / workers)", per_process, 150,
        f"{per_process:.0f} MiB", higher_is_better=False)
    if "bare" in names:
        ratio = pss_total(memory, "ours") / pss_total(memory, "bare")
        row("whole server's PSS at most 1.2x bare Flask's", ratio, 1.2, f"{ratio:.2f}x", higher_is_better=False)
    row("start to ready at most 1.5 s", ready["ours"], 1.5, f"{ready['ours']:.1f} s", higher_is_better=False)
    return rows


def copy_summary(report: str, readme: Path) -> None:
    """Put the report's summary block into a README between the same markers."""
    block = report[report.index(SUMMARY_START):report.index(SUMMARY_END) + len(SUMMARY_END)]
    text = readme.read_text()
    start, end = text.index(SUMMARY_START), text.index(SUMMARY_END) + len(SUMMARY_END)
    readme.write_text(text[:start] + block + text[end:])


def render(args, servers: list[Server], results: dict, memory: dict, limits: dict, versions: str,
           levels: list[int], image_path: Path) -> str:
    """Markdown: throughput and latency table, ratios, memory and start-up, hardware limits."""
    lines = [f"{len(servers)} servers x {PROCESSES} processes on {os.cpu_count()} cores; wrk {args.seconds:g} s per run, "
             f"{args.rounds} alternating rounds, median shown; image {image_path.name} ({image_path.stat().st_size} bytes)",
             f"versions: {versions}; ours and bare run by {os.path.relpath(serve_python(), ROOT)}", "",
             "| model | concurrency | server | req/s | p50 ms | p99 ms | errors | server CPU ms per request |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    median: dict[tuple[str, str, int], dict] = {}
    for key, runs in results.items():
        median[key] = medians(runs, keys=("rps", "p50_ms", "p99_ms", "cpu_ms"))
    for model in ("cnn", "text"):
        for connections in levels:
            for server in servers:
                m = median[(server.name, model, connections)]
                lines.append(f"| {model} | {connections} | {server.name} | {m['rps']:.0f} | {m['p50_ms']:.1f} | "
                             f"{m['p99_ms']:.1f} | {m['errors']} | {m['cpu_ms']:.3f} |")
    peers = [s.name for s in servers if s.name in PEERS]
    lines += ["", "| model | concurrency | ours / best peer req/s | ours / best peer p99 | ours / bare Flask req/s | "
                  "bare Flask / ours, CPU per request | ours / hardware ceiling |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    ceilings = {model: list(values.values())[-1] for model, values in limits.items()}
    for model in ("cnn", "text"):
        for connections in levels:
            ours = median.get(("ours", model, connections))
            if ours is None:
                continue
            best = max((median[(p, model, connections)] for p in peers), key=lambda m: m["rps"], default=None)
            bare = median.get(("bare", model, connections))
            versus_best = (f"{ours['rps'] / best['rps']:.2f}x", f"{ours['p99_ms'] / best['p99_ms']:.2f}x") if best \
                else ("n/a", "n/a")
            versus_bare = f"{100 * ours['rps'] / bare['rps']:.0f} %" if bare else "n/a"
            cpu_versus_bare = f"{100 * bare['cpu_ms'] / ours['cpu_ms']:.0f} %" if bare and ours["cpu_ms"] else "n/a"
            lines.append(f"| {model} | {connections} | {versus_best[0]} | {versus_best[1]} | {versus_bare} | "
                         f"{cpu_versus_bare} | {100 * ours['rps'] / ceilings[model]:.0f} % |")
    lines += ["", "| server | start to ready s | processes | PSS total MiB | PSS per serving process MiB |",
              "| --- | --- | --- | --- | --- |"]
    for server in servers:
        pss = [p for p in memory[server.name] if p > 0]
        lines.append(f"| {server.name} | {server.ready_seconds:.1f} | {len(pss)} | {sum(pss):.0f} | "
                     f"{sum(pss) / PROCESSES:.0f} |")
    lines += ["", *summary(servers, median, memory, levels)]
    lines += ["", "hardware limit on this machine (same run, model alone, no server):", "",
              "| model | measure | items/s |", "| --- | --- | --- |"]
    for model, values in limits.items():
        lines += [f"| {model} | {what} | {rate:.0f} |" for what, rate in values.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
