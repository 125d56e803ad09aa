"""Live queries: any table, at any timestamp, answered as a fresh materialization would be.

For a table and a moment T: take the nearest version M (the latest at or before T, else the
earliest after it; none at all means the live store alone answers), query its frozen rows with
root-id filters remapped from T to M (the roots of M that share supervoxels with the filtered
roots, exact in both directions), bring every row's roots to T, swap in the annotations created
or deleted between M and T from the live store, and apply the caller's filters again at T. Root
ids follow lineage exactly because they are recomputed from supervoxels, never guessed.

Memory stays bounded by a batch, not a table: the version's rows are read ``BATCH_ROWS`` at a
time (in id order) and each batch is brought to T, merged with the changed rows, filtered and
projected before the next is read; only the changed rows between M and T are held whole. Joins
and random samples hold each table's rows at T once (a join needs all of them).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from opencave.errors import BadRequest
from opencave.services.materialize import planner
from opencave.services.materialize.answers import Answer, from_table, primed, run
from opencave.services.materialize.layout import FrozenLayout, frozen_layout
from opencave.services.materialize.materializer import frozen_rows, supervoxel_ids
from opencave.services.materialize.requests import QueryOptions
from opencave.services.materialize.roots import alive_roots, remap_roots, roots_of
from opencave.services.materialize.versions import Version, format_time
from opencave.storage.snapshots import SnapshotEngine
from opencave.wire.materialize_query import Filter, LiveQuery

if TYPE_CHECKING:
    from opencave.services.chunkedgraph.index import GraphIndex
    from opencave.services.chunkedgraph.service import GraphService
    from opencave.services.materialize.service import MaterializeService

PUSHABLE_ROOT_KINDS = {"in", "equal"}  # root filters that can be remapped to the version's moment
BATCH_ROWS = 65_536  # rows brought to the query time at once (one Parquet row group)


class LiveQueries:
    def __init__(self, service: "MaterializeService", graphs: "GraphService") -> None:
        self.service = service
        self.graphs = graphs

    def _index(self, aligned_volume: str) -> "GraphIndex | None":
        table = self.service.annotations.segmentation_of(aligned_volume)
        return self.graphs.graph(table).index if table else None

    def nearest_version(self, datastack: str, moment: datetime) -> Version | None:
        versions = self.service.registry.list(datastack)
        past = [v for v in versions if v.time_stamp <= moment]
        if past:
            return max(past, key=lambda v: v.time_stamp)
        future = [v for v in versions if v.time_stamp >= moment]
        return min(future, key=lambda v: v.time_stamp) if future else None

    def require_live_tables(self, datastack: str, tables: Iterable[str]) -> None:
        """Refuse live queries on tables that exist only in imported versions of a datastack
        without a segmentation here, saying why (they would otherwise be merely "not found")."""
        aligned_volume = self.service.info.aligned_volume_of(datastack)
        live = set(self.service.annotations.table_names(aligned_volume, include_deleted=True))
        frozen_only = sorted(set(tables) - live)
        if frozen_only and self._index(aligned_volume) is None and self.service.registry.list(datastack):
            raise BadRequest(
                f"Datastack {datastack} holds no segmentation here, and {frozen_only} exist only in its versions, which were "
                "imported with the root ids they were published with: roots at any other moment need the segmentation. "
                f"Query a version instead (materialization_version=N; versions: {self.service.versions(datastack)}).",
                code="no_segmentation",
            )

    def rows_at(
        self,
        datastack: str,
        table: str,
        moment: datetime,
        filters: list[Filter],
        allow_invalid_root_ids: bool = False,
        warnings: list[str] | None = None,
    ) -> RowsAt:
        """Every row of ``table`` alive at ``moment`` that passes ``filters``, roots as of then, by id.

        Everything that can fail is checked here; the rows themselves are made batch by batch
        as ``RowsAt.batches`` is read, so a whole table is never held at once."""
        warnings = warnings if warnings is not None else []
        aligned_volume = self.service.info.aligned_volume_of(datastack)
        meta = self.service.annotations.table_metadata(aligned_volume, table)
        layout = frozen_layout(meta["schema_type"])
        resolution = (float(meta["voxel_resolution_x"]), float(meta["voxel_resolution_y"]), float(meta["voxel_resolution_z"]))
        probe = planner.Source(table, layout, "probe", resolution)
        filters = planner.check_filters(probe, filters)
        index = self._index(aligned_volume)
        t = moment.timestamp()
        filters = self._valid_root_filters(index, layout, filters, t, allow_invalid_root_ids, warnings)
        roots_at_t = (lambda svs: roots_of(index, svs, t)) if index is not None else (lambda svs: np.zeros(svs.size, np.int64))
        keep = self._filter(probe, filters)

        version = self.nearest_version(datastack, moment)
        if version is None:
            live = self.service.annotations.read_rows(aligned_volume, table, alive_at=t)
            batches = (frozen_rows(pa.Table.from_batches([b]), layout, roots_at_t) for b in live.to_batches(BATCH_ROWS))
            return RowsAt(layout, resolution, keep(batches))
        m = version.time_stamp.timestamp()
        frozen = {f.table_name for f in self.service.registry.tables(version)}
        if table in frozen:
            source = self.service.frozen_table(datastack, version.version, table).source
            base = _with_roots(self._query_frozen(source, self._pushed_filters(index, layout, filters, m)), layout, roots_at_t)
        else:
            base = iter(())
        gone, added = self._delta(aligned_volume, table, layout, m, t, roots_at_t)
        return RowsAt(layout, resolution, keep(_merged(base, gone, added)))

    @staticmethod
    def _valid_root_filters(
        index: "GraphIndex | None", layout: FrozenLayout, filters: list[Filter], t: float, allow: bool, warnings: list[str]
    ) -> list[Filter]:
        """Root ids in filters must be roots at the query time (or are dropped when allowed)."""
        if index is None:
            return filters
        out = []
        for f in filters:
            if f.column not in layout.root_columns or f.kind not in ("in", "equal", "notin"):
                out.append(f)
                continue
            ids = np.array(f.value if isinstance(f.value, list) else [f.value], dtype=np.int64)
            ok = alive_roots(index, ids, t) | (ids == 0)
            if ok.all():
                out.append(f)
                continue
            bad = sorted(set(ids[~ok].tolist()))
            if not allow:
                raise BadRequest(
                    f"Some root_ids passed are not valid at the query timestamp: {bad}; "
                    "use ids that are roots at that time (chunkedgraph.get_latest_roots) or pass allow_invalid_root_ids=True.",
                    code="invalid_root_ids",
                    data={"invalid_root_ids": bad},
                )
            kept = ids[ok].tolist()
            warnings.append(f"Dropped root ids not valid at the query timestamp: {bad}")
            if not kept and f.kind != "notin":
                raise BadRequest(f"ALL root id filters passed for {f.column} were invalid at the query timestamp: {bad}.", code="invalid_root_ids")
            out.append(Filter(f.table, f.column, "notin" if f.kind == "notin" else "in", kept))
        return out

    @staticmethod
    def _pushed_filters(index: "GraphIndex | None", layout: FrozenLayout, filters: list[Filter], m: float) -> list[Filter]:
        """Filters for the frozen query: root in/equal filters mapped to the version's roots;
        other root filters are left to the final pass (they cannot be mapped exactly)."""
        out = []
        for f in filters:
            if f.column not in layout.root_columns:
                out.append(f)
            elif f.kind in PUSHABLE_ROOT_KINDS and index is not None:
                ids = np.array(f.value if isinstance(f.value, list) else [f.value], dtype=np.int64)
                mapped = remap_roots(index, ids, m)
                if (ids == 0).any():
                    mapped = np.append(mapped, 0)
                out.append(Filter(f.table, f.column, "in", mapped.tolist()))
        return out

    def _query_frozen(self, source: planner.Source, filters: list[Filter]) -> Iterator[pa.Table]:
        """The version's rows passing ``filters``, by id, a batch at a time."""
        sql, params, _ = planner.simple_select(source, filters, list(source.layout.names), None)
        _, batches = run(self.service.snapshots.cursor().cursor(), sql, params, batch_rows=BATCH_ROWS)
        schema = source.layout.arrow_schema
        return (pa.Table.from_batches([b]).cast(schema) for b in batches)

    def _delta(
        self, aligned_volume: str, table: str, layout: FrozenLayout, m: float, t: float, roots_at_t
    ) -> tuple[pa.Array | None, pa.Table | None]:
        """The ids of the version's rows gone by ``t``, and the rows alive at ``t`` but not at
        the version (frozen layout, roots at ``t``, by id): the live rows changed in between."""
        if m == t:
            return None, None
        lo, hi = min(m, t), max(m, t)
        changed = self.service.annotations.read_rows(aligned_volume, table, changed_between=(lo, hi))
        if changed.num_rows == 0:
            return None, None
        created = changed.column("created").to_numpy(zero_copy_only=False)
        deleted = np.nan_to_num(changed.column("deleted").to_numpy(zero_copy_only=False), nan=np.inf)
        alive_t = (created <= t) & (deleted > t)
        alive_m = (created <= m) & (deleted > m)
        ids = changed.column("id").to_numpy(zero_copy_only=False)
        gone = ids[alive_m & ~alive_t]
        added = changed.filter(pa.array(alive_t & ~alive_m))
        return (
            pa.array(gone, type=pa.int64()) if gone.size else None,
            frozen_rows(added, layout, roots_at_t).sort_by("id") if added.num_rows else None,
        )

    def _filter(self, probe: planner.Source, filters: list[Filter]) -> Callable[[Iterable[pa.Table]], Iterator[pa.Table]]:
        """The caller's filters applied at the query time, batch by batch (their SQL is made,
        and so checked, now)."""
        if not filters:
            return lambda batches: (b for b in batches if b.num_rows)
        name = f"live_{uuid.uuid4().hex}"
        source = planner.Source(probe.name, probe.layout, planner.quote(name), probe.voxel_resolution)
        sql, params, _ = planner.simple_select(source, filters, list(probe.layout.names), None, order=True)
        return lambda batches: _per_batch(self.service.snapshots, name, sql, params, batches, probe.layout.arrow_schema)

    # -- the v3 live query endpoint ------------------------------------------------------------------
    def query(self, datastack: str, query: LiveQuery, options: QueryOptions) -> Answer:
        now = datetime.now(timezone.utc)
        if query.timestamp > now:
            raise BadRequest(f"timestamp {format_time(query.timestamp)} is in the future; ask for a time up to now.", code="timestamp_in_future")
        tables = [query.table]
        for join in query.joins:
            for name in (join[0], join[2]):
                if name not in tables:
                    tables.append(name)
        if len(query.joins) > 1:
            raise BadRequest("Live queries join at most two tables; send one join in join_tables.", code="bad_join")
        stray = sorted({f.table for f in query.filters} - set(tables))
        if stray:
            raise BadRequest(f"Filters name table(s) {stray} that are not part of this query {tables}.", code="unknown_table")
        stray = sorted(set(query.select_columns or {}) - set(tables))
        if stray:
            raise BadRequest(f"select_columns names table(s) {stray} that are not part of this query {tables}.", code="unknown_table")
        warnings: list[str] = []
        found = [
            self.rows_at(datastack, name, query.timestamp, [f for f in query.filters if f.table == name], options.allow_invalid_root_ids, warnings)
            for name in tables
        ]
        desired = query.desired_resolution or found[0].resolution
        limit, capped = self.service._capped(query.paging.limit)
        limit = None if options.count else limit
        if query.joins or options.random_sample:
            answer = self._collected(tables, found, query, options, desired, limit)
        else:
            answer = self._streamed(tables[0], found[0], (query.select_columns or {}).get(tables[0]), desired, options.count, query.paging.offset, limit)
        answer.warnings = warnings
        if capped and not options.count:  # at most ``limit`` rows: collected, so the warning can lead
            table = answer.table()
            if table.num_rows >= (limit or 0):
                from opencave.services.materialize.service import truncation_warning

                warnings.append(truncation_warning(limit or 0))
            answer.batches = iter(table.to_batches(max_chunksize=BATCH_ROWS))
        answer.batches = primed(answer.batches)
        return answer

    def _streamed(
        self,
        name: str,
        rows: RowsAt,
        select: list[str] | None,
        desired: tuple[float, float, float],
        count: bool,
        offset: int | None,
        limit: int | None,
    ) -> Answer:
        """One table's answer made batch by batch from its rows at the query time (already in id
        order, so paging is a matter of counting)."""
        relation = f"live_{uuid.uuid4().hex}"
        source = planner.Source(name, rows.layout, planner.quote(relation), rows.resolution)
        if count:
            total = sum(batch.num_rows for batch in rows.batches)
            return from_table(pa.table({"count": pa.array([total], pa.int64())}), column_names={name: {"count": "count"}}, resolution=desired)
        sql, params, names = planner.simple_select(
            source,
            [],
            select,
            planner.scale_factors(source, desired),
            order=True,
            add_supervoxels=False,  # roots are already at T: answer exactly the selection
        )
        cursor = self.service.snapshots.cursor().cursor()
        try:
            cursor.register(relation, rows.layout.arrow_schema.empty_table())
            schema = cursor.sql(sql, params=params).to_arrow_table().schema
        finally:
            cursor.close()
        tables = _per_batch(self.service.snapshots, relation, sql, params, rows.batches, schema)
        return Answer(schema=schema, batches=_paged(tables, offset, limit), column_names={name: {n: n for n in names}}, resolution=desired)

    def _collected(
        self, tables: list[str], found: list[RowsAt], query: LiveQuery, options: QueryOptions, desired: tuple[float, float, float], limit: int | None
    ) -> Answer:
        """Joins and random samples need every row at the query time first: each table's rows
        are collected once, and the answer streams from DuckDB."""
        cursor = self.service.snapshots.cursor().cursor()
        try:
            sources = []
            for name, rows in zip(tables, found):
                table = rows.table()
                relation = f"live_{uuid.uuid4().hex}"
                cursor.register(relation, table)
                sources.append(planner.Source(name, rows.layout, planner.quote(relation), rows.resolution, row_count=table.num_rows))
            select = query.select_columns or {}
            if not query.joins:
                source = sources[0]
                sql, params, names = planner.simple_select(
                    source,
                    [],
                    select.get(source.name),
                    planner.scale_factors(source, desired),
                    count=options.count,
                    random_sample=options.random_sample,
                    offset=query.paging.offset,
                    limit=limit,
                    order=True,
                    add_supervoxels=False,
                )
                column_map = {source.name: {n: n for n in names}}
            else:
                t1, c1, t2, c2 = query.joins[0]
                left, right = (next(s for s in sources if s.name == n) for n in (t1, t2))
                sql, params, names, column_map = planner.join_select(
                    left,
                    right,
                    (c1, c2),
                    [],
                    {k: v for k, v in select.items()} or None,
                    None,
                    query.suffixes,
                    (planner.scale_factors(left, desired), planner.scale_factors(right, desired)),
                    count=options.count,
                    random_sample=options.random_sample,
                    offset=query.paging.offset,
                    limit=limit,
                    add_supervoxels=False,
                )
        except BaseException:
            cursor.close()
            raise
        schema, batches = run(cursor, sql, params)
        return Answer(schema=schema, batches=batches, column_names=column_map, resolution=desired)


@dataclass
class RowsAt:
    """A table's rows at a moment (frozen layout, by id), made as ``batches`` is read (once)."""

    layout: FrozenLayout
    resolution: tuple[float, float, float]
    batches: Iterator[pa.Table]

    def table(self) -> pa.Table:
        return pa.concat_tables([self.layout.arrow_schema.empty_table(), *self.batches])


def _with_roots(batches: Iterable[pa.Table], layout: FrozenLayout, roots_at_t) -> Iterator[pa.Table]:
    """Frozen rows with every root column recomputed at the query time from the supervoxels."""
    for rows in batches:
        for point in layout.bound_points:
            at = rows.schema.get_field_index(point.root_column)
            roots = roots_at_t(supervoxel_ids(rows, point.supervoxel_column))
            rows = rows.set_column(at, point.root_column, pa.array(roots, type=pa.int64()))
        yield rows


def _merged(base: Iterable[pa.Table], gone: pa.Array | None, added: pa.Table | None) -> Iterator[pa.Table]:
    """The version's rows (by id) without ``gone``, with ``added`` (by id) merged in place."""
    pending = added
    for rows in base:
        if gone is not None:
            rows = rows.filter(pc.invert(pc.is_in(rows.column("id"), value_set=gone)))
        if pending is not None and pending.num_rows and rows.num_rows:
            last = rows.column("id")[-1].as_py()
            n = int(np.searchsorted(pending.column("id").to_numpy(), last, side="right"))
            if n:
                rows = pa.concat_tables([rows, pending.slice(0, n)]).sort_by("id")
                pending = pending.slice(n)
        yield rows
    if pending is not None and pending.num_rows:
        yield pending


def _per_batch(
    snapshots: SnapshotEngine, name: str, sql: str, params: list, batches: Iterable[pa.Table], schema: pa.Schema
) -> Iterator[pa.Table]:
    """``sql`` (over the relation ``name``) run on each batch in turn, on a private cursor."""
    cursor = snapshots.cursor().cursor()
    try:
        for batch in batches:
            if not batch.num_rows:
                continue
            cursor.register(name, batch)
            out = cursor.sql(sql, params=params).to_arrow_table()
            cursor.unregister(name)
            if out.num_rows:
                yield out.cast(schema)
    finally:
        cursor.close()


def _paged(tables: Iterable[pa.Table], offset: int | None, limit: int | None) -> Iterator[pa.RecordBatch]:
    """Rows ``offset`` to ``offset + limit`` of a stream of tables, as record batches."""
    skip, left = offset or 0, limit
    if left == 0:
        return
    for table in tables:
        if skip:
            if table.num_rows <= skip:
                skip -= table.num_rows
                continue
            table, skip = table.slice(skip), 0
        if left is not None:
            table = table.slice(0, left)
            left -= table.num_rows
        yield from table.to_batches()
        if left == 0:
            return
