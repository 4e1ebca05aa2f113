"""What running a model in a process of its own costs per call (app/models/isolated.py).

Usage: python benchmarks/isolation.py [--calls 2000] [--out benchmarks/results/isolation.md]

The same small Python-class text model (one input, one label output), called one review at a
time through decode -> predict -> postprocess: in the worker's own process (what the built-in
runtimes do) and in its own process over a pipe (what the `python` runtime does). Rounds
alternate; medians of per-call microseconds.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.loadgen import publish  # noqa: E402

MODEL = '''
import numpy as np

from app.models.base import Model


class Echo(Model):
    """The label "positive" when a text has more "good" than "bad"."""

    INPUTS = [{"name": "text", "datatype": "BYTES", "shape": [-1], "content": "text"}]
    OUTPUTS = [{"name": "label", "datatype": "BYTES", "shape": [-1]}]
    LABELS = ["negative", "positive"]

    def predict(self, batch):
        return {"label": np.array([self.labels[t.count("good") > t.count("bad")] for t in batch["text"]], dtype=object)}
'''


def per_call_us(model, calls: int) -> float:
    """Microseconds per decode -> predict -> postprocess of one review."""
    started = time.perf_counter()
    for _ in range(calls):
        model.postprocess(model.predict(model.decode({"text": ["A good film, not a bad one, a good one."]})))
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    """Measure both ways, alternating, and print (and save) a table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from app import create_app
    from app.models.isolated import IsolatedModel
    from app.models.python import load_python_model
    from app.models.registry import discover

    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / "echo"
        folder.mkdir()
        (folder / "model.py").write_text(MODEL)
        models = Path(work) / "models"
        models.mkdir()
        app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{work}/b.db", "MODEL_DIR": str(models)})
        added = app.test_cli_runner().invoke(args=["models", "add", "echo", str(folder), "--class", "model:Echo"])
        if added.exit_code:
            raise SystemExit(added.output)
        manifest = discover(models)[0]
        in_process = load_python_model(manifest, {})
        in_process.load()
        isolated = IsolatedModel(manifest, {})
        isolated.load()
        timings = {"in the worker's process": [], "in its own process": []}
        for _ in range(args.rounds):
            timings["in the worker's process"].append(per_call_us(in_process, args.calls))
            timings["in its own process"].append(per_call_us(isolated, args.calls))
        isolated.close()
    medians = {k: statistics.median(v) for k, v in timings.items()}
    lines = ["# Isolation of user models", "",
             f"`python benchmarks/isolation.py --calls {args.calls} --rounds {args.rounds}`: one review at a time, "
             "decode -> predict -> postprocess of a small Python-class model; medians of alternating rounds.", "",
             "| where the model runs | us per call (median) | each round |", "| --- | --- | --- |"]
    lines += [f"| {k} | {medians[k]:.0f} | {', '.join(f'{x:.0f}' for x in v)} |" for k, v in timings.items()]
    extra = medians["in its own process"] - medians["in the worker's process"]
    lines += ["", f"Its own process adds {extra:.0f} us per call (three round trips over a pipe, arguments and "
              "results pickled). The built-in runtimes (scikit-learn, ONNX) run no user code and stay in the "
              "worker's process, where a /review costs a few hundred microseconds in all (request_cost.md)."]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
