"""`python -m app.worker --server URL --token T [--model NAME ...]`: the built-in pull worker."""
from __future__ import annotations

import argparse
import logging

from app.auth import local_worker_token
from app.config import load_settings
from app.jobs.pull import Server, run_worker
from app.models.registry import ModelRegistry, StoreWatcher, runtime_options
from app.models.store import LocalStore, open_store


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the worker loop."""
    parser = argparse.ArgumentParser(description="Pull jobs from a modelserve server and run them on local models.")
    parser.add_argument("--server", required=True, help="base URL of the server, e.g. http://host:8000")
    parser.add_argument("--token", default="",
                        help="worker bearer token (default: MODELSERVE_WORKER_TOKEN, else the token file of a server "
                             "on this machine)")
    parser.add_argument("--model", action="append", dest="models", help="model to serve (repeatable; default: all)")
    parser.add_argument("--model-dir", default=None, help="model folder (default: the MODEL_STORE setting, else MODEL_DIR)")
    parser.add_argument("--wait", type=float, default=20, help="long-poll seconds per lease request")
    parser.add_argument("--max-jobs", type=int, default=None, help="stop after this many jobs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()  # the server's settings, without an app
    store = LocalStore(args.model_dir) if args.model_dir else open_store(settings)
    registry = ModelRegistry(store, set(args.models) if args.models else None, runtime_options(settings))
    if settings.model_poll_seconds:
        registry.load_all()
        StoreWatcher(registry, settings.model_poll_seconds).start()
    run_worker(Server(args.server, args.token or local_worker_token(settings)), registry, args.models, args.wait,
               args.max_jobs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
