"""Reading a dataset (a folder of images, a CSV or Parquet table) and writing resumable results.

Results go to ``OUTPUT.partial/`` one part file per chunk as they are scored; the
finished run joins the parts into OUTPUT and removes the folder. A run that was
interrupted leaves the folder behind: the same command again skips every key
already in it and scores only the rest.
"""
from __future__ import annotations

import csv
import importlib.util
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
KEY = "key"
# Result columns that hold text; every other one holds a number (a probability, a score).
TEXT_COLUMNS = (KEY, "label", "error", "model", "version")


class SourceError(ValueError):
    """The input cannot be read as asked (unknown format, missing column, a malformed CSV)."""


@dataclass(frozen=True)
class BadItem:
    """A row that cannot be an item (bytes that are not UTF-8, a cell of the wrong type): scored as its error."""

    reason: str


def table_format(path: Path) -> str:
    """"csv" or "parquet", from the file name (.csv, .csv.gz, .parquet)."""
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        if importlib.util.find_spec("pyarrow") is None:
            raise SourceError(f"{path}: Parquet needs pyarrow, which this environment lacks: "
                              "pip install -r requirements-batch.txt")
        return "parquet"
    raise SourceError(f"{path}: use a folder of images, a .csv (.csv.gz) or a .parquet file")


def image_files(folder: Path) -> list[Path]:
    """Every PNG or JPEG under ``folder``, in a stable order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_images(folder: Path) -> Iterator[tuple[str, bytes]]:
    """(path relative to the folder, file bytes) of every image."""
    for path in image_files(folder):
        yield path.relative_to(folder).as_posix(), path.read_bytes()


def open_binary(path: Path) -> BinaryIO:
    """A table file opened as bytes, a .gz one decompressed."""
    import gzip

    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def open_table(handle: BinaryIO, fmt: str, name: str) -> tuple[list[str], Iterator[dict]]:
    """(column names, rows as dicts, streamed) of a CSV or Parquet table read from ``handle`` (bytes, not
    compressed); ``name`` says where it came from in errors."""
    if fmt == "csv":
        csv.field_size_limit(1 << 30)  # no limit on a cell's size
        # Bytes that are not UTF-8 (a Latin-1 row) are kept as surrogates, so that their row, not the run, fails.
        reader = csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8", errors="surrogateescape", newline=""),
                                strict=True)
        return list(reader.fieldnames or []), csv_rows(reader, name)
    import pyarrow.parquet as pq

    table = pq.ParquetFile(handle)
    return table.schema_arrow.names, (row for batch in table.iter_batches(batch_size=4096) for row in batch.to_pylist())


def csv_rows(reader: csv.DictReader, name: str) -> Iterator[dict]:
    """The rows of a CSV reader; a malformed file stops with the line it was at."""
    try:
        yield from reader
    except csv.Error as exc:  # an unterminated quote would otherwise merge rows without a word
        raise SourceError(f"{name}, line {reader.line_num}: not a well-formed CSV ({exc}); the rows before "
                          "it are scored and kept: fix the file and run the same command again") from None


def table_columns(path: Path) -> list[str]:
    """The column names of a table (its header)."""
    with open_binary(path) as handle:
        return open_table(handle, table_format(path), str(path))[0]


def read_table(path: Path, kind: str, columns: list[str], key: str | None) -> Iterator[tuple[str, object]]:
    """(key, item) per row of a table file: the text of one column, or the numbers of the feature columns."""
    with open_binary(path) as handle:
        yield from table_items(handle, table_format(path), str(path), kind, columns, key)


def table_items(handle: BinaryIO, fmt: str, name: str, kind: str, columns: list[str],
                key: str | None) -> Iterator[tuple[str, object]]:
    """(key, item) per row of a table read from ``handle``; the key is the ``key`` column, else the row number."""
    names, rows = open_table(handle, fmt, name)
    check_columns(names, columns, key, name)
    for number, row in enumerate(rows):
        item_key = valid_text(str(row[key])) if key else str(number)
        if kind == "text":
            yield item_key, text_item(columns[0], row[columns[0]])
        else:
            values = [number_or_text(c, row[c]) for c in columns]
            yield item_key, next((v for v in values if isinstance(v, BadItem)), values)


def check_columns(names: list[str], columns: list[str], key: str | None, name: str) -> None:
    """SourceError unless the table ``name`` with columns ``names`` has every column asked for."""
    missing = [c for c in [*columns, *([key] if key else [])] if c not in names]
    if missing:
        raise SourceError(f"{name} has no column {missing[0]!r} (columns: {', '.join(names)})")


def valid_text(text: str) -> str:
    """``text`` with bytes that were not UTF-8 shown as U+FFFD (for keys, which are written back)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def text_item(column: str, value):
    """A text cell as the model's item; a cell that is not text, or not UTF-8, as a BadItem."""
    if value is None:
        return ""
    if not isinstance(value, str):
        return BadItem(f"column {column!r} holds {type(value).__name__}, not text")
    if valid_text(value) != value:
        return BadItem(f"column {column!r} is not valid UTF-8 text in this row")
    return value


def number_or_text(column: str, value):
    """A cell as a number when it is one; other text is left to the model to judge; lists, bytes and
    other types are a BadItem (never scored as their Python text)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) or value is None:
        return value
    return BadItem(f"column {column!r} holds {type(value).__name__}, not a number")


class ResumableWriter:
    """Parts in OUTPUT.partial/, joined into OUTPUT by finish(); keys already written are skipped."""

    def __init__(self, output: Path, columns: list[str], rows_per_part: int = 4096, scored_by: dict | None = None):
        """Open (or reopen) the partial folder and learn which keys it holds. ``scored_by`` ({"model": ...,
        "version": ...}): a resumed run must be by the same model version, or the output would mix two."""
        self.output, self.columns, self.rows_per_part = output, [KEY, *columns], rows_per_part
        self.format = table_format(output)
        self.partial = output.with_name(output.name + ".partial")
        self.partial.mkdir(parents=True, exist_ok=True)
        self.parts = sorted(self.partial.glob(f"part-*.{self.format}"))
        rows = [row for part in self.parts for row in self._read(part)]
        if scored_by:
            earlier = {(str(row.get("model")), str(row.get("version"))) for row in rows}
            wanted = (str(scored_by["model"]), str(scored_by["version"]))
            if earlier - {wanted}:
                other = ", ".join(f"{m} v{v}" for m, v in sorted(earlier - {wanted}))
                raise SourceError(f"{self.partial} holds results of {other}; this run scores with {wanted[0]} "
                                  f"v{wanted[1]}: resume with that version (--model-version), or remove the folder to start over")
        self.done = {row[KEY] for row in rows}
        self.pending: list[dict] = []

    def write(self, rows: list[dict]) -> None:
        """Add scored rows (each with its key); a part file is written every rows_per_part rows."""
        self.pending += rows
        if len(self.pending) >= self.rows_per_part:
            self.flush()

    def flush(self) -> None:
        """Write the pending rows as one part file (written under a temporary name, then renamed)."""
        if not self.pending:
            return
        path = self.partial / f"part-{len(self.parts):06d}.{self.format}"
        scratch = path.with_suffix(".tmp")
        self._write(scratch, self.pending)
        os.replace(scratch, path)
        self.parts.append(path)
        self.pending = []

    def finish(self) -> int:
        """Join the parts into OUTPUT (atomically) and remove the partial folder; returns the row count."""
        self.flush()
        rows = [row for part in self.parts for row in self._read(part)]
        scratch = self.output.with_name(self.output.name + ".tmp")
        self._write(scratch, rows)
        os.replace(scratch, self.output)
        shutil.rmtree(self.partial)
        return len(rows)

    def _write(self, path: Path, rows: list[dict]) -> None:
        if self.format == "csv":
            with open(path, "w", encoding="utf-8", newline="") as handle:
                writer = csv.DictWriter(handle, self.columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        typed = [typed_row(row, self.columns) for row in rows]
        pq.write_table(pa.Table.from_pylist(typed, schema=arrow_schema(self.columns)), path)

    def _read(self, path: Path) -> list[dict]:
        if self.format == "csv":
            with open(path, encoding="utf-8", newline="") as handle:
                return list(csv.DictReader(handle))
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()


def typed_row(row: dict, columns: list[str]) -> dict:
    """A result row as written to Parquet: text columns as strings, the rest as floats, blanks as nulls."""
    return {c: None if row.get(c) in (None, "") else (str if c in TEXT_COLUMNS else float)(row[c]) for c in columns}


def arrow_schema(columns: list[str]):
    """The Parquet schema of result rows: text columns as strings, the rest as doubles."""
    import pyarrow as pa

    return pa.schema([(c, pa.string() if c in TEXT_COLUMNS else pa.float64()) for c in columns])


def csv_line(row: dict, columns: list[str]) -> str:
    """One result row as a CSV record (no line end), written as ``ResumableWriter`` writes its rows."""
    buffer = io.StringIO()
    csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="").writerow(row)
    return buffer.getvalue()
