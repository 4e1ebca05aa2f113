"""Smoke runs of the benchmark harnesses: they must work from one command, for a few seconds."""
from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import PROJECT_ROOT


def run_script(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a benchmark script with the test interpreter; its output for the failure message."""
    return subprocess.run([sys.executable, *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout)


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    """Cells of the markdown rows starting with first_cell."""
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith(f"| {first_cell} ")]


def test_compare_harness_runs_ours_and_the_bare_reference(tmp_path):
    """BentoML and MLServer live in the separate bench environment; this drives the harness itself."""
    out = tmp_path / "compare.md"
    done = run_script("benchmarks/compare.py", "--seconds", "1", "--rounds", "2", "--concurrency", "2",
                      "--servers", "ours,bare", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    for model in ("cnn", "text"):
        rows = table_rows(text, model)
        servers = {row[2]: row for row in rows if len(row) == 8}
        assert set(servers) == {"ours", "bare"}, text
        for row in servers.values():
            assert float(row[3]) > 0 and row[6] == "0" and float(row[7]) > 0, row  # req/s and CPU measured, no errors
    assert re.search(r"\| ours \| [\d.]+ \| 3 \| \d+ \| \d+ \|", text), text  # master + 2 workers measured
    assert "ceiling" in text


def test_every_public_endpoint_under_load(tmp_path):
    """The load test covers every documented operation (it stops otherwise) and sees no failed answer."""
    out = tmp_path / "load_all.md"
    done = run_script("benchmarks/load_all.py", "--seconds", "1", "--connections", "2", "--out", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = out.read_text()
    assert "failed answers in all: 0" in text
    assert len(table_rows(text, "POST")) + len(table_rows(text, "GET")) >= 35


def test_batch_benchmark_measures_every_path(tmp_path):
    """The batch benchmark on 30 items a dataset: raw, local command, Spark local[2], Beam, Flink and HTTP all measured."""
    out = tmp_path / "batch.md"
    done = run_script("benchmarks/batch_bench.py", "--limit", "30", "--http-seconds", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    for model in ("malaria_cell", "review_sentiment"):
        [row] = table_rows(out.read_text(), model)
        assert row[1] == "30" and all(float(cell) > 0 for cell in (*row[2:4], *row[5:])), row


def test_request_cost_measures_every_configuration(tmp_path):
    """The in-process cost of a /review request: both apps and every configuration measured."""
    out = tmp_path / "request_cost.md"
    done = run_script("benchmarks/request_cost.py", "--requests", "30", "--rounds", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    rows = table_rows(text, "bare") + table_rows(text, "ours,") + table_rows(text, "ours")
    assert len(rows) == 5 and all(float(row[1]) > 0 and float(row[3]) > 0 for row in rows), rows


def test_the_readme_benchmark_summary_is_the_committed_comparison_run():
    """benchmarks/README.md shows the summary block of results/compare.md verbatim (`make compare` copies it)."""
    from benchmarks.compare import SUMMARY_END, SUMMARY_START

    def block(text: str) -> str:
        return text[text.index(SUMMARY_START):text.index(SUMMARY_END)]

    report = (PROJECT_ROOT / "benchmarks" / "results" / "compare.md").read_text()
    readme = (PROJECT_ROOT / "benchmarks" / "README.md").read_text()
    assert block(readme) == block(report)
    assert "| ours |" in block(report) and "| litserve |" in block(report)


def test_model_store_benchmark_measures_poll_convergence_and_throughput(tmp_path):
    """The store benchmark for one promotion and one rollback at a 1 s poll: everything measured, nothing failed."""
    out = tmp_path / "model_store.md"
    done = run_script("benchmarks/model_store.py", "--rounds", "2", "--seconds", "1", "--poll", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert [row[0] for row in table_rows(text, "promote") + table_rows(text, "rollback")] == ["promote", "rollback"]
    assert all(float(row[2]) <= 6 for row in table_rows(text, "promote") + table_rows(text, "rollback")), text
    for row in table_rows(text, "local folder") + table_rows(text, "S3 store"):
        assert float(row[1]) > 0 and row[5] == "0", row
    assert re.search(r"\| s3 \(moto, loopback\) \| 5 \| 6 \|", text), text


def test_isolation_benchmark_measures_both_ways(tmp_path):
    """A user model called in the worker's process and in its own, a few calls each."""
    out = tmp_path / "isolation.md"
    done = run_script("benchmarks/isolation.py", "--calls", "50", "--rounds", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    rows = table_rows(out.read_text(), "in")
    assert [row[0] for row in rows] == ["in the worker's process", "in its own process"]
    assert all(float(row[1]) > 0 for row in rows), rows


def test_monitoring_pinned_harness_compares_three_servers(tmp_path):
    """One generation of the log's cost benchmark: the three servers answer and every ratio is worked out."""
    out = tmp_path / "monitoring.md"
    done = run_script("benchmarks/monitoring.py", "--pinned", "--generations", "1", "--sets", "2", "--seconds", "1",
                      "--records", "300", "--prefill", "2000", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    for title in ("prediction log off", "log on, in the database (SQLite)", "log on, as Parquet files"):
        rates = table_rows(text, title)[0][1].split(", ")
        assert len(rates) == 2 and all(float(rate) > 0 for rate in rates), text
    for sink in ("database", "parquet"):
        throughput, cpu = table_rows(text, sink)[0][1:3]
        assert re.fullmatch(r"[\d.]+ \([\d.]+-[\d.]+\)", throughput) and re.fullmatch(r"[\d.]+ \([\d.]+-[\d.]+\)", cpu)
    assert re.search(r"drift alone \(every feature and the predictions\) \| [\d.]+ \|", text), text


def test_monitoring_together_harness_loads_three_servers_at_once(tmp_path):
    """One round of the servers loaded together: each answers, and both logs' cost ratios are worked out."""
    out = tmp_path / "together.md"
    done = run_script("benchmarks/monitoring.py", "--together", "--rounds", "1", "--seconds", "2", "--records", "300",
                      "--prefill", "2000", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    for title in ("prediction log off", "log on, in the database (SQLite)", "log on, as Parquet files"):
        rates, cpu = table_rows(text, title)[0][1:3]
        assert float(rates) > 0 and float(cpu) > 0, text
    for sink in ("database", "parquet"):
        figures = table_rows(text, sink)[0][1:4]
        assert all(re.fullmatch(r"[\d.]+ \([\d.]+-[\d.]+\)", figure) for figure in figures), text
    assert "| the server's, in time order |" in text and "--together --rounds 12" in text
