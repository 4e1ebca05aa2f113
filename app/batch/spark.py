"""Any registered model over a Spark DataFrame: Spark's own predict_batch_udf around the model interface.

The model comes from a shared store (s3://, gs://, file://: each Python worker fetches
the pinned version into its machine's cache once, verified) or from a folder readable by
every executor at the same path. Each Python worker loads and hash-verifies the model once (predict_batch_udf caches it) with one
ONNX Runtime thread: Spark already runs a task per core, and ``OMP_NUM_THREADS`` does
not reach ONNX Runtime, so more threads per task would oversubscribe the cores.
"""
from __future__ import annotations

import base64

import numpy as np

from app.batch.core import find_manifest, input_kind, load_model, result_columns, score_items
from app.batch.files import TEXT_COLUMNS


def result_schema(columns: list[str]):
    """The struct the UDF returns: text columns as strings, the rest as doubles."""
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    return StructType([StructField(c, StringType() if c in TEXT_COLUMNS else DoubleType()) for c in columns])


def items_of(kind: str, column: np.ndarray) -> list:
    """A batch as the model takes it: image bytes (sent base64, Spark's UDF has no binary input), text or rows."""
    if kind == "image":
        return [base64.b64decode(value) for value in column]
    if kind == "text":
        return ["" if value is None else str(value) for value in column]
    return [list(map(float, row)) for row in column]


def model_udf(model_dir: str, name: str, version: str | None = None, batch_size: int = 64):
    """A pandas UDF returning the model's result struct for one input column (see ``input_column``)."""
    from pyspark.ml.functions import predict_batch_udf

    manifest = find_manifest(model_dir, name, version)  # on the driver: fail early, and pin the version
    columns, kind = result_columns(manifest), input_kind(manifest)
    model_dir, version = str(model_dir), manifest.version

    def make_predict_fn():
        model = load_model(model_dir, name, version, batch_size, onnx_threads=1)

        def predict(inputs: np.ndarray) -> dict[str, np.ndarray]:
            rows = score_items(model, items_of(kind, inputs))
            # Columns of objects, so that a refused item's missing values stay null (not NaN).
            return {c: np.array([row.get(c) for row in rows], dtype=object) for c in columns}

        return predict

    width = manifest.inputs[0].shape[-1] if kind == "numbers" else None
    return predict_batch_udf(make_predict_fn, return_type=result_schema(columns), batch_size=batch_size,
                             input_tensor_shapes=[[width]] if width else None)


def input_column(kind: str, columns: list[str]):
    """The one column the UDF reads: base64 of the image bytes, the text, or the feature columns as an array."""
    from pyspark.sql import functions as F

    if kind == "image":
        return F.base64(F.col("content"))
    if kind == "text":
        return F.col(columns[0])
    return F.array(*[F.col(c).cast("double") for c in columns])
