"""`spark-submit` entry point: score a folder of images or a CSV/Parquet table with any registered model.

    python -m app.batch.spark_score --model malaria_cell --input cells/ --output scores.parquet
    spark-submit --master yarn --py-files modelserve.zip app/batch/spark_score.py --model ... --model-dir /shared/models

Writes Parquet with the same columns as `flask score`: key (path relative to the input
folder, or the row number / --key column), model, version, the model's result columns, error.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file by spark-submit: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from app.batch.core import default_store, find_manifest, input_kind, result_columns, table_columns_for  # noqa: E402
from app.batch.files import IMAGE_SUFFIXES, KEY, table_format  # noqa: E402
from app.batch.spark import input_column, model_udf  # noqa: E402


# What a Python worker needs to read a shared model store, passed on from the driver when it is set.
STORE_SETTINGS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
                  "AWS_ENDPOINT_URL", "AWS_PROFILE", "GOOGLE_APPLICATION_CREDENTIALS", "MODELSERVE_MODEL_CACHE")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", required=True, help="folder of images, or a .csv / .parquet table")
    parser.add_argument("--output", required=True, help="Parquet output (a folder, as Spark writes it)")
    parser.add_argument("--model-dir", default=default_store(),
                        help="model folder, or a shared store's URL (s3://, gs://, file://; default: MODELSERVE_MODEL_STORE, "
                             "else saved_models)")
    parser.add_argument("-V", "--model-version", "--version", dest="version", default=None,
                        help="default: the one the server serves")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--column", action="append", dest="columns", help="text column or feature columns")
    parser.add_argument("--key", default=None, help="column that identifies a row (default: the row number)")
    parser.add_argument("--master", default=None, help="e.g. local[2] (default: what spark-submit says, else local[*])")
    return parser.parse_args(argv)


def read_input(spark, args, manifest):
    """(DataFrame with a `key` column, the columns the model reads)."""
    from pyspark.sql import functions as F

    source, kind = args.input, input_kind(manifest)
    if kind == "image":
        frame = (spark.read.format("binaryFile").option("recursiveFileLookup", "true")
                 .option("pathGlobFilter", "*.{" + ",".join(s.lstrip(".") for s in IMAGE_SUFFIXES) + "}").load(source))
        prefix = Path(source).resolve().as_uri().replace("file:///", "file:/").rstrip("/") + "/" \
            if "://" not in source else source.rstrip("/") + "/"
        key = F.when(F.col("path").startswith(prefix), F.expr(f"substring(path, {len(prefix) + 1})")).otherwise(F.col("path"))
        return frame.withColumn(KEY, key), ["content"]
    if table_format(Path(source)) == "csv":
        frame = spark.read.option("header", "true").option("multiLine", "true").option("escape", '"').csv(source)
    else:
        frame = spark.read.parquet(source)
    columns = args.columns or [c for c in table_columns_for(manifest, frame.columns, source) if c != args.key]
    if args.key:
        return frame.withColumn(KEY, F.col(args.key).cast("string")), columns
    # The row number in file order, as `flask score` numbers rows.
    numbered = frame.rdd.zipWithIndex().map(lambda pair: (*pair[0], str(pair[1])))
    return numbered.toDF([*frame.columns, KEY]), columns


def main(argv: list[str] | None = None) -> int:
    """Read, score with the UDF, write Parquet."""
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    args = parse_args(argv)
    # Local mode: the Python workers use this interpreter (with this project's packages), not
    # whatever `python3` is first on the PATH. A cluster sets PYSPARK_PYTHON itself.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(f"modelserve-score-{args.model}")
    if args.master:
        builder = builder.master(args.master)
    if "://" in str(args.model_dir):
        # The executors' Python workers fetch the model from the store themselves: they need the driver's
        # store settings (Spark redacts the secret ones in its UI). Roles and workload identity need none.
        for name in STORE_SETTINGS:
            if os.environ.get(name):
                builder = builder.config(f"spark.executorEnv.{name}", os.environ[name])
    spark = builder.getOrCreate()
    manifest = find_manifest(args.model_dir, args.model, args.version)
    kind = input_kind(manifest)
    frame, columns = read_input(spark, args, manifest)
    udf = model_udf(args.model_dir, args.model, manifest.version, args.batch_size)
    scored = frame.withColumn("result", udf(input_column(kind, columns)))
    out = scored.select(F.col(KEY), F.lit(manifest.name).alias("model"), F.lit(manifest.version).alias("version"),
                        *[F.col(f"result.{c}").alias(c) for c in result_columns(manifest)])
    out.write.mode("overwrite").parquet(args.output)
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
