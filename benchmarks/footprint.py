"""Install size of the serving requirements and RSS per gunicorn worker after loading.

Usage: python benchmarks/footprint.py [--venv /tmp/serving-venv]
Creates (or reuses) a virtual environment with requirements.txt only, reports
the size of its site-packages, then starts `gunicorn main:app` from it and
reads each worker's resident memory once /health/ready answers 200.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def dir_size(path: Path) -> int:
    """Bytes of every file below path."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def rss_kib(pid: int) -> int:
    """Resident set size of a process, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    """Direct child pids (the gunicorn workers)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def main() -> None:
    """Build the venv if needed, print sizes and RSS."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--venv", default="/tmp/modelserve-serving-venv")
    args = parser.parse_args()
    venv = Path(args.venv)
    if not (venv / "bin" / "gunicorn").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([venv / "bin" / "pip", "install", "-q", "-r", ROOT / "requirements.txt"], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    models = dir_size(ROOT / "saved_models")
    print(f"serving site-packages: {dir_size(site) / 1e6:.0f} MB")
    print(f"saved_models/:         {models / 1e6:.0f} MB")

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "WEB_CONCURRENCY": "2",
           "DATABASE_URL": "sqlite:////tmp/modelserve-footprint.db"}
    proc = subprocess.Popen([venv / "bin" / "gunicorn", "-c", "gunicorn.conf.py", "main:app"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = time.monotonic()
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
            if time.monotonic() - started > 120:
                raise SystemExit("server never became ready")
        ready_after = time.monotonic() - started
        time.sleep(2)  # both workers finish loading
        for _ in range(20):
            urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{port}/review", data=b"review=a+fine+film", method="POST"), timeout=5).read()
        workers = children(proc.pid)
        print(f"start to ready:        {ready_after:.2f} s")
        print(f"master RSS:            {rss_kib(proc.pid) / 1024:.0f} MiB")
        for pid in workers:
            print(f"worker {pid} RSS:      {rss_kib(pid) / 1024:.0f} MiB")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
