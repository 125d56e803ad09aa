"""The manifest in every version's directory (``version.json``), so a version is readable
without opencave and importable back.

It is a version package manifest (``services/transfer/package.py``: same format name, version
and keys, each entry's ``path`` naming its one Parquet file), so ``opencave import version DIR``
takes a version directory as it is. Each entry adds what a reader with Polars, DuckDB or Spark
needs: ``columns`` (the Arrow schema: names and types), ``clustered`` (root-id column →
the copy of the file sorted by it; a copy may appear shortly after the version is published,
and the entry's own ``path`` always holds every row) and ``arrow_copies`` (root-id column → the
same copy as an Arrow IPC file, for tables small enough to get one).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from opencave.services.materialize.layout import frozen_layout
from opencave.services.materialize.versions import FrozenTable, Version, format_time
from opencave.services.transfer.package import FORMAT, FORMAT_VERSION, MANIFEST
from opencave.storage import arrow_copies
from opencave.storage.arrow_copies import arrow_copy_name
from opencave.storage.snapshots import clustered_name

__all__ = ["MANIFEST", "version_manifest", "write_version_manifest"]


def _entry(directory: Path, table: FrozenTable) -> dict[str, Any]:
    schema = pq.read_schema(directory / table.file)
    clustered, twins = {}, {}
    if table.kind == "table" and table.schema:
        clustered = {column: clustered_name(table.file, column) for column in frozen_layout(table.schema).root_columns}
        if arrow_copies.wanted(table.row_count):
            twins = {column: arrow_copy_name(table.file, column) for column in clustered}
    return {
        "name": table.table_name,
        "kind": "table" if table.kind == "table" else "view",
        "schema": table.schema,
        "row_count": table.row_count,
        "path": table.file,
        "columns": [{"name": field.name, "type": str(field.type)} for field in schema],
        "clustered": clustered,
        "arrow_copies": twins,
        "metadata": table.metadata,
    }


def version_manifest(directory: Path, version: Version, tables: list[FrozenTable]) -> dict[str, Any]:
    """The manifest of ``version`` whose files are in ``directory`` (schemas read from them)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "files": "parquet",
        "datastack": version.datastack,
        "version": version.version,
        "time_stamp": format_time(version.time_stamp),
        "tables": [_entry(Path(directory), table) for table in tables],
    }


def write_version_manifest(directory: Path, version: Version, tables: list[FrozenTable]) -> None:
    """Write ``version.json`` into ``directory`` atomically."""
    path = Path(directory) / MANIFEST
    partial = path.with_name(f"{MANIFEST}.partial-{os.getpid()}")
    partial.write_text(json.dumps(version_manifest(directory, version, tables), indent=1) + "\n")
    os.replace(partial, path)
