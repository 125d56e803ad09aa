"""Arrow twins of clustered copies: a few roots' rows without decoding a Parquet row group.

A clustered copy answers "the rows of root r" by reading the one or two row groups that hold
them, but reading any Parquet row group costs ~0.5–1.5 ms however few rows are wanted (a column
reader per column to set up, every page of the group to decompress and decode). The twin holds
the same rows in the same order as an uncompressed Arrow IPC file of small record batches, with
each batch's first and last key stored in the file's footer: finding a root is a binary search,
and its batches are read from a memory map without a copy or a decode (~0.1 ms for one
neuron's synapses). Any Arrow reader opens it (``pyarrow.ipc.open_file``, ``polars.read_ipc``).

Being uncompressed, a twin takes about as much disk as the table's columns in memory (~120 B
a synapse), as PostgreSQL's heap does; so only tables of at most ``max_rows()`` rows get them
(``OPENCAVE_ARROW_COPY_MAX_ROWS``, default 20 million; 0 for none). Larger tables are read from
the Parquet copies alone.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

BATCH_ROWS = 2_048  # a cold read of one batch of a synapse table touches ~250 kB
COMPRESSION = None  # LZ4 would take a quarter of the disk but 5–7 times as long to read
MAX_ROWS_ENV = "OPENCAVE_ARROW_COPY_MAX_ROWS"
DEFAULT_MAX_ROWS = 20_000_000
INT64_MAX = np.iinfo(np.int64).max  # a null key sorts last (as in the Parquet copies)

_KEY = b"opencave.key_column"
_FIRST = b"opencave.batch_first_keys"
_LAST = b"opencave.batch_last_keys"


def arrow_copy_name(file: str, column: str) -> str:
    """File name of the Arrow twin of ``file``'s copy sorted by ``column``."""
    return f"{file.removesuffix('.parquet')}.by_{column}.arrow"


def max_rows() -> int:
    """Tables with more rows get no Arrow twins (``OPENCAVE_ARROW_COPY_MAX_ROWS``)."""
    value = os.environ.get(MAX_ROWS_ENV, "").strip()
    return int(value) if value else DEFAULT_MAX_ROWS


def wanted(row_count: int | None) -> bool:
    """Whether a table of ``row_count`` rows gets Arrow twins."""
    limit = max_rows()
    return row_count is not None and limit > 0 and row_count <= limit


def _file_batches(path: Path, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    yield from pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=columns, use_threads=False)


def _key_bounds(batches: Iterable[pa.RecordBatch], column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    first, last, rows = [], [], []
    for batch in batches:
        if not batch.num_rows:
            continue
        keys = pc.fill_null(batch.column(column), INT64_MAX)
        first.append(keys[0].as_py())
        last.append(keys[-1].as_py())
        rows.append(batch.num_rows)
    return np.array(first, np.int64), np.array(last, np.int64), np.array(rows, np.int64)


def write_arrow_copy(path: Path, source: Path | pa.Table, column: str) -> None:
    """Write the twin of ``source`` (a clustered copy's file, or its rows in that order) to
    ``path`` atomically. A file is read twice (its key column, then every column), one batch
    at a time, so memory stays small whatever the table's size."""
    if isinstance(source, pa.Table):
        batches: list[pa.RecordBatch] = source.to_batches(max_chunksize=BATCH_ROWS)
        first, last, rows = _key_bounds(batches, column)
        schema, again = source.schema, lambda: iter(batches)
    else:
        first, last, rows = _key_bounds(_file_batches(source, [column]), column)
        schema, again = pq.read_schema(source), lambda: _file_batches(source)
    footer = {_KEY: column.encode(), _FIRST: first.tobytes(), _LAST: last.tobytes()}
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    try:
        options = ipc.IpcWriteOptions(compression=COMPRESSION)
        schema = schema.remove_metadata()
        with ipc.new_file(partial, schema, options=options, metadata=footer) as writer:
            written = 0
            for batch in again():
                if not batch.num_rows:
                    continue
                if written >= len(rows) or batch.num_rows != rows[written]:
                    raise RuntimeError(f"{source} changed while its Arrow twin was written")
                writer.write_batch(batch.replace_schema_metadata(None))
                written += 1
        with open(partial, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def blocks_holding(lows: np.ndarray, highs: np.ndarray, roots: np.ndarray) -> list[int]:
    """The blocks (row groups, batches) of a file sorted by key that may hold any of ``roots``
    (sorted, unique), given each block's smallest and largest key, in file order."""
    start = np.searchsorted(highs, roots, side="left")
    stop = np.searchsorted(lows, roots, side="right")
    chosen: set[int] = set()
    for a, b in zip(start.tolist(), stop.tolist()):
        chosen.update(range(a, b))
    return sorted(chosen)


@dataclass
class ArrowCopy:
    """An open twin: its reader (over a memory map) and each batch's first and last key."""

    reader: ipc.RecordBatchFileReader
    first: np.ndarray
    last: np.ndarray
    lock: threading.Lock = field(default_factory=threading.Lock)

    def batches_of(self, roots: np.ndarray) -> list[int]:
        """The batches (in file order) that may hold any of ``roots`` (sorted, unique)."""
        return blocks_holding(self.first, self.last, roots)

    def read(self, batches: list[int], columns: list[str]) -> pa.Table:
        """The rows of ``batches`` with ``columns``."""
        if not batches:
            return self.reader.schema.empty_table().select(columns)
        with self.lock:  # one reader serves every thread; its reads are kept apart
            parts = [self.reader.get_batch(b) for b in batches]
        return pa.Table.from_batches(parts).select(columns)


def open_arrow_copy(path: Path, column: str) -> ArrowCopy | None:
    """``path`` opened for point reads on ``column``; None when its footer has no key bounds for
    that column (a file not written by ``write_arrow_copy``) or they do not match its batches."""
    reader = ipc.open_file(pa.memory_map(str(path)))
    meta = reader.metadata or {}
    if meta.get(_KEY) != column.encode() or _FIRST not in meta or _LAST not in meta:
        return None
    first = np.frombuffer(meta[_FIRST], dtype=np.int64)
    last = np.frombuffer(meta[_LAST], dtype=np.int64)
    if len(first) != reader.num_record_batches or len(last) != len(first):
        return None
    if len(first) and (np.any(first > last) or np.any(last[:-1] > first[1:])):
        return None  # not sorted by this column
    if reader.num_record_batches:
        reader.get_batch(0)  # reads anything shared by all batches once, before threads do
    return ArrowCopy(reader, first, last)
