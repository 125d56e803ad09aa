"""Live queries: any table, at any timestamp, answered as a fresh materialization would be.

For a table and a moment T: take the nearest version M (the latest at or before T, else the
earliest after it; none at all means the live store alone answers), query its frozen rows with
root-id filters remapped from T to M (the roots of M that share supervoxels with the filtered
roots, exact in both directions), bring every row's roots to T, swap in the annotations created
or deleted between M and T from the live store, and apply the caller's filters again at T. Root
ids follow lineage exactly because they are recomputed from supervoxels, never guessed.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from opencave.errors import BadRequest
from opencave.services.materialize import planner
from opencave.services.materialize.answers import Answer, from_table
from opencave.services.materialize.layout import FrozenLayout, frozen_layout
from opencave.services.materialize.materializer import frozen_rows, supervoxel_ids
from opencave.services.materialize.requests import QueryOptions
from opencave.services.materialize.roots import alive_roots, remap_roots, roots_of
from opencave.services.materialize.versions import Version, format_time
from opencave.wire.materialize_query import Filter, LiveQuery

if TYPE_CHECKING:
    from opencave.services.chunkedgraph.index import GraphIndex
    from opencave.services.chunkedgraph.service import GraphService
    from opencave.services.materialize.service import MaterializeService

PUSHABLE_ROOT_KINDS = {"in", "equal"}  # root filters that can be remapped to the version's moment


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

    def rows_at(
        self,
        datastack: str,
        table: str,
        moment: datetime,
        filters: list[Filter],
        allow_invalid_root_ids: bool = False,
        warnings: list[str] | None = None,
    ) -> tuple[pa.Table, FrozenLayout, tuple[float, float, float]]:
        """Every row of ``table`` alive at ``moment`` that passes ``filters``, roots as of then, by id."""
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

        version = self.nearest_version(datastack, moment)
        frozen_table = None
        if version is not None:
            frozen = {f.table_name: f for f in self.service.registry.tables(version)}
            if table in frozen:
                frozen_table = self.service.frozen_table(datastack, version.version, table)
        if version is None:
            live = self.service.annotations.read_rows(aligned_volume, table, alive_at=t)
            combined = frozen_rows(live, layout, roots_at_t)
        else:
            m = version.time_stamp.timestamp()
            if frozen_table is not None:
                pushed = self._pushed_filters(index, layout, filters, m)
                base = self._query_frozen(frozen_table.source, pushed)
                base = _with_roots(base, layout, roots_at_t)
            else:
                base = layout.arrow_schema.empty_table()
            combined = self._apply_delta(aligned_volume, table, layout, base, m, t, roots_at_t)
        return self._filter(probe, combined, filters), layout, resolution

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

    def _query_frozen(self, source: planner.Source, filters: list[Filter]) -> pa.Table:
        sql, params, _ = planner.simple_select(source, filters, list(source.layout.names), None)
        cursor = self.service.snapshots.cursor().cursor()
        try:
            return cursor.sql(sql, params=params).to_arrow_table().cast(source.layout.arrow_schema)
        finally:
            cursor.close()

    def _apply_delta(
        self, aligned_volume: str, table: str, layout: FrozenLayout, base: pa.Table, m: float, t: float, roots_at_t
    ) -> pa.Table:
        if m == t:
            return base
        lo, hi = min(m, t), max(m, t)
        changed = self.service.annotations.read_rows(aligned_volume, table, changed_between=(lo, hi))
        if changed.num_rows == 0:
            return base
        created = changed.column("created").to_numpy(zero_copy_only=False)
        deleted = np.nan_to_num(changed.column("deleted").to_numpy(zero_copy_only=False), nan=np.inf)
        alive_t = (created <= t) & (deleted > t)
        alive_m = (created <= m) & (deleted > m)
        ids = changed.column("id").to_numpy(zero_copy_only=False)
        gone = pa.array(ids[alive_m & ~alive_t], type=pa.int64())
        if len(gone):
            base = base.filter(pc.invert(pc.is_in(base.column("id"), value_set=gone)))
        added = changed.filter(pa.array(alive_t & ~alive_m))
        if added.num_rows == 0:
            return base
        return pa.concat_tables([base, frozen_rows(added, layout, roots_at_t)])

    def _filter(self, probe: planner.Source, rows: pa.Table, filters: list[Filter]) -> pa.Table:
        """The caller's filters applied at the query time, rows ordered by id."""
        name = f"live_{uuid.uuid4().hex}"
        cursor = self.service.snapshots.cursor().cursor()
        try:
            cursor.register(name, rows)
            source = planner.Source(probe.name, probe.layout, planner.quote(name), probe.voxel_resolution)
            sql, params, _ = planner.simple_select(source, filters, list(probe.layout.names), None, order=True)
            return cursor.sql(sql, params=params).to_arrow_table().cast(probe.layout.arrow_schema)
        finally:
            cursor.close()

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
        sources = []
        cursor = self.service.snapshots.cursor().cursor()
        for name in tables:
            rows, layout, resolution = self.rows_at(
                datastack, name, query.timestamp, [f for f in query.filters if f.table == name], options.allow_invalid_root_ids, warnings
            )
            relation = f"live_{uuid.uuid4().hex}"
            cursor.register(relation, rows)
            sources.append(planner.Source(name, layout, planner.quote(relation), resolution, row_count=rows.num_rows))
        desired = query.desired_resolution or sources[0].voxel_resolution
        limit, capped = self.service._capped(query.paging.limit)
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
                limit=None if options.count else limit,
                order=True,
                add_supervoxels=False,  # roots are already at T: answer exactly the selection
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
                limit=None if options.count else limit,
                add_supervoxels=False,
            )
        try:
            table = cursor.sql(sql, params=params).to_arrow_table()
        finally:
            cursor.close()
        if capped and not options.count and table.num_rows >= (limit or 0):
            from opencave.services.materialize.service import truncation_warning

            warnings.append(truncation_warning(limit or 0))
        return from_table(table, column_names=column_map, resolution=desired, warnings=warnings)


def _with_roots(rows: pa.Table, layout: FrozenLayout, roots_at_t) -> pa.Table:
    """Frozen rows with every root column recomputed at the query time from the supervoxels."""
    for point in layout.bound_points:
        at = rows.schema.get_field_index(point.root_column)
        roots = roots_at_t(supervoxel_ids(rows, point.supervoxel_column))
        rows = rows.set_column(at, point.root_column, pa.array(roots, type=pa.int64()))
    return rows
