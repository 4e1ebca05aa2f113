"""`flask score`: a dataset through one model on this machine, in batches, resumable."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterator

from app.batch.core import ERROR, ScoringError, input_kind, result_columns, score_items, table_columns_for
from app.batch.files import (KEY, ResumableWriter, SourceError, image_files, open_binary, open_table, read_images,
                             read_table, table_columns, table_format)
from app.models.base import Model


@dataclass
class Summary:
    """What a run did."""

    scored: int
    errors: int
    skipped: int
    seconds: float

    @property
    def rate(self) -> float:
        """Items scored per second."""
        return self.scored / self.seconds if self.seconds else 0.0


def read_items(model: Model, source: Path, columns: list[str] | None, key: str | None) -> Iterator[tuple[str, object]]:
    """(key, item) of the input: images of a folder, or rows of a table."""
    kind = input_kind(model)
    if source.is_dir():
        if kind != "image":
            raise ScoringError(f"model {model.name!r} takes {kind}, not images: give a CSV or Parquet table")
        return read_images(source)
    if kind == "image":
        raise ScoringError(f"model {model.name!r} takes images: give a folder of PNG or JPEG files")
    columns = columns or table_columns_for(model, table_columns(source), str(source))
    if key:
        columns = [c for c in columns if c != key]
    return read_table(source, kind, columns, key)


def batches(pairs: Iterator[tuple[str, object]], size: int, skip: set[str]) -> Iterator[list[tuple[str, object]]]:
    """Lists of up to ``size`` (key, item) pairs whose key is not in ``skip``."""
    pending = (pair for pair in pairs if pair[0] not in skip)
    while chunk := list(islice(pending, size)):
        yield chunk


def score_dataset(model: Model, source: Path, output: Path, batch_size: int = 64, columns: list[str] | None = None,
                  key: str | None = None, progress: bool = True) -> Summary:
    """Score every item of ``source`` into ``output`` (CSV or Parquet); resumes an interrupted run."""
    writer = ResumableWriter(output, ["model", "version", *result_columns(model.manifest)],
                             scored_by={"model": model.name, "version": model.version})
    pairs = read_items(model, source, columns, key)
    bar = progress_bar(progress, len(writer.done), item_count(source) if progress else None)
    scored = errors = 0
    started = time.perf_counter()
    for chunk in batches(pairs, batch_size, writer.done):
        rows = score_items(model, [item for _, item in chunk])
        for (item_key, _), row in zip(chunk, rows):
            row.update({KEY: item_key, "model": model.name, "version": model.version})
        writer.write(rows)
        scored += len(rows)
        errors += sum(1 for row in rows if row.get(ERROR))
        bar.update(len(rows))
    writer.finish()
    bar.close()
    return Summary(scored, errors, len(writer.done), time.perf_counter() - started)


def item_count(source: Path) -> int | None:
    """How many items ``source`` holds, for the bar's total and ETA: images in the folder, rows of a table
    (a Parquet file's metadata, a CSV's records); None where they cannot be counted."""
    if source.is_dir():
        return len(image_files(source))
    try:
        if table_format(source) == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(source).metadata.num_rows
        with open_binary(source) as handle:
            return sum(1 for _ in open_table(handle, "csv", str(source))[1])
    except (SourceError, OSError):
        return None


def progress_bar(enabled: bool, already: int, total: int | None):
    """A tqdm bar with the total, items/s and the time left (a silent stand-in when disabled)."""
    if enabled:
        try:
            from tqdm import tqdm

            return tqdm(unit="item", desc="scoring", total=total, initial=already,
                        postfix={"resumed": already} if already else None)
        except ImportError:
            print("no progress bar: tqdm is not installed (pip install -r requirements-batch.txt)", file=sys.stderr)

    class Silent:
        def update(self, _count):
            pass

        def close(self):
            pass

    return Silent()
