"""Score a folder of images or a CSV/Parquet table with any registered model in an Apache Beam pipeline.

    python -m app.batch.beam_score review_sentiment reviews.csv scores.parquet --column text
    python -m app.batch.beam_score malaria_cell gs://bucket/cells/ gs://bucket/scores.parquet \\
        --model-store gs://bucket/models --runner DataflowRunner --project P --region R \\
        --temp_location gs://bucket/tmp --sdk_container_image IMAGE    (see docs/batch.md)

Writes OUTPUT (.csv or .parquet, one file) with the columns `flask score` writes: key (the
path inside the input folder, the row number or the --key column), model, version, the
model's result columns and error. Rows come in no particular order: join on key. Options
this command does not know (--runner, --project, ...) go to Beam; the default runner is
Beam's DirectRunner on this machine.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.batch.beam import ModelserveModelHandler  # first: it quiets Beam's import-time noise

import apache_beam as beam  # noqa: E402
from apache_beam.io import fileio  # noqa: E402
from apache_beam.io.filesystems import FileSystems  # noqa: E402
from apache_beam.metrics import Metrics  # noqa: E402
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from app.batch.core import ERROR, ScoringError, flat_row, input_kind, result_columns, table_columns_for  # noqa: E402
from app.batch.files import (IMAGE_SUFFIXES, KEY, SourceError, arrow_schema, check_columns,  # noqa: E402
                             csv_line, open_table, table_format, table_items, typed_row)
from app.models.base import Manifest  # noqa: E402

GLOB = set("*?[")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """This command's options, and the rest for Beam."""
    parser = argparse.ArgumentParser(prog="python -m app.batch.beam_score", description=__doc__.splitlines()[0],
                                     epilog="Example: python -m app.batch.beam_score review_sentiment reviews.csv "
                                            "scores.parquet --column text --key id")
    parser.add_argument("model")
    parser.add_argument("input", help="a folder of PNG/JPEG images, or a .csv (.csv.gz) / .parquet table "
                                      "(a file pattern reads several; local paths or any file system Beam has)")
    parser.add_argument("output", help="a .csv or .parquet file")
    parser.add_argument("-V", "--model-version", default=None, help="default: the one the server serves")
    parser.add_argument("--model-store", default=None,
                        help="model folder or shared store URL (default: MODELSERVE_MODEL_STORE, else saved_models)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the model's max_batch_size")
    parser.add_argument("--column", action="append", dest="columns", help="text column or feature columns")
    parser.add_argument("--key", default=None, help="column that identifies a row (default: the row number)")
    args, beam_args = parser.parse_known_args(argv)
    if not any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
        beam_args.append("--runner=DirectRunner")
    return args, beam_args


def local_or_url(path: str) -> str:
    """A local path made absolute (Beam's file matches name files by absolute path); a URL as given."""
    return path if "://" in path else str(Path(path).resolve())


def read_images(pipeline, folder: str):
    """(path inside the folder, bytes) of every PNG or JPEG under ``folder``."""
    base = folder.rstrip("/") + "/"
    return (pipeline
            | "find images" >> fileio.MatchFiles(base + "**")
            | "images only" >> beam.Filter(lambda meta: meta.path.lower().endswith(IMAGE_SUFFIXES))
            | "open" >> fileio.ReadMatches()
            | "read" >> beam.Map(lambda readable: (readable.metadata.path[len(base):], readable.read())))


def header(pattern: str) -> list[str]:
    """The column names of the first table ``pattern`` matches (read here, before the pipeline starts)."""
    matches = FileSystems.match([pattern])[0].metadata_list
    if not matches:
        raise ScoringError(f"{pattern}: no such file")
    path = sorted(m.path for m in matches)[0]
    with FileSystems.open(path) as handle:
        return open_table(handle, table_format(Path(path)), path)[0]


def file_rows(readable, kind: str, columns: list[str], key: str | None, prefixed: bool):
    """(key, item) per row of one matched table file; with several files, keys are "file name:row"."""
    path = readable.metadata.path
    with readable.open(mime_type="application/octet-stream") as handle:
        for item_key, item in table_items(handle, table_format(Path(path)), path, kind, columns, key):
            yield (f"{Path(path).name}:{item_key}" if prefixed else item_key), item


def read_rows(pipeline, pattern: str, manifest: Manifest, columns: list[str] | None, key: str | None):
    """(key, item) per row of the tables ``pattern`` names."""
    names = header(pattern)
    columns = [c for c in columns or table_columns_for(manifest, names, pattern) if c != key]
    check_columns(names, columns, key, pattern)
    return (pipeline
            | "find tables" >> fileio.MatchFiles(pattern)
            | "open" >> fileio.ReadMatches()
            | "read rows" >> beam.FlatMap(file_rows, input_kind(manifest), columns, key, bool(GLOB & set(pattern))))


def result_row(keyed, name: str, version: str) -> dict:
    """One output row from (key, PredictionResult)."""
    item_key, prediction = keyed
    row = {KEY: item_key, "model": name, "version": version, **flat_row(prediction.inference)}
    if row.get(ERROR):
        Metrics.counter("modelserve", "errors").inc()
    Metrics.counter("modelserve", "scored").inc()
    return row


def write(rows, output: str, columns: list[str]):
    """One CSV or Parquet file at ``output`` (Beam writes it under a temporary name, then renames it)."""
    if table_format(Path(output)) == "csv":
        return (rows | "as CSV" >> beam.Map(csv_line, columns)
                | "write" >> beam.io.WriteToText(output, num_shards=1, shard_name_template="",
                                                 header=csv_line({c: c for c in columns}, columns)))
    return (rows | "typed" >> beam.Map(typed_row, columns)
            | "write" >> beam.io.WriteToParquet(output, arrow_schema(columns), num_shards=1, shard_name_template=""))


def build(pipeline, handler: ModelserveModelHandler, source: str, output: str, columns: list[str] | None = None,
          key: str | None = None) -> None:
    """Read, score, write: the whole pipeline."""
    manifest = handler.manifest
    if input_kind(manifest) == "image":
        items = read_images(pipeline, source)
    else:
        items = read_rows(pipeline, source, manifest, columns, key)
    rows = (items
            | "score" >> RunInference(KeyedModelHandler(handler))
            | "result rows" >> beam.Map(result_row, handler.name, handler.version))
    write(rows, output, [KEY, "model", "version", *result_columns(manifest)])


def counter(result, name: str) -> int:
    """A counter of the finished pipeline (0 where the runner reports none)."""
    found = result.metrics().query(beam.metrics.MetricsFilter().with_namespace("modelserve").with_name(name))
    return sum(c.committed or 0 for c in found["counters"])


def main(argv: list[str] | None = None) -> int:
    """Run the pipeline and say what it did."""
    args, beam_args = parse_args(argv)
    try:
        source, output = local_or_url(args.input), local_or_url(args.output)
        handler = ModelserveModelHandler(args.model, args.model_version, args.model_store, args.batch_size)
        kind = input_kind(handler.manifest)
        if "://" not in source and Path(source).is_dir() != (kind == "image"):
            raise ScoringError(f"model {args.model!r} takes {kind}: give "
                               + ("a folder of PNG or JPEG files" if kind == "image" else "a CSV or Parquet table"))
        table_format(Path(output))
        pipeline = beam.Pipeline(options=PipelineOptions(beam_args))
        build(pipeline, handler, source, output, args.columns, args.key)
        result = pipeline.run()
        result.wait_until_finish()
    except (ScoringError, SourceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    scored, errors = counter(result, "scored"), counter(result, "errors")
    print(f"{scored} items scored by {handler.name} v{handler.version} into {args.output}; "
          f"{errors} {'error' if errors == 1 else 'errors'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
