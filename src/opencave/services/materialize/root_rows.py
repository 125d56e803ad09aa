"""The rows of a few roots, read straight from a clustered copy.

A clustered copy is sorted by its root column, then id, so the minimum and maximum of that
column in each row group (its Parquet footer) index root ids to row ranges: finding one
neuron's synapses is a binary search and a read of the one or two row groups that hold them —
no SQL engine, no scan, whatever the table's size. Footers are parsed once per file and kept
(``RootRowReader`` holds a bounded number); each read opens the file anew with the kept footer,
so concurrent requests share nothing mutable. A copy's Arrow twin (``storage/arrow_copies.py``),
where there is one, is read the same way, a small batch at a time, from a kept memory map.

A file whose footer lacks the statistics, or whose rows turn out not to be sorted, is not
indexed (``read`` answers None) and the caller falls back to its SQL path.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from opencave.storage.arrow_copies import INT64_MAX, ArrowCopy, blocks_holding, open_arrow_copy

# A read from memory (``in_memory``) spans at most this many twin batches (16 × 2,048 rows): it
# runs on the server's event loop, so it must stay short.
IN_MEMORY_BATCHES = 16


@dataclass(frozen=True)
class RootIndex:
    """One clustered copy's footer and, per row group, its range of root ids."""

    metadata: pq.FileMetaData
    lows: np.ndarray  # smallest root id of each row group
    highs: np.ndarray  # largest root id of each row group
    rows: np.ndarray  # rows of each row group

    def row_groups(self, roots: np.ndarray) -> list[int]:
        """The row groups (in file order) that may hold any of ``roots`` (sorted, unique)."""
        return blocks_holding(self.lows, self.highs, roots)

    def candidate_rows(self, roots: np.ndarray) -> int:
        """How many rows the row groups that may hold ``roots`` (sorted, unique) have."""
        return int(self.rows[self.row_groups(roots)].sum()) if len(roots) else 0


def build_index(metadata: pq.FileMetaData, column: str) -> RootIndex | None:
    """The index of a copy sorted by ``column``; None when the footer cannot serve as one."""
    names = [metadata.schema.column(i).name for i in range(metadata.num_columns)]
    if column not in names:
        return None
    position = names.index(column)
    lows = np.empty(metadata.num_row_groups, dtype=np.int64)
    highs = np.empty(metadata.num_row_groups, dtype=np.int64)
    rows = np.empty(metadata.num_row_groups, dtype=np.int64)
    for group in range(metadata.num_row_groups):
        rows[group] = metadata.row_group(group).num_rows
        chunk = metadata.row_group(group).column(position)
        stats = chunk.statistics
        if stats is not None and stats.has_min_max:
            lows[group], highs[group] = int(stats.min), int(stats.max)
            if stats.has_null_count and stats.null_count:
                highs[group] = INT64_MAX
        elif stats is not None and stats.has_null_count and stats.null_count == metadata.row_group(group).num_rows:
            lows[group] = highs[group] = INT64_MAX  # only nulls: the end of the file
        else:
            return None
    if len(lows) and (np.any(np.diff(lows) < 0) or np.any(highs[:-1] > lows[1:])):
        return None  # not sorted by this column
    return RootIndex(metadata, lows, highs, rows)


def _parquet_index(path: Path, column: str) -> RootIndex | None:
    return build_index(pq.ParquetFile(path).metadata, column)


class RootRowReader:
    """Reads root ids' rows from clustered copies, keeping the indexes of recently used files."""

    def __init__(self, capacity: int = 128) -> None:
        self.capacity = capacity
        self._indexes: OrderedDict[tuple, RootIndex | ArrowCopy | None] = OrderedDict()
        self._lock = threading.Lock()

    def _kept(self, path: Path, column: str, build, open_files: bool = True) -> RootIndex | ArrowCopy | None:
        """``build(path, column)``, made on first use and kept (None without ``open_files``
        when it is not kept yet). Keyed by the file's identity, so a file replaced at the same
        path (a version made again) is opened anew."""
        status = os.stat(path)
        key = (str(path), column, status.st_ino, status.st_mtime_ns, status.st_size)
        with self._lock:
            if key in self._indexes:
                self._indexes.move_to_end(key)
                return self._indexes[key]
        if not open_files:
            return None
        found = build(path, column)
        with self._lock:
            self._indexes[key] = found
            while len(self._indexes) > self.capacity:
                self._indexes.popitem(last=False)
        return found

    def index(self, path: Path, column: str) -> RootIndex | None:
        """The footer index of the Parquet copy ``path`` (None if it cannot serve as one)."""
        found = self._kept(path, column, _parquet_index)
        return found if isinstance(found, RootIndex) else None

    def read(
        self, path: Path, column: str, roots: Sequence[int], columns: Sequence[str], *, in_memory: bool = False
    ) -> pa.Table | None:
        """The rows whose ``column`` is one of ``roots``, in (root, id) order, with ``columns``,
        from a Parquet copy or an Arrow twin (``.arrow``); None when the file cannot be read this
        way (the caller uses SQL instead). With ``in_memory``, only from a twin already mapped
        whose batches holding ``roots`` are at most ``IN_MEMORY_BATCHES`` (no file is opened, and
        the work is bounded); None otherwise."""
        wanted = np.unique(np.asarray(list(roots), dtype=np.int64))
        read_columns = list(dict.fromkeys([*columns, column]))
        if Path(path).suffix == ".arrow":
            twin = self._kept(path, column, open_arrow_copy, open_files=not in_memory)
            if twin is None:
                return None
            assert isinstance(twin, ArrowCopy)
            batches = twin.batches_of(wanted)
            if in_memory and len(batches) > IN_MEMORY_BATCHES:
                return None
            rows = twin.read(batches, read_columns)
        elif in_memory:
            return None
        else:
            index = self.index(path, column)
            if index is None:
                return None
            groups = index.row_groups(wanted)
            parquet = pq.ParquetFile(path, metadata=index.metadata)
            if not groups:
                return parquet.schema_arrow.empty_table().select(read_columns)
            rows = parquet.read_row_groups(groups, columns=read_columns, use_threads=False)
        return _rows_of(rows, column, wanted)


def _rows_of(rows: pa.Table, column: str, wanted: np.ndarray) -> pa.Table | None:
    """The rows of ``rows`` (sorted by ``column``) whose ``column`` is in ``wanted`` (sorted,
    unique); None if ``rows`` turn out not to be sorted."""
    key_column = rows.column(column)
    keys = (pc.fill_null(key_column, INT64_MAX) if key_column.null_count else key_column).to_numpy()
    if len(keys) > 1 and np.any(keys[1:] < keys[:-1]):
        return None
    starts = np.searchsorted(keys, wanted, side="left")
    stops = np.searchsorted(keys, wanted, side="right")
    pieces = [rows.slice(a, b - a) for a, b in zip(starts.tolist(), stops.tolist()) if b > a]
    if len(pieces) == 1:
        return pieces[0]
    return pa.concat_tables(pieces) if pieces else rows.slice(0, 0)
