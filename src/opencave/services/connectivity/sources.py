"""Where connectivity answers read from: a synapse table's *connections* at a moment, and the
rows of a cell-type table.

At a version, a synapse table's connections (one row per ordered root pair with its synapse
count and summed size) are kept beside its frozen file, ``<table>.connections.parquet``, made
by DuckDB on first use (about a second for ten million synapses) into a temporary file renamed
into place (uploaded beside the version when versions are on object storage), so concurrent
makers in several processes are harmless. It is a few percent of the
synapse file's size, sorted by (pre, post), and every answer at the version reads it. At a
timestamp, the live query engine gives the rows (roots as of then, restricted to the roots
asked about where it can be), aggregated batch by batch.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from opencave.errors import BadRequest
from opencave.services.connectivity.moments import At
from opencave.services.materialize.layout import FrozenLayout, frozen_layout
from opencave.services.materialize import planner
from opencave.services.materialize.answers import run
from opencave.services.materialize.planner import quote
from opencave.storage.snapshots import parquet_source
from opencave.wire.materialize_query import Filter

if TYPE_CHECKING:
    from opencave.services.materialize.live import LiveQueries
    from opencave.services.materialize.service import MaterializeService, VersionTable

PRE, POST = "pre_pt_root_id", "post_pt_root_id"
INLINE_IDS = 64  # id lists this short are written into the SQL, so DuckDB can prune row groups
ROW_GROUP = 8192  # rows per row group of a connections file
CheckRead = Callable[[str, "dict[str, Any] | None"], None]  # (table, its frozen metadata or None)

_making = threading.Lock()


class Workspace:
    """One request's DuckDB cursor and the Arrow tables registered on it."""

    def __init__(self, connection: duckdb.DuckDBPyConnection) -> None:
        self.cursor = connection.cursor()
        self._count = 0

    def register(self, table: pa.Table) -> str:
        self._count += 1
        name = f"__t{self._count}"
        self.cursor.register(name, table)
        return name

    def roots(self, ids: list[int]) -> str:
        """A relation ``(root, ord)`` of ids in the order given."""
        return self.register(pa.table({"root": pa.array(ids, pa.int64()), "ord": pa.array(range(len(ids)), pa.int64())}))

    def member(self, column: str, ids: list[int]) -> str:
        """SQL: ``column`` is one of ``ids``."""
        if not ids:
            return "FALSE"
        if len(ids) <= INLINE_IDS:
            return f"{column} IN ({', '.join(str(int(i)) for i in ids)})"
        return f"{column} IN (SELECT root FROM {self.roots(ids)})"

    def table(self, sql: str, params: list[Any] | None = None) -> pa.Table:
        return self.cursor.sql(sql, params=params or None).to_arrow_table()

    def close(self) -> None:
        self.cursor.close()

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Table:
    """A table at a moment: its layout, metadata and a DuckDB relation of its rows (versions)."""

    name: str
    layout: FrozenLayout
    metadata: dict[str, Any]
    version_table: "VersionTable | None"


def _is_synapse_table(layout: FrozenLayout) -> bool:
    return PRE in layout.root_columns and POST in layout.root_columns


class Sources:
    def __init__(self, materialize: "MaterializeService", live: "LiveQueries", check_read: CheckRead) -> None:
        self.materialize = materialize
        self.live = live
        self.check_read = check_read
        # one request asks for the same records several times: kept for the life of this object
        self._aligned_volumes: dict[str, str] = {}
        self._records: dict[str, dict[str, Any]] = {}

    def aligned_volume(self, datastack: str) -> str:
        if datastack not in self._aligned_volumes:
            self._aligned_volumes[datastack] = self.materialize.info.aligned_volume_of(datastack)
        return self._aligned_volumes[datastack]

    def record(self, datastack: str) -> dict[str, Any]:
        if datastack not in self._records:
            self._records[datastack] = self.materialize.info.datastack_info(datastack, "")
        return self._records[datastack]

    # -- tables ----------------------------------------------------------------------------------
    def table(self, at: At, name: str) -> Table:
        """A table of the moment, after the caller's read permission is checked (NotFound for
        tables the moment does not have)."""
        if at.version is not None:
            found = self.materialize.table_of(at.version, name)
            self.check_read(name, found.frozen.metadata)
            return Table(name, found.source.layout, found.frozen.metadata, found)
        aligned_volume = self.aligned_volume(at.datastack)
        self.live.require_live_tables(at.datastack, [name])
        metadata = self.materialize.annotations.table_metadata(aligned_volume, name)
        self.check_read(name, None)
        return Table(name, frozen_layout(metadata["schema_type"]), metadata, None)

    def synapse_table(self, at: At, name: str | None) -> Table:
        if name is None:
            name = self.record(at.datastack).get("synapse_table")
            if not name:
                raise BadRequest(f"Datastack {at.datastack} names no synapse table; pass synapse_table.", code="no_synapse_table")
        table = self.table(at, name)
        if not _is_synapse_table(table.layout):
            raise BadRequest(
                f"Table {name!r} is not a synapse table: it has no pre_pt_root_id and post_pt_root_id "
                f"(its root columns: {table.layout.root_columns}); name a table of synapses (schema synapse or alike).",
                code="not_a_synapse_table",
            )
        return table

    def rows(self, at: At, table: Table, filters: list[Filter], columns: list[str]) -> Iterable[pa.Table]:
        """A table's rows at the moment passing ``filters`` (stored columns ``columns``), in batches."""
        if table.version_table is not None:
            sql, params, _ = planner.simple_select(table.version_table.source, filters, columns, None, add_supervoxels=False)
            _, batches = run(self.materialize.snapshots.cursor().cursor(), sql, params)
            return (pa.Table.from_batches([b]) for b in batches)
        found = self.live.rows_at(at.datastack, table.name, at.timestamp, filters)
        return (b.select(columns) for b in found.batches)

    # -- connections -----------------------------------------------------------------------------
    def connections(self, ws: Workspace, at: At, table: Table, pre: list[int] | None = None, post: list[int] | None = None) -> str:
        """A relation of the moment's connections ``(pre_pt_root_id, post_pt_root_id, n_synapses,
        size_sum)``; at a timestamp only those touching ``pre``/``post`` when given (a version's
        file holds them all; callers filter)."""
        if table.version_table is not None:
            return self._connections_file(table, by_post=post is not None and pre is None)
        filters = []
        if pre is not None:
            filters.append(Filter(table.name, PRE, "in", pre))
        if post is not None:
            filters.append(Filter(table.name, POST, "in", post))
        if (pre is not None and not pre) or (post is not None and not post):
            return ws.register(_aggregate((), "size" in table.layout.names))
        has_size = "size" in table.layout.names
        columns = [PRE, POST] + (["size"] if has_size else [])
        return ws.register(_aggregate(self.rows(at, table, filters, columns), has_size))

    def _connections_file(self, table: Table, by_post: bool) -> str:
        """The version's connections file sorted by (pre, post), or its copy sorted by (post, pre)
        for questions about given postsynaptic roots (small row groups: one root's rows are read
        from one or two of them)."""
        found = table.version_table
        assert found is not None
        files, location = self.materialize.registry.files, found.version.location  # local or remote
        stem = found.frozen.file.removesuffix(".parquet")
        names = {False: f"{stem}.connections.parquet", True: f"{stem}.connections.by_post.parquet"}
        if all(files.exists(location, name) for name in names.values()):
            return parquet_source(files.local_path(location, names[by_post]))
        size = "sum(size)::DOUBLE" if "size" in table.layout.names else "NULL::DOUBLE"
        select = (
            f"SELECT {PRE}, {POST}, count(*)::BIGINT AS n_synapses, {size} AS size_sum FROM {found.source.relation} "
            f"WHERE {PRE} <> 0 AND {POST} <> 0 GROUP BY 1, 2"
        )
        with _making:
            if all(files.exists(location, name) for name in names.values()):
                return parquet_source(files.local_path(location, names[by_post]))
            cursor = self.materialize.snapshots.cursor().cursor()
            scratch = files.scratch(location)
            partials = {side: scratch / f".{name}.{uuid.uuid4().hex}.partial" for side, name in names.items()}
            try:
                for side, order in ((False, f"{PRE}, {POST}"), (True, f"{POST}, {PRE}")):
                    source = f"({select})" if side is False else parquet_source(partials[False])
                    target = str(partials[side]).replace("'", "''")
                    cursor.execute(f"COPY (SELECT * FROM {source} ORDER BY {order}) TO '{target}' (FORMAT parquet, ROW_GROUP_SIZE {ROW_GROUP})")
                files.put(location, names[True], partials[True])  # uploaded when remote
                files.put(location, names[False], partials[False])
            except (OSError, duckdb.IOException):
                # a read-only version directory or storage: aggregate on every request instead
                return f"({select})"
            finally:
                cursor.close()
                for partial in partials.values():
                    partial.unlink(missing_ok=True)
        return parquet_source(files.local_path(location, names[by_post]))

    # -- cell types ------------------------------------------------------------------------------
    def cell_types(self, ws: Workspace, at: At, name: str, column: str) -> str:
        """A relation ``(root, cell_type)`` of every row of a cell-type table with a root and a
        type: its own root column, or, for a reference table, the referenced row's root."""
        table = self.table(at, name)
        if column not in table.layout.names:
            raise BadRequest(f"Table {name!r} has no column {column!r}; its columns: {table.layout.names}.", code="unknown_column")
        own = _root_column(table.layout)
        if own is not None:
            rows = self._relation(ws, at, table, [own, column])
            return f"(SELECT {quote(own)} AS root, {quote(column)} AS cell_type FROM {rows})"
        reference = table.metadata.get("reference_table")
        if "target_id" not in table.layout.names or not reference:
            raise _not_cell_types(name, "it has no root column and references no table")
        target = self.table(at, reference)
        target_root = _root_column(target.layout)
        if target_root is None:
            raise _not_cell_types(name, f"the table it references, {reference!r}, has no root column either")
        rows = self._relation(ws, at, table, ["target_id", column])
        targets = self._relation(ws, at, target, ["id", target_root])
        return (
            f"(SELECT t.{quote(target_root)} AS root, c.{quote(column)} AS cell_type "
            f"FROM {rows} c JOIN {targets} t ON c.target_id = t.id)"
        )

    def _relation(self, ws: Workspace, at: At, table: Table, columns: list[str]) -> str:
        if table.version_table is not None:
            return table.version_table.source.relation
        batches = list(self.rows(at, table, [], columns))
        schema = pa.schema([table.layout.arrow_schema.field(c) for c in columns])
        return ws.register(pa.concat_tables([schema.empty_table(), *(b.cast(schema) for b in batches)]))


def _root_column(layout: FrozenLayout) -> str | None:
    roots = layout.root_columns
    if "pt_root_id" in roots:
        return "pt_root_id"
    return roots[0] if len(roots) == 1 else None


def _not_cell_types(name: str, why: str) -> BadRequest:
    return BadRequest(
        f"Table {name!r} cannot give cell types of the synapse table's neurons: {why}. Name a table whose rows "
        "carry root ids (a bound point such as pt_root_id), or a reference table on one (e.g. on the nucleus table).",
        code="not_a_cell_type_table",
    )


def _aggregate(batches: Iterable[pa.Table], has_size: bool) -> pa.Table:
    """Synapse rows → connections, a batch at a time (memory follows the number of pairs)."""
    parts = []
    for batch in batches:
        keep = pc.and_(pc.not_equal(batch[PRE], 0), pc.not_equal(batch[POST], 0))
        rows = batch.filter(keep)
        size = rows["size"].cast(pa.float64()) if has_size else pa.nulls(rows.num_rows, pa.float64())
        rows = pa.table({PRE: rows[PRE].cast(pa.int64()), POST: rows[POST].cast(pa.int64()), "size": size})
        parts.append(rows.group_by([PRE, POST]).aggregate([([], "count_all"), ("size", "sum")]))
    if not parts:
        return pa.table({PRE: pa.array([], pa.int64()), POST: pa.array([], pa.int64()), "n_synapses": pa.array([], pa.int64()), "size_sum": pa.array([], pa.float64())})
    merged = pa.concat_tables(parts).group_by([PRE, POST]).aggregate([("count_all", "sum"), ("size_sum", "sum")])
    return pa.table({
        PRE: merged[PRE],
        POST: merged[POST],
        "n_synapses": merged["count_all_sum"].cast(pa.int64()),
        "size_sum": merged["size_sum_sum"].cast(pa.float64()),
    })
