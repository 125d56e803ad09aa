"""Frozen version files (Parquet) and the DuckDB engine that queries them.

A materialized table is written once, atomically (a temporary name, then a rename), as Parquet
sorted by ``id``. Each root-id column also gets a *clustered copy* sorted by that column, so a
query for a few neurons' synapses reads one or two row groups instead of the whole table: the
row-group statistics prune the rest. Any Parquet reader (DuckDB, Polars, pandas, Spark) can
open the files directly.

Row groups of 65,536 rows and LZ4 pages were measured best for both kinds of reads on a
10-million-row synapse table: smaller groups add a per-group cost to every point query (even
with footers cached), and zstd pages decode ~40% slower than LZ4 for ~30% less disk.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from opencave.storage import arrow_copies

ROW_GROUP_ROWS = 65_536
# Rows per row group of a clustered copy. A few roots' rows are read a row group at a time
# (``materialize/root_rows.py``): 16,384 rows decode in ~1.5 ms where 65,536 take ~4.5 ms, and
# the footer of a 300-million-row copy stays ~40 MB.
CLUSTERED_ROW_GROUP_ROWS = 16_384
COMPRESSION = "lz4"


def clustered_name(file: str, column: str) -> str:
    """File name of the copy of ``file`` sorted by ``column``."""
    stem = file.removesuffix(".parquet")
    return f"{stem}.by_{column}.parquet"


def write_parquet(path: Path, table: pa.Table, row_group_rows: int = ROW_GROUP_ROWS) -> None:
    """Write ``table`` to ``path`` atomically (readers never see a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + f".partial-{os.getpid()}")
    pq.write_table(
        table,
        partial,
        row_group_size=row_group_rows,
        compression=COMPRESSION,
        write_statistics=True,
    )
    with open(partial, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, path)


def write_frozen_table(directory: Path, file: str, table: pa.Table, cluster_by: list[str]) -> None:
    """The table sorted by id, plus one clustered copy per column of ``cluster_by`` (and its
    Arrow twin, for tables small enough to get one)."""
    write_parquet(directory / file, table.sort_by("id") if table.num_rows else table)
    for column in cluster_by:
        ordered = table.sort_by([(column, "ascending"), ("id", "ascending")]) if table.num_rows else table
        write_parquet(directory / clustered_name(file, column), ordered, CLUSTERED_ROW_GROUP_ROWS)
        if arrow_copies.wanted(table.num_rows):
            arrow_copies.write_arrow_copy(directory / arrow_copies.arrow_copy_name(file, column), ordered, column)


class SnapshotEngine:
    """One in-process DuckDB database shared by the server's threads (a cursor per thread).

    Parquet metadata is cached, so repeated queries on a version skip re-reading footers. The
    settings are GLOBAL: cursors start new sessions, which do not inherit session settings.
    """

    def __init__(self, threads: int | None = None, memory_limit: str | None = None) -> None:
        self._db = duckdb.connect(":memory:")
        self._db.execute("SET GLOBAL parquet_metadata_cache = true")
        self._db.execute("SET GLOBAL preserve_insertion_order = true")
        if threads:
            self._db.execute(f"SET GLOBAL threads = {int(threads)}")
        if memory_limit:
            self._db.execute("SET GLOBAL memory_limit = ?", [memory_limit])
        self._local = threading.local()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (DuckDB connections are not shared across threads)."""
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self._db.cursor()
        return cursor

    def close(self) -> None:
        self._db.close()


def parquet_source(path: Path) -> str:
    """A ``read_parquet`` table expression for a file (paths are quoted, never user input)."""
    return "read_parquet('" + str(path).replace("'", "''") + "')"


def row_count(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows
