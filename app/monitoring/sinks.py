"""Where the prediction log's rows are kept, and how they are read back.

Two sinks, one interface (the writer in app/monitoring/log.py writes to one; the report, live accuracy
and feedback read through it):

- ``DatabaseSink`` (the default): the ``predictions`` table of the server's database.
- ``ParquetSink`` (MONITOR_PARQUET set): Parquet files in a folder, or under any fsspec URL (``s3://``,
  ``gs://``, ``file://``: the model store's bucket, under a prefix of its own), for volumes a database should
  not hold, and readable as they are by Spark, pandas or DuckDB. Each process gathers rows per model version
  and writes one file when MONITOR_PARQUET_ROLL_SECONDS have passed since its first row (or at a clean stop):
  ``model=NAME/version=V/<first>_<last>_<rows>_<host>-<pid>-<n>.parquet`` (Hive partitions; a file's time span
  and row count are in its name, so a window and the retention read no file they do not need). Rows not yet
  written are read from this process's buffer.

A row is a tuple in COLUMNS order, its time (``created_at``) as ``time.time()`` seconds.
"""
from __future__ import annotations

import datetime as dt
import functools
import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from app.database import aware, predictions, utcnow

COLUMNS = ("model", "version", "created_at", "latency_ms", "protocol", "request_id", "item", "client", "input_digest",
           "features", "label", "score", "payload")
# What a window reads of a row.
WINDOW_COLUMNS = ("version", "created_at", "latency_ms", "features", "label", "score", "input_digest")
FIND_CHUNK = 500  # values per IN (...) when looking answers up in the database
# Rows per INSERT statement: 13 parameters each stay far below SQLite's 32,766 and PostgreSQL's 65,535.
INSERT_ROWS = 512


class SinkFailed(Exception):
    """The sink could not keep some rows: ``lost`` counts them by model."""

    def __init__(self, message: str, lost: dict[str, int]):
        super().__init__(message)
        self.lost = lost


def utc_time(seconds: float) -> dt.datetime:
    """A time.time() reading as an aware UTC datetime."""
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


_second: tuple[int, str] = (-1, "")  # the last whole second stored_time formatted, and its text


def stored_time(seconds: float) -> str:
    """A time.time() reading as SQLAlchemy stores a UTC time in SQLite (text that sorts in time order), for the
    driver's own insert; the text of the whole second is reused while it lasts."""
    global _second
    whole, last = int(seconds), _second
    if last[0] != whole:
        last = _second = (whole, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(whole)))
    return f"{last[1]}.{int((seconds - whole) * 1e6):06d}"


def window_row(row: dict) -> dict[str, Any]:
    """A logged row as a window gives it: its time aware, its features decoded."""
    return {**row, "created_at": aware(row["created_at"]), "features": json.loads(row["features"])}


class DatabaseSink:
    """The ``predictions`` table."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.stamp = stored_time if engine.dialect.name == "sqlite" else utc_time

    def write(self, rows: list[tuple]) -> None:
        """Insert rows in one transaction (raises when the database fails)."""
        with self.engine.begin() as conn:
            for statement, values in self.inserts(rows, "?" if conn.dialect.paramstyle == "qmark" else "%s"):
                conn.exec_driver_sql(statement, values)

    def inserts(self, rows: list[tuple], marker: str):
        """(INSERT with a VALUES list of many rows, its parameters) for the rows, in chunks of 2**k rows (at most
        INSERT_ROWS): one statement executes many rows at once (the driver's executemany steps and releases the GIL
        once per row, which costs the writer more than the row itself), and few chunk sizes keep few statements to
        prepare."""
        stamp, start = self.stamp, 0
        flat = [value for row in rows for value in (*row[:2], stamp(row[2]), *row[3:])]
        while start < len(rows):
            count = min(INSERT_ROWS, 1 << (len(rows) - start).bit_length() - 1)
            yield self.statement(count, marker), tuple(flat[start * len(COLUMNS):(start + count) * len(COLUMNS)])
            start += count

    @staticmethod
    @functools.lru_cache(maxsize=32)
    def statement(count: int, marker: str) -> str:
        one = "(" + ", ".join([marker] * len(COLUMNS)) + ")"
        return f"INSERT INTO predictions ({', '.join(COLUMNS)}) VALUES " + ", ".join([one] * count)

    def tick(self) -> None:
        """Nothing waits to be written here."""

    close = tick

    def enforce_retention(self, retention_seconds: float, max_rows_per_model: int) -> int:
        """Delete rows older than the retention, and the oldest rows of a model beyond its row limit."""
        cutoff = utcnow() - dt.timedelta(seconds=retention_seconds)
        with self.engine.begin() as conn:
            deleted = conn.execute(sa.delete(predictions).where(predictions.c.created_at < cutoff)).rowcount
            for (name,) in conn.execute(sa.select(predictions.c.model).distinct()).all():
                keep_from = conn.execute(
                    sa.select(predictions.c.id).where(predictions.c.model == name).order_by(predictions.c.id.desc())
                    .offset(max_rows_per_model).limit(1)).scalar()
                if keep_from is not None:
                    deleted += conn.execute(sa.delete(predictions).where(predictions.c.model == name,
                                                                         predictions.c.id <= keep_from)).rowcount
        return deleted

    def window(self, model: str, version: str | None, last: int, since: dt.datetime | None) -> list[dict[str, Any]]:
        """The logged rows of a model (one version, or all), newest first: the last ``last``, since ``since``."""
        query = sa.select(*(predictions.c[name] for name in WINDOW_COLUMNS)).where(predictions.c.model == model)
        if version is not None:
            query = query.where(predictions.c.version == str(version))
        if since is not None:
            query = query.where(predictions.c.created_at >= since)
        with self.engine.connect() as conn:
            return [window_row(dict(row._mapping))
                    for row in conn.execute(query.order_by(predictions.c.id.desc()).limit(last))]

    def answers(self, model: str, version: str | None, keys: Iterable[tuple[str, int]]) -> dict[tuple, tuple]:
        """The newest logged answer of the model (one version, or any) to each (request id, item):
        {(request id, item): (version, label)}."""
        wanted, found = set(keys), {}
        ids = sorted({request_id for request_id, _ in wanted})
        with self.engine.connect() as conn:
            for start in range(0, len(ids), FIND_CHUNK):
                query = sa.select(predictions.c.request_id, predictions.c.item, predictions.c.version,
                                  predictions.c.label).where(predictions.c.model == model,
                                                             predictions.c.request_id.in_(ids[start:start + FIND_CHUNK]))
                if version is not None:
                    query = query.where(predictions.c.version == str(version))
                for request_id, item, version_, label in conn.execute(query.order_by(predictions.c.id.desc())):
                    if (request_id, item) in wanted:
                        found.setdefault((request_id, item), (version_, label))
        return found

    def labels_by_digest(self, model: str, version: str, digests: Iterable[str]) -> dict[str, str | None]:
        """The version's logged label for each input digest (a review's text), the newest where it answered twice."""
        wanted, found = sorted(set(digests)), {}
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), FIND_CHUNK):
                for text_digest, label in conn.execute(
                        sa.select(predictions.c.input_digest, predictions.c.label)
                        .where(predictions.c.model == model, predictions.c.version == str(version),
                               predictions.c.input_digest.in_(wanted[start:start + FIND_CHUNK]))
                        .order_by(predictions.c.id.desc())):
                    found.setdefault(text_digest, label)
        return found


def file_time(seconds: float) -> str:
    """A time as it is written in a Parquet file's name (sorts in time order)."""
    return utc_time(seconds).strftime("%Y%m%dT%H%M%S%fZ")


def name_time(text: str) -> float:
    return dt.datetime.strptime(text, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=dt.timezone.utc).timestamp()


class ParquetFile:
    """A written file of the log: where it is, and what its name says of it."""

    def __init__(self, path: str):
        self.path = path
        parts = path.rsplit("/", 3)
        self.model, self.version = parts[-3].partition("=")[2], parts[-2].partition("=")[2]
        first, last, rows, _ = parts[-1].split("_", 3)
        self.first, self.last, self.rows = name_time(first), name_time(last), int(rows)

    @classmethod
    def named(cls, path: str) -> "ParquetFile | None":
        """The log's file at ``path``; None for anything else there (a file being written, someone else's)."""
        if not path.endswith(".parquet") or path.rsplit("/", 1)[-1].startswith("."):
            return None
        try:
            return cls(path)
        except (ValueError, IndexError):
            return None


class ParquetSink:
    """Parquet files under a folder or URL; rows gather per model version in this process before a file is written."""

    def __init__(self, url: str, roll_seconds: float = 60.0, max_buffered_rows: int = 100_000):
        """Open the file system (no request yet; the settings checked that pyarrow and fsspec are installed)."""
        import fsspec.core

        from app.models.store import default_options

        self.url = url.rstrip("/")
        self.fs, self.base = fsspec.core.url_to_fs(self.url, **default_options(self.url))
        self.base = self.base.rstrip("/")
        self.local = "file" in self.fs.protocol
        self.roll_seconds, self.max_buffered_rows = roll_seconds, max_buffered_rows
        self.buffer: dict[tuple[str, str], list[tuple]] = {}
        self.started: dict[tuple[str, str], float] = {}  # when each buffer took its first row (monotonic)
        self.lock = threading.Lock()  # the writer fills the buffers while a report reads them
        self.written = 0

    # -- writing --------------------------------------------------------------------------------

    def write(self, rows: list[tuple]) -> None:
        """Add rows to their versions' buffers (written by ``tick``)."""
        with self.lock:
            for row in rows:
                key = (row[0], row[1])
                if key not in self.buffer:
                    self.buffer[key], self.started[key] = [], time.monotonic()
                self.buffer[key].append(row)

    def tick(self) -> None:
        """Write every buffer that has waited its time or holds its most."""
        now = time.monotonic()
        self.roll_all([key for key, began in list(self.started.items())
                       if now - began >= self.roll_seconds or len(self.buffer.get(key, ())) >= self.max_buffered_rows])

    def close(self) -> None:
        """Write every buffer now (a clean stop, a test)."""
        self.roll_all(list(self.buffer))

    def roll_all(self, keys: list[tuple[str, str]]) -> None:
        """Write these buffers, each as one file; SinkFailed counts the rows of those that could not be written
        (they are not kept for a retry: the log must not grow without bound while its store is away)."""
        lost: dict[str, int] = {}
        problem = None
        for key in keys:
            with self.lock:
                rows = self.buffer.pop(key, [])
                self.started.pop(key, None)
            try:
                self.roll(key, rows)
            except Exception as exc:  # the file system, the network, the bucket's permissions
                lost[key[0]] = lost.get(key[0], 0) + len(rows)
                problem = exc
        if lost:
            raise SinkFailed(f"{type(problem).__name__}: {problem}", lost)

    def roll(self, key: tuple[str, str], rows: list[tuple]) -> None:
        """Write one version's rows as one file."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not rows:
            return
        columns = dict(zip(COLUMNS, zip(*rows)))
        columns["created_at"] = [int(seconds * 1e6) for seconds in columns["created_at"]]
        types = stored_types()
        table = pa.table({name: pa.array(values, type=types[name]) for name, values in columns.items() if name in types})
        self.written += 1
        stamps = columns["created_at"]
        name = (f"{file_time(min(stamps) / 1e6)}_{file_time(max(stamps) / 1e6)}_{len(rows)}_"
                f"{socket.gethostname()}-{os.getpid()}-{self.written}.parquet")
        folder = f"{self.base}/model={key[0]}/version={key[1]}"
        self.fs.makedirs(folder, exist_ok=True)
        # A local file is written under a temporary name and renamed, so that a reader never opens half a file;
        # an object store's PUT is whole already.
        target = f"{folder}/{name}"
        partial = f"{folder}/.{name}.partial" if self.local else target
        with self.fs.open(partial, "wb") as out:
            pq.write_table(table, out)
        if partial != target:
            self.fs.mv(partial, target)

    # -- reading --------------------------------------------------------------------------------

    def files(self, model: str | None = None, version: str | None = None) -> list[ParquetFile]:
        """The written files (of a model, of one version), newest first."""
        folder = self.base + (f"/model={model}" if model else "") + (f"/version={version}" if version else "")
        self.fs.invalidate_cache(folder)
        try:
            paths = self.fs.find(folder)
        except FileNotFoundError:
            return []
        found = [file for file in map(ParquetFile.named, paths) if file is not None]
        return sorted(found, key=lambda file: (file.last, file.path), reverse=True)

    def read(self, file: ParquetFile, columns: Iterable[str]) -> list[dict]:
        """A file's rows (the columns asked for, and its version), [] when it was deleted meanwhile."""
        import pyarrow.parquet as pq

        try:
            with self.fs.open(file.path, "rb") as source:
                rows = pq.read_table(source, columns=[name for name in columns if name != "version"]).to_pylist()
        except FileNotFoundError:
            return []
        for row in rows:
            row["version"] = file.version
        return rows

    def buffered(self, model: str, version: str | None) -> list[dict]:
        """This process's rows of the model not yet written, as dicts."""
        with self.lock:
            rows = [row for key, rows in self.buffer.items() if key[0] == model and version in (None, key[1])
                    for row in rows]
        return [{**dict(zip(COLUMNS, row)), "created_at": utc_time(row[2])} for row in rows]

    def window(self, model: str, version: str | None, last: int, since: dt.datetime | None) -> list[dict[str, Any]]:
        """The logged rows of a model (one version, or all), newest first: the last ``last``, since ``since``.
        Files are read newest first, until the next could hold no row of the window."""
        rows = self.buffered(model, version)
        for file in self.files(model, version):
            if since is not None and file.last < since.timestamp():
                break
            if len(rows) >= last:
                rows.sort(key=lambda row: row["created_at"], reverse=True)
                del rows[last:]
                if file.last < rows[-1]["created_at"].timestamp():
                    break
            rows.extend(self.read(file, WINDOW_COLUMNS))
        rows.sort(key=lambda row: row["created_at"], reverse=True)
        return [window_row({name: row[name] for name in WINDOW_COLUMNS}) for row in rows[:last]
                if since is None or row["created_at"] >= since]

    def newest_rows(self, model: str, version: str | None, columns: tuple[str, ...], key, wanted: set) -> dict:
        """The newest row of the model (one version, or any) for each wanted ``key(row)``: this process's buffer
        first, then the files newest first, until every wanted key is found."""
        found: dict = {}
        files = (self.read(file, columns) for file in self.files(model, version))  # read one at a time, as needed
        for rows in itertools.chain([self.buffered(model, version)], files):
            for row in sorted(rows, key=lambda row: row["created_at"], reverse=True):
                if key(row) in wanted:
                    found.setdefault(key(row), row)
            if len(found) == len(wanted):
                break
        return found

    def answers(self, model: str, version: str | None, keys: Iterable[tuple[str, int]]) -> dict[tuple, tuple]:
        """The newest logged answer of the model (one version, or any) to each (request id, item):
        {(request id, item): (version, label)}."""
        found = self.newest_rows(model, version, ("request_id", "item", "label", "created_at"),
                                 lambda row: (row["request_id"], row["item"]), set(keys))
        return {key: (row["version"], row["label"]) for key, row in found.items()}

    def labels_by_digest(self, model: str, version: str, digests: Iterable[str]) -> dict[str, str | None]:
        """The version's logged label for each input digest (a review's text), the newest where it answered twice."""
        found = self.newest_rows(model, version, ("input_digest", "label", "created_at"),
                                 lambda row: row["input_digest"], set(digests))
        return {text_digest: row["label"] for text_digest, row in found.items()}

    # -- retention ------------------------------------------------------------------------------

    def enforce_retention(self, retention_seconds: float, max_rows_per_model: int) -> int:
        """Delete the files whose every row is older than the retention, and a model's oldest files once its newer
        ones hold its row limit; the rows deleted."""
        cutoff, deleted, kept = time.time() - retention_seconds, 0, {}
        for file in self.files():
            kept[file.model] = kept.get(file.model, 0)
            if file.last < cutoff or kept[file.model] >= max_rows_per_model:
                try:
                    self.fs.rm_file(file.path)
                    deleted += file.rows
                except FileNotFoundError:  # another instance deleted it first
                    pass
            else:
                kept[file.model] += file.rows
        return deleted


def stored_types() -> dict:
    """The Parquet type of each stored column (model and version are the file's folders)."""
    import pyarrow as pa

    return {"created_at": pa.timestamp("us", tz="UTC"), "latency_ms": pa.float64(), "protocol": pa.string(),
            "request_id": pa.string(), "item": pa.int32(), "client": pa.string(), "input_digest": pa.string(),
            "features": pa.string(), "label": pa.string(), "score": pa.float64(), "payload": pa.binary()}
