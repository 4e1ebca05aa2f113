"""Score records as they arrive with any registered model, in an Apache Flink streaming job (PyFlink).

    .venv-flink/bin/python -m app.batch.flink_score review_sentiment --watch incoming/ --output scores/

Records are JSON Lines files dropped into the watched folder (Flink's file source notices
new files; the same records can come from Kafka, see docs/batch.md): one object per line
with a ``key`` (carried to the output) and the model's input: ``text`` for a text model,
``image`` (the PNG or JPEG file, base64) for an image model, ``features`` (a list of
numbers) for a numeric one. Each record is scored alone, as the HTTP server scores one
request, so the answers are the server's to the last digit. Results are JSON Lines part
files in the output folder with the columns `flask score` writes (key, model, version,
the model's result columns, error); Flink commits them at each checkpoint. Ctrl-C (or
SIGTERM) stops the job with a final checkpoint, so that no in-progress file is left.
``--once`` scores the files already there and ends.

Runs in its own environment (`make flink-env`: apache-flink pins numpy, pandas and pyarrow
below the server's), loading the model with the server's own code, hash-verified, once
per Python worker (in ``open()``).
"""
from __future__ import annotations

import argparse
import base64
import json
import signal
import sys
import tempfile
import threading
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pyflink.common import Duration, Encoder, Types, WatermarkStrategy  # noqa: E402
from pyflink.datastream import MapFunction, RuntimeExecutionMode, StreamExecutionEnvironment  # noqa: E402
from pyflink.datastream.connectors.file_system import (BucketAssigner, FileSink, FileSource,  # noqa: E402
                                                       OutputFileConfig, RollingPolicy, StreamFormat)

from app.batch.core import (ERROR, default_store, find_manifest, flat_row, input_kind, load_model,  # noqa: E402
                            result_columns, results)
from app.batch.files import KEY  # noqa: E402
from app.models.base import Manifest  # noqa: E402

PROJECT = Path(__file__).resolve().parents[2]
# The record field that holds each kind of input.
FIELDS = {"text": "text", "image": "image", "numbers": "features"}


class ScoreRecord(MapFunction):
    """One JSON record in, one JSON result row out; the model is loaded once per Python worker."""

    def __init__(self, store: str, manifest: Manifest):
        self.store, self.name, self.version = store, manifest.name, manifest.version
        self.kind, self.columns = input_kind(manifest), [KEY, "model", "version", *result_columns(manifest)]
        self.model = None

    def open(self, runtime_context) -> None:
        """Load and verify the model (Flink calls this in each worker before the first record)."""
        self.model = load_model(self.store, self.name, self.version, batch_size=1, onnx_threads=1)

    def map(self, line: str) -> str:
        """The result row of one record; a record that cannot be read, or that the model refuses, as its error."""
        row = {KEY: None, "model": self.name, "version": self.version}
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("the record is not a JSON object")
            row[KEY] = None if record.get(KEY) is None else str(record[KEY])
            item = self.item(record)
        except ValueError as exc:
            return self.line({**row, ERROR: f"unreadable record: {exc}"})
        return self.line({**row, **flat_row(results(self.model, [item])[0])})

    def line(self, row: dict) -> str:
        """A result row as one JSON line, every column present (null where empty)."""
        return json.dumps({c: row.get(c) for c in self.columns})

    def item(self, record: dict):
        """The model's input from a record: a text, image bytes or a feature list (ValueError if missing)."""
        field = FIELDS[self.kind]
        if field not in record:
            raise ValueError(f"the record has no {field!r} field")
        value = record[field]
        if self.kind == "image":
            if not isinstance(value, str):
                raise ValueError("'image' must be the file's bytes in base64")
            return base64.b64decode(value, validate=True)
        return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m app.batch.flink_score", description=__doc__.splitlines()[0],
                                     epilog="Example: .venv-flink/bin/python -m app.batch.flink_score "
                                            "review_sentiment --watch incoming/ --output scores/")
    parser.add_argument("model")
    parser.add_argument("--watch", required=True, help="folder that JSON Lines files are dropped into")
    parser.add_argument("--output", required=True, help="folder of result part files (JSON Lines)")
    parser.add_argument("-V", "--model-version", default=None, help="default: the one the server serves")
    parser.add_argument("--model-store", default=None,
                        help="model folder or shared store URL (default: MODELSERVE_MODEL_STORE, else saved_models)")
    parser.add_argument("--poll-seconds", type=float, default=1.0, help="how often the folder is listed")
    parser.add_argument("--checkpoint-seconds", type=float, default=2.0,
                        help="how often results are committed (written results appear at checkpoints)")
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument("--once", action="store_true", help="score the files there now, then stop")
    return parser.parse_args(argv)


def build(env: StreamExecutionEnvironment, args: argparse.Namespace) -> None:
    """Source (the watched folder), scoring, sink (the output folder)."""
    store = str(args.model_store or default_store())
    manifest = find_manifest(store, args.model, args.model_version)  # here: fail early, pin the version
    files = FileSource.for_record_stream_format(StreamFormat.text_line_format(), str(Path(args.watch).resolve()))
    if not args.once:
        files = files.monitor_continuously(Duration.of_millis(int(args.poll_seconds * 1000)))
    records = env.from_source(files.build(), WatermarkStrategy.no_watermarks(), "records")
    scored = records.map(ScoreRecord(store, manifest),
                         output_type=Types.STRING()).name(f"score with {manifest.name} v{manifest.version}")
    names = OutputFileConfig.builder().with_part_prefix(f"{manifest.name}-v{manifest.version}") \
        .with_part_suffix(".jsonl").build()
    scored.sink_to(FileSink.for_row_format(str(Path(args.output).resolve()), Encoder.simple_string_encoder())
                   .with_output_file_config(names)
                   .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())
                   .with_rolling_policy(RollingPolicy.on_checkpoint_rolling_policy()).build()).name("results")


def environment(args: argparse.Namespace) -> StreamExecutionEnvironment:
    """A Flink environment whose Python workers run this interpreter with this project importable."""
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_python_executable(sys.executable)
    env.add_python_file(str(PROJECT / "app"))
    env.set_parallelism(args.parallelism)
    if args.once:
        env.set_runtime_mode(RuntimeExecutionMode.BATCH)  # a bounded run: every file is finished at the end
    else:
        env.enable_checkpointing(int(args.checkpoint_seconds * 1000))
    return env


def drain(client, savepoints: str) -> None:
    """Stop the job with a savepoint, draining it first (PyFlink's own wrapper calls a signature Flink 2 no
    longer has: the Java method also takes the savepoint's format)."""
    from pyflink.java_gateway import get_gateway

    canonical = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType.CANONICAL
    client._j_job_client.stopWithSavepoint(True, savepoints, canonical).get()


def main(argv: list[str] | None = None) -> int:
    """Run the job; on SIGINT or SIGTERM stop it with a final savepoint (results committed), then return."""
    args = parse_args(argv)
    env = environment(args)
    build(env, args)
    if args.once:
        env.execute(f"modelserve-score-{args.model}")
        return 0
    client = env.execute_async(f"modelserve-score-{args.model}")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"scoring records dropped into {args.watch} with {args.model}; results in {args.output} "
          "(Ctrl-C stops)", flush=True)
    while not stop.wait(0.5):
        if str(client.get_job_status().result()) in ("FAILED", "CANCELED", "FINISHED"):
            print(f"the job ended: {client.get_job_status().result()}", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory(prefix="modelserve-flink-") as savepoints:
        # Draining ends the source and takes a last checkpoint, which commits every in-progress result file.
        drain(client, Path(savepoints).as_uri())
    print("stopped; every result is committed", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
