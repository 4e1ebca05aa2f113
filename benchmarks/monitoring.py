"""The prediction log's cost and the drift computation's speed, in one run.

Usage: python benchmarks/monitoring.py [--instructions | --pinned | --together] [--out FILE]

1. Default: throughput of POST /review (gunicorn as `make serve` runs it, wrk c=8, one real review) with the
   log on (every request, MONITOR_SAMPLE_RATE 1.0) and off (MODELSERVE_MONITOR=false), in whole rounds that
   alternate, `--rounds` times each; the ratio of the medians is the overhead, with the server's CPU time per
   request (master and workers, the log's writer included) from the same runs.
2. --pinned: the goal's measurement (throughput within 5 %). Three servers, the log off, in the database and as
   Parquet files, each one worker on the last core; wrk on the first core loads one at a time in 5 s bursts,
   the order turned in each set, and new servers are started `--generations` times. The figure is the median
   of the per-set ratios on / off, with a 95 % interval from a bootstrap over generations and sets: bursts
   seconds apart cancel the machine's drift, and new processes the lasting speed differences between two
   processes of the same code, which whole rounds minutes apart, or one set of servers, leave in. The database
   log starts full (`--prefill`, 100,000 records: the default row limit), as a server's that has run a while.
3. --together: the same three servers loaded at once by three wrk for 20 s, new servers each of `--rounds`.
   Loaded together, they share every change of the machine's speed, even within seconds, and each one's CPU per
   request is its cost, whatever share of the core it got: the log's cost is the ratio of CPU per request on / off
   (with a bootstrap interval over rounds), and the throughput it leaves a server whose core is its limit, the
   inverse.
4. --instructions: the CPU instructions per request, log on and off, counted by valgrind's callgrind,
   (a) in a gunicorn server as the deploys run it (one worker; master, worker and the log's writer counted)
   answering POST /review one after another, and (b) for the same requests in one process (Flask's test
   client, without HTTP), each as the difference of a long and a short run so that start and stop cancel
   out. The periodic retention and gauge refresh, which valgrind's slowness would run many times more
   often per request than a server does, are left out. Counted, not timed, these figures do not drift with
   the machine's load.
5. Always: seconds to compute drift (every feature and the predictions, PSI against review_sentiment's
   reference) for a window of 10,000 logged records, read from the database, and for the records alone.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.loadgen import publish, wrk  # noqa: E402
from app.monitoring.log import GATHER_SECONDS  # noqa: E402
from benchmarks.serverctl import ROOT, gunicorn_server  # noqa: E402

REVIEW = "A thoughtful, well acted film with a script that never talks down to its audience. Loved it!"
BODY, FORM = ("review=" + REVIEW.replace(" ", "+")).encode(), "application/x-www-form-urlencoded"


def server_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of the server's master and workers so far."""
    import psutil

    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def settle() -> None:
    """Wait for the writer's last batch of a load, so that it counts in that load's CPU, not in the next one's."""
    time.sleep(GATHER_SECONDS + 0.5)


def throughput(monitor: bool, seconds: float) -> tuple[float, float]:
    """(successful req/s of /review, the server's CPU milliseconds per request) with the log on or off, gunicorn as
    `make serve` runs it and wrk sharing the cores; with it on, the writer's work on the records queued during the
    run is counted too."""
    with gunicorn_server({"MODELSERVE_MONITOR": "true" if monitor else "false"}) as (base, pid, _):
        wrk(base + "/review", CONNECTIONS, 2, "POST", BODY, FORM)  # warm-up
        settle()
        cpu = server_cpu_seconds(pid)
        run = wrk(base + "/review", CONNECTIONS, seconds, "POST", BODY, FORM)
        settle()
        return run["ok_rps"], (server_cpu_seconds(pid) - cpu) * 1000 / run["requests"]


CONNECTIONS = 8  # wrk's connections, for two workers on every core
PINNED_CONNECTIONS = 4  # for one pinned worker
# The servers the pinned bursts compare: the log off, the log in the database, the log as Parquet files.
LOGS = {"off": {"MODELSERVE_MONITOR": "false"},
        "database": {"MODELSERVE_MONITOR": "true", "DATABASE_URL": "sqlite:///{work}/log.db"},
        "parquet": {"MODELSERVE_MONITOR": "true", "MODELSERVE_MONITOR_PARQUET": "{work}/predictions"}}
# The command of each mode's result of record.
COMMANDS = {"rounds": "--instructions --out benchmarks/results/monitoring.md",
            "pinned": "--pinned --out benchmarks/results/monitoring-pinned.md",
            "together": "--together --rounds 12 --out benchmarks/results/monitoring-together.md"}
TITLES = {"off": "prediction log off", "database": "log on, in the database (SQLite)",
          "parquet": "log on, as Parquet files"}
# Rows the database log holds when a generation starts: MONITOR_MAX_ROWS_PER_MODEL's default, where the log of a
# server that has run a while stays (each write then adds to a full index, and the retention deletes as much).
PREFILL_ROWS = 100_000


def fill_log(path: str, rows: int, ids=None, batch: int = 2000) -> list[float]:
    """Write ``rows`` records of review_sentiment into the SQLite log at ``path`` as the writer does (summaries, then
    one insert per ``batch``), request ids made by ``ids`` (the server's own by default); the CPU seconds of each
    batch."""
    from app import create_app
    from app.ids import time_ordered_id

    app = create_app({"DATABASE_URL": f"sqlite:///{path}", "MODELS": "review_sentiment"})
    registry = app.extensions["model_registry"]
    registry.load_all()
    model, log, ids = registry.get("review_sentiment"), app.extensions["prediction_log"], ids or time_ordered_id
    inputs = model.decode({"review": [REVIEW]})
    outputs, seconds = model.predict(inputs), []
    for start in range(0, rows, batch):
        entries = [(model, inputs, outputs, 0.002, "rest", ids(), None, time.time(), None)
                   for _ in range(min(batch, rows - start))]
        started = time.process_time()
        log.sink.write(log.rows(entries))
        seconds.append(time.process_time() - started)
    app.extensions["db_engine"].dispose()
    return seconds


def writer_lines(prefill: int, records: int = 10_000, batch: int = 500) -> list[str]:
    """The writer's CPU per record (summaries and insert, in batches of ``batch``) into an empty log and a full one,
    with random request ids and with the server's, which grow with time."""
    lines = [f"| writer's CPU per record (summaries and insert, {batch} a transaction), request ids | log empty | "
             f"log holding {prefill:,} |", "| --- | --- | --- |"]
    for title, ids in (("random (uuid4's form)", lambda: os.urandom(16).hex()), ("the server's, in time order", None)):
        cells = []
        for held in (0, prefill):
            with tempfile.TemporaryDirectory() as work:
                if held:
                    fill_log(f"{work}/log.db", held, ids)
                cells.append(statistics.median(fill_log(f"{work}/log.db", records, ids, batch)) / batch * 1e6)
        lines.append(f"| {title} | " + " | ".join(f"{cell:.1f} µs" for cell in cells) + " |")
    return lines + [""]


@contextmanager
def prefilled_log(rows: int):
    """The path of a SQLite file whose log holds ``rows`` records (fill_log), made once for every server to copy."""
    with tempfile.TemporaryDirectory() as made:
        fill_log(os.path.join(made, "prefilled.db"), rows)
        yield os.path.join(made, "prefilled.db")


@contextmanager
def pinned_servers(names: list[str], prefilled: str):
    """{name: (base URL, pid)}: new servers of the logs named, one worker each on the last core, started together, the
    database log a copy of ``prefilled``, warmed up; meanwhile this process (and the wrk it starts) runs on the
    first core."""
    with tempfile.TemporaryDirectory() as work, ExitStack() as stack:
        shutil.copy(prefilled, os.path.join(work, "log.db"))
        try:
            os.sched_setaffinity(0, {os.cpu_count() - 1})  # the servers started from here inherit it
            servers = {name: stack.enter_context(gunicorn_server(
                {**{key: value.format(work=work) for key, value in LOGS[name].items()}, "WEB_CONCURRENCY": "1"}))[:2]
                for name in names}
            os.sched_setaffinity(0, {0})
            for base, _ in servers.values():
                wrk(base + "/review", PINNED_CONNECTIONS, 2, "POST", BODY, FORM)
            settle()
            yield servers
        finally:
            os.sched_setaffinity(0, range(os.cpu_count()))


def pinned_bursts(generations: int, sets: int, seconds: float,
                  prefill: int = PREFILL_ROWS) -> dict[str, list[list[tuple[float, float]]]]:
    """(req/s, server CPU ms per request) of each burst, by log and generation: wrk, on the first core, loads the
    pinned servers one at a time in short bursts, the order turned in each set, with a pause after each burst for
    the writer's last batch. Bursts of a set are seconds apart, so the machine's drift, which moves whole rounds
    minutes apart, mostly cancels in their ratios; and each generation starts new servers, because one process can
    be faster than another of the same code for as long as it lives (where its memory landed), which no number of
    bursts against the same processes would average out."""
    bursts: dict[str, list[list[tuple[float, float]]]] = {name: [] for name in LOGS}
    with prefilled_log(prefill) as prefilled:
        for generation in range(generations):
            names = list(LOGS)[generation % len(LOGS):] + list(LOGS)[:generation % len(LOGS)]
            with pinned_servers(names, prefilled) as servers:
                for name in names:
                    bursts[name].append([])
                for turn in range(sets):
                    for name in names[turn % len(names):] + names[:turn % len(names)]:
                        base, pid = servers[name]
                        cpu = server_cpu_seconds(pid)
                        run = wrk(base + "/review", PINNED_CONNECTIONS, seconds, "POST", BODY, FORM)
                        settle()
                        bursts[name][-1].append((run["ok_rps"], (server_cpu_seconds(pid) - cpu) * 1000 / run["requests"]))
    return bursts


def together_runs(rounds: int, seconds: float, prefill: int = PREFILL_ROWS) -> dict[str, list[tuple[float, float]]]:
    """(req/s, server CPU ms per request) of each pinned server in each round, all three loaded at once by three wrk
    (new servers each round). Loaded together, the servers share every change of the machine's speed, also those
    within seconds that bursts one after another leave in; a server's CPU per request is its cost whatever share of
    the core the scheduler gave it, and for a server whose core is its limit, throughput is its inverse."""
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in LOGS}
    with prefilled_log(prefill) as prefilled:
        for _ in range(rounds):
            with pinned_servers(list(LOGS), prefilled) as servers, ThreadPoolExecutor(len(LOGS)) as pool:
                cpu = {name: server_cpu_seconds(pid) for name, (_, pid) in servers.items()}
                loads = {name: pool.submit(wrk, base + "/review", PINNED_CONNECTIONS, seconds, "POST", BODY, FORM)
                         for name, (base, _) in servers.items()}
                done = {name: load.result() for name, load in loads.items()}
                settle()
                for name, (_, pid) in servers.items():
                    runs[name].append((done[name]["ok_rps"],
                                       (server_cpu_seconds(pid) - cpu[name]) * 1000 / done[name]["requests"]))
    return runs


def ratio_interval(on: list[list[float]], off: list[list[float]], draws: int = 10_000) -> tuple[float, float, float]:
    """The median of the per-set ratios on/off, and its 95 % interval by a bootstrap that draws whole generations
    (server processes) and then sets within them, so that the interval holds the processes' spread too."""
    import numpy as np

    ratios = [np.array(a) / np.array(b) for a, b in zip(on, off)]
    rng = np.random.default_rng(0)
    medians = [np.median(np.concatenate([rng.choice(ratios[g], len(ratios[g])) for g in
                                         rng.integers(len(ratios), size=len(ratios))])) for _ in range(draws)]
    return float(np.median(np.concatenate(ratios))), float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


# Valgrind runs the server some 50 times slower than it runs natively. The writer's batches would then hold that
# many times fewer records, each paying a transaction's fixed cost, which a server whose CPU is the limit (the case
# throughput is about) spreads over hundreds: so under valgrind the writer gathers this much longer.
GATHER_UNDER_VALGRIND = 10.0
INSTRUCTIONS_SCRIPT = """
import sys, tempfile
import app.monitoring.log as prediction_log
from app import create_app
prediction_log.GATHER_SECONDS = float(sys.argv[4])
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
                           INSTRUCTIONS_SCRIPT, "on" if monitor else "off", str(requests), REVIEW,
                           str(GATHER_UNDER_VALGRIND)],
                          cwd=ROOT, capture_output=True, text=True, check=True,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})  # no pool of BLAS threads spinning
    return int(re.search(r"refs:\s+([\d,]+)", done.stderr).group(1).replace(",", ""))


def instructions_per_request(monitor: bool, few: int = 200, many: int = 1200) -> float:
    """Instructions per request: the difference of two runs, so that the start cancels out."""
    return (instructions(monitor, many) - instructions(monitor, few)) / (many - few)


# The shipped gunicorn configuration, with the writer's gathering scaled as above and the periodic retention and gauge
# refresh left out of the count (valgrind's slowness would run them many times more often per request).
SERVED_CONFIG = f"""
import runpy
globals().update(runpy.run_path("gunicorn.conf.py"))


def post_worker_init(worker):
    import app.monitoring.log as prediction_log

    prediction_log.GATHER_SECONDS = {GATHER_UNDER_VALGRIND}
    log = worker.wsgi.extensions.get("prediction_log")
    if log:
        log.settings.gauge_seconds, log._last_retention = 1e12, 1e18
"""


def served_instructions(monitor: bool, requests: int) -> tuple[int, float]:
    """(instructions valgrind counts in a gunicorn server (its master and one worker, the log's writer included)
    that starts, answers ``requests`` POST /review one after another on one connection, and stops; the requests
    per second it answered under valgrind)."""
    import http.client
    import re
    import signal

    from benchmarks.serverctl import free_port, running_server

    with tempfile.TemporaryDirectory() as work, tempfile.TemporaryFile() as output:
        Path(work, "gunicorn.conf.py").write_text(SERVED_CONFIG)
        port = free_port()
        env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "WEB_CONCURRENCY": "1", "GUNICORN_TIMEOUT": "1800",
               "MODELSERVE_MODELS": "review_sentiment", "MODELSERVE_MONITOR": "true" if monitor else "false",
               "MODELSERVE_LOG_LEVEL": "WARNING", "DATABASE_URL": f"sqlite:///{work}/m.db", "OPENBLAS_NUM_THREADS": "1",
               "GUNICORN_PIDFILE": f"{work}/g.pid"}
        command = ["valgrind", "--tool=callgrind", "--trace-children=yes", f"--callgrind-out-file={work}/callgrind.%p",
                   sys.executable, "-m", "gunicorn", "-c", f"{work}/gunicorn.conf.py", "main:app"]
        with running_server(command, env, f"http://127.0.0.1:{port}/v2/health/ready", output, timeout=1800) as (server, _):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            started = time.monotonic()
            for _ in range(requests):
                connection.request("POST", "/review", BODY, {"Content-Type": FORM})
                response = connection.getresponse()
                if response.read() is None or response.status != 200:
                    raise RuntimeError(f"POST /review answered {response.status}")
            rate = requests / (time.monotonic() - started)
            connection.close()
            time.sleep(2 * GATHER_UNDER_VALGRIND + 5)  # the writer's last batch (both runs idle as long)
            os.killpg(server.pid, signal.SIGTERM)  # a graceful stop, waited for: valgrind writes its counts at exit
            server.wait(timeout=600)
        return sum(int(re.search(r"^totals: (\d+)", path.read_text(), re.M).group(1))
                   for path in Path(work).glob("callgrind.*")), rate


def served_instructions_per_request(monitor: bool, few: int = 200, many: int = 1200) -> float:
    """Instructions per served request: the difference of two runs, so that start and stop cancel out."""
    (many_count, rate), (few_count, _) = served_instructions(monitor, many), served_instructions(monitor, few)
    SERVED_RATES[monitor] = rate
    return (many_count - few_count) / (many - few)


SERVED_RATES: dict[bool, float] = {}  # requests per second the server answered under valgrind


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


def pinned_lines(generations: int, sets: int, seconds: float, prefill: int) -> list[str]:
    """The pinned bursts as a table and the ratios of each log to no log."""
    bursts = pinned_bursts(generations, sets, seconds, prefill)
    lines = [f"One run on this machine ({os.cpu_count()} cores), {dt.date.today()}: three gunicorn servers, each one "
             "worker on the last core, started together; wrk (c=4) on the first core loads one at a time in "
             f"{seconds:g} s bursts, {sets} sets, the order turned in each set; then new servers, {generations} times "
             f"(the generations are parted by / in the table). The database log holds {prefill:,} records of the "
             "model when its server starts (a full log, at the default row limit).", "",
             "| POST /review | req/s per burst | median | server CPU ms per request, per burst | median |",
             "| --- | --- | --- | --- | --- |"]
    for name, title in TITLES.items():
        rps = [[r for r, _ in generation] for generation in bursts[name]]
        cpu = [[c for _, c in generation] for generation in bursts[name]]
        lines.append(f"| {title} | {' / '.join(', '.join(f'{v:.0f}' for v in g) for g in rps)} | "
                     f"{statistics.median(sum(rps, [])):.0f} | {' / '.join(', '.join(f'{v:.3f}' for v in g) for g in cpu)}"
                     f" | {statistics.median(sum(cpu, [])):.3f} |")
    lines += ["", "| log on / off, per set | throughput: median (95 % interval) | CPU per request: median (95 % interval) |",
              "| --- | --- | --- |"]
    for name in ("database", "parquet"):
        figures = [ratio_interval([[b[i] for b in g] for g in bursts[name]], [[b[i] for b in g] for g in bursts["off"]])
                   for i in (0, 1)]
        lines.append(f"| {name} | " + " | ".join(f"{m:.3f} ({low:.3f}-{high:.3f})" for m, low, high in figures) + " |")
    return lines + [""]


def together_lines(rounds: int, seconds: float, prefill: int) -> list[str]:
    """The servers loaded together: each round's figures and each log's cost against none."""
    runs = together_runs(rounds, seconds, prefill)
    lines = [f"One run on this machine ({os.cpu_count()} cores), {dt.date.today()}: three gunicorn servers (the log off, "
             "in the database, as Parquet files), each one worker, all on the last core, loaded at once for "
             f"{seconds:g} s by three wrk (c=4 each) on the first core; new servers each round, {rounds} rounds. The "
             f"database log holds {prefill:,} records of the model when its server starts (a full log, at the default "
             "row limit).", "",
             "| POST /review, loaded together | req/s per round | server CPU ms per request, per round | median |",
             "| --- | --- | --- | --- |"]
    for name, title in TITLES.items():
        lines.append(f"| {title} | {', '.join(f'{r:.0f}' for r, _ in runs[name])} | "
                     f"{', '.join(f'{c:.3f}' for _, c in runs[name])} | {statistics.median(c for _, c in runs[name]):.3f} |")
    lines += ["", "| log on / off, per round | CPU per request: median (95 % interval) | the throughput it leaves: "
              "off / on CPU | req/s on / off (the core's share the scheduler gave) |", "| --- | --- | --- | --- |"]
    for name in ("database", "parquet"):
        cpu, low, high = ratio_interval([[c] for _, c in runs[name]], [[c] for _, c in runs["off"]])
        rps = ratio_interval([[r] for r, _ in runs[name]], [[r] for r, _ in runs["off"]])
        lines.append(f"| {name} | {cpu:.3f} ({low:.3f}-{high:.3f}) | {1 / cpu:.3f} ({1 / high:.3f}-{1 / low:.3f}) | "
                     f"{rps[0]:.3f} ({rps[1]:.3f}-{rps[2]:.3f}) |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=None, help="seconds per round (15), per burst (5, --pinned) or per load (20, --together)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each (default mode), or of all three (--together)")
    parser.add_argument("--generations", type=int, default=6, help="--pinned: times new servers are started")
    parser.add_argument("--sets", type=int, default=4, help="--pinned: sets of bursts per generation")
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--prefill", type=int, default=PREFILL_ROWS,
                        help="--pinned, --together: records in the database log when its server starts")
    parser.add_argument("--out", default=None)
    parser.add_argument("--instructions", action="store_true", help="also count instructions per request (valgrind)")
    parser.add_argument("--together", action="store_true",
                        help="the three pinned servers loaded at once, new ones each round (--rounds, --seconds 20)")
    parser.add_argument("--pinned", action="store_true",
                        help="short bursts against three servers (log off, database, Parquet), one worker each on one "
                             "core, wrk on the other")
    args = parser.parse_args()
    mode = "together" if args.together else "pinned" if args.pinned else "rounds"
    if args.together:
        lines = together_lines(args.rounds, args.seconds or 20, args.prefill) + writer_lines(args.prefill)
    elif args.pinned:
        lines = pinned_lines(args.generations, args.sets, args.seconds or 5, args.prefill) + writer_lines(args.prefill)
    else:
        lines = rounds_lines(args.rounds, args.seconds or 15)
    whole, alone = drift_seconds(args.records)
    if args.instructions:
        lines += instruction_lines()
    lines += [
             f"| drift over {args.records:,} logged records | seconds |", "| --- | --- |",
             f"| the whole report (read from the database, drift, latency, live accuracy) | {whole:.3f} |",
             f"| drift alone (every feature and the predictions) | {alone:.3f} |", "",
             f"Command: `python benchmarks/monitoring.py {COMMANDS[mode]}`"]
    publish(lines, args.out)


def rounds_lines(rounds: int, seconds: float) -> list[str]:
    """Whole rounds, off and on alternating, two workers and wrk sharing every core."""
    runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(rounds):
        for monitor in (False, True):
            runs[monitor].append(throughput(monitor, seconds))
    rps = {m: [r for r, _ in runs[m]] for m in runs}
    cpu = {m: [c for _, c in runs[m]] for m in runs}
    ratio = statistics.median(rps[True]) / statistics.median(rps[False])
    cpu_ratio = statistics.median(cpu[True]) / statistics.median(cpu[False])
    lines = [f"One run on this machine ({os.cpu_count()} cores), {dt.date.today()}: rounds alternate off and on; "
             "gunicorn as `make serve` runs it, wrk beside it on every core.", "",
             f"| POST /review, wrk c={CONNECTIONS} | req/s per round | median req/s "
             "| server CPU ms per request, per round | median |", "| --- | --- | --- | --- | --- |"]
    for monitor, name in ((False, "prediction log off"), (True, "prediction log on (every request)")):
        lines.append(f"| {name} | {', '.join(f'{v:.0f}' for v in rps[monitor])} | {statistics.median(rps[monitor]):.0f} "
                     f"| {', '.join(f'{v:.3f}' for v in cpu[monitor])} | {statistics.median(cpu[monitor]):.3f} |")
    return lines + ["", f"Throughput, log on / off: {ratio:.3f} ({(1 - ratio):+.1%}). Server CPU per request, on / off: "
                    f"{cpu_ratio:.3f} ({cpu_ratio - 1:+.1%}; the writer's work included).", ""]


def instruction_lines() -> list[str]:
    """Instructions per request, log on and off, served by gunicorn and in process."""
    lines = []
    for title, count in (("served by gunicorn (one worker, one connection)", served_instructions_per_request),
                         ("in process (Flask's test client)", instructions_per_request)):
        counted = {monitor: count(monitor) for monitor in (False, True)}
        lines += [f"| POST /review {title}, valgrind callgrind | instructions per request |", "| --- | --- |",
                  f"| prediction log off | {counted[False]:,.0f} |", f"| prediction log on | {counted[True]:,.0f} |",
                  "", f"Instructions per request, on / off: {counted[True] / counted[False]:.3f} "
                  f"({counted[True] / counted[False] - 1:+.1%}).", ""]
    return lines + [f"Under valgrind the server answered {SERVED_RATES[True]:.0f} requests/s with the log on "
                    f"({SERVED_RATES[False]:.0f} off), and its writer gathered records for {GATHER_UNDER_VALGRIND:g} s "
                    f"instead of {GATHER_SECONDS:g} s: batches of about {SERVED_RATES[True] * GATHER_UNDER_VALGRIND:.0f} "
                    f"records, as {GATHER_SECONDS:g} s gathers at "
                    f"{SERVED_RATES[True] * GATHER_UNDER_VALGRIND / GATHER_SECONDS:.0f} requests/s per worker natively.", ""]


if __name__ == "__main__":
    main()
