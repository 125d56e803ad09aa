"""The materialization engine: versions, their metadata, and queries on frozen tables and views.

Queries compile to DuckDB SQL over the version's Parquet files (``planner``); live queries at an
arbitrary timestamp are in ``live``. Answers stream as Arrow record batches. With no operator
cap answers are complete; with one, they are cut at the cap and say so in a warning.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
from cachetools import LRUCache

from opencave.errors import BadRequest, NotFound
from opencave.services.materialize import direct, planner
from opencave.services.materialize.answers import Answer, from_table, run
from opencave.services.materialize.layout import frozen_layout
from opencave.services.materialize.requests import QueryOptions
from opencave.services.materialize.root_rows import RootRowReader
from opencave.services.materialize.versions import AVAILABLE, FrozenTable, Version, VersionRegistry
from opencave.services.materialize.views import ViewRegistry, layout_of_result, view_column_types
from opencave.storage import arrow_copies as twins
from opencave.storage.arrow_copies import arrow_copy_name
from opencave.storage.snapshots import SnapshotEngine, clustered_name, parquet_source
from opencave.storage.state import GenerationCache, Generations
from opencave.storage.version_files import is_remote
from opencave.wire.materialize_query import JoinQuery, TableQuery

if TYPE_CHECKING:
    from opencave.services.annotation import AnnotationService
    from opencave.services.info import InfoRegistry


PRUNED_SHARE = 0.25  # a copy is read for a long id list when its row groups hold at most this share of rows
SOURCES_KEPT = 512  # planner sources of published tables a process keeps


def truncation_warning(limit: int) -> str:
    return (
        f'201 - "Limited query to {limit} rows: the server caps answers at {limit} rows; '
        'ask with limit/offset or a narrower filter for the rest"'
    )


@dataclass(frozen=True)
class VersionTable:
    """A frozen table or view of a version, ready for the planner."""

    version: Version
    frozen: FrozenTable
    source: planner.Source


@dataclass
class _TablePlan:
    """A table query checked and ready to answer (``MaterializeService._plan``)."""

    found: VersionTable
    query: TableQuery
    count: bool
    filters: list
    factors: tuple[float, float, float] | None
    limit: int | None
    capped: bool
    arguments: dict[str, Any]
    headers: dict[str, Any]


class MaterializeService:
    def __init__(
        self,
        registry: VersionRegistry,
        views: ViewRegistry,
        annotations: "AnnotationService",
        info: "InfoRegistry",
        snapshots: SnapshotEngine,
        row_limit: int | None = None,
    ) -> None:
        self.registry = registry
        self.views = views
        self.annotations = annotations
        self.info = info
        self.snapshots = snapshots
        self.row_limit = row_limit
        self.root_rows = RootRowReader()
        self._versions: GenerationCache[Version] = GenerationCache()
        self._sources: LRUCache[tuple, tuple[FrozenTable, planner.Source, tuple[str, ...]]] = LRUCache(maxsize=SOURCES_KEPT)
        self._sources_lock = threading.Lock()

    # -- versions ------------------------------------------------------------------------------
    def _check_datastack(self, datastack: str, generations: Generations | None = None) -> str:
        # NotFound for unknown datastacks
        return self.info.aligned_volume_of(datastack, generations.info if generations else None)

    def versions(self, datastack: str, include_expired: bool = False) -> list[int]:
        self._check_datastack(datastack)
        return [v.version for v in self.registry.list(datastack, include_expired)]

    def version(self, datastack: str, version: int, generations: Generations | None = None) -> Version:
        """A version (expired ones too); read once per catalog generation when ``generations``
        (the request's, read with its token) are given."""
        self._check_datastack(datastack, generations)
        catalog = generations.catalog if generations else None
        return self._versions.get((datastack, version), catalog, lambda: self.registry.version(datastack, version, include_expired=True))

    def versions_metadata(self, datastack: str, include_expired: bool = False) -> list[dict[str, Any]]:
        self._check_datastack(datastack)
        versions = self.registry.list(datastack, include_expired)
        if not versions:
            raise NotFound(f"No valid versions found for datastack {datastack}; create one with `opencave materialize create`.", code="no_versions")
        return [v.to_json() for v in versions]

    def _usable(self, datastack: str, version: int, generations: Generations | None = None) -> Version:
        found = self.version(datastack, version, generations)
        if not found.valid:
            raise NotFound(f"Version {version} of {datastack} has expired and its files are gone; use a current version.", code="version_expired")
        return found

    # -- tables ------------------------------------------------------------------------------
    def table_names(self, datastack: str, version: int) -> list[str]:
        found = self._usable(datastack, version)
        return [t.table_name for t in self.registry.tables(found)]

    def frozen_table(
        self, datastack: str, version: int, name: str, kind: str = "table", generations: Generations | None = None
    ) -> VersionTable:
        """A table (or view) of a version, found once per request: its registry row, metadata
        and planner source (NotFound for unknown versions and names)."""
        return self.table_of(self._usable(datastack, version, generations), name, kind)

    def table_of(self, found: Version, name: str, kind: str = "table") -> VersionTable:
        """``frozen_table`` of a version already found (and checked usable) by the caller.

        The source of a local published table with all its copies is kept: its files change only
        if someone removes one (checked on every use, then the source is found again)."""
        key = self._kept_key(found, name, kind)
        kept = self._kept(found, key)
        if kept is not None:
            return kept
        table, source, complete = self._source_of(found, name, kind)
        if key is not None and complete:
            copies = tuple(str(path) for path in (*source.clustered.values(), *source.arrow_copies.values()))
            with self._sources_lock:
                self._sources[key] = (table, source, copies)
        return VersionTable(found, table, source)

    def kept_table(self, datastack: str, version: int, name: str, generations: Generations) -> VersionTable | None:
        """``frozen_table`` when the table's source is kept (``table_of``): then no file is read,
        and the version is one lookup cached per catalog generation, as a token's is; None
        otherwise."""
        found = self._usable(datastack, version, generations)
        return self._kept(found, self._kept_key(found, name, "table"))

    @staticmethod
    def _kept_key(found: Version, name: str, kind: str) -> tuple | None:
        """The key of a table's kept source: only local published versions' are kept."""
        if found.status != AVAILABLE or found.created is None or is_remote(found.location):
            return None
        return (found.id, found.created, kind, name)

    def _kept(self, found: Version, key: tuple | None) -> VersionTable | None:
        if key is None:
            return None
        with self._sources_lock:
            known = self._sources.get(key)
        if known is None or not all(os.path.exists(path) for path in known[2]):
            return None
        return VersionTable(found, known[0], known[1])

    def _source_of(self, found: Version, name: str, kind: str) -> tuple[FrozenTable, planner.Source, bool]:
        """A table's registry row and planner source, and whether all its copies are made."""
        version, datastack = found.version, found.datastack
        frozen = {t.table_name: t for t in self.registry.tables(found, kind)}
        if name not in frozen:
            what = "Table" if kind == "table" else "View"
            raise NotFound(
                f"{what} {name!r} not found in version {version} of datastack {datastack}; it has {sorted(frozen)}.",
                code="unknown_table" if kind == "table" else "unknown_view",
            )
        table = frozen[name]
        files = self.registry.files  # local or remote (then cached here)
        path = files.local_path(found.location, table.file)
        complete = True
        if kind == "table":
            layout = frozen_layout(table.schema)
            # copies may be built after the version is published: until then, the id-sorted file
            copies = [(c, clustered_name(table.file, c)) for c in layout.root_columns]
            clustered = {c: files.local_path(found.location, copy) for c, copy in copies if files.exists(found.location, copy)}
            pairs = [(c, arrow_copy_name(table.file, c)) for c in clustered]
            arrow_copies = {c: files.local_path(found.location, twin) for c, twin in pairs if files.exists(found.location, twin)}
            complete = len(clustered) == len(copies) and (len(arrow_copies) == len(clustered) or not twins.wanted(table.row_count))
        else:
            import pyarrow.parquet as pq

            layout = layout_of_result(name, pq.read_schema(path))
            clustered, arrow_copies = {}, {}
        meta = table.metadata
        resolution = (float(meta["voxel_resolution_x"]), float(meta["voxel_resolution_y"]), float(meta["voxel_resolution_z"]))
        source = planner.Source(
            name=name,
            layout=layout,
            relation=parquet_source(path),
            voxel_resolution=resolution,
            clustered=clustered,
            arrow_copies=arrow_copies,
            row_count=table.row_count,
        )
        return table, source, complete

    def tables_metadata(self, datastack: str, version: int) -> list[dict[str, Any]]:
        found = self._usable(datastack, version)
        return [t.metadata for t in self.registry.tables(found)]

    # -- queries -------------------------------------------------------------------------------
    def _capped(self, limit: int | None) -> tuple[int | None, bool]:
        """The effective limit and whether the operator's cap (not the caller) set it."""
        if self.row_limit is None:
            return limit, False
        if limit is None or limit > self.row_limit:
            return self.row_limit, True
        return limit, False

    def _execute(self, sql: str, params: list, capped: bool, limit: int | None, answer: dict[str, Any]) -> Answer:
        cursor = self.snapshots.cursor().cursor()
        # A capped answer is collected first, so the truncation warning can lead the response.
        schema, batches = run(cursor, sql, params, stream=not capped)
        result = Answer(schema=schema, batches=batches, **answer)
        if capped:
            table = result.table()
            if table.num_rows >= (limit or 0):
                result.warnings.append(truncation_warning(limit or 0))
            result.batches = iter(table.to_batches(max_chunksize=262_144))
        return result

    def query_table(self, found: VersionTable, query: TableQuery, options: QueryOptions, rescale: bool) -> Answer:
        """A query on one frozen table or view (``frozen_table``).

        Frozen tables hold only rows valid at the version, so no ``valid`` condition is needed."""
        plan = self._plan(found, query, options, rescale)
        answer = self._direct(plan, in_memory=False)
        if answer is not None:
            return answer
        source = found.source
        prune_on = self._pruning_copy(source, plan.filters)
        sql, params, names = planner.simple_select(source, plan.filters, query.select_columns, plan.factors, prune_on=prune_on, **plan.arguments)
        plan.headers["column_names"] = {source.name: {n: n for n in names}}
        return self._execute(sql, params, plan.capped and not options.count, plan.limit, plan.headers)

    def answer_in_memory(self, found: VersionTable, query: TableQuery, options: QueryOptions, rescale: bool) -> Answer | None:
        """``query_table``'s answer when it is read from an Arrow twin already mapped, in a
        bounded number of rows: no file is opened and no SQL runs, so it may be computed on the
        server's event loop; None otherwise (errors in the query raise as from ``query_table``)."""
        return self._direct(self._plan(found, query, options, rescale), in_memory=True)

    def _plan(self, found: VersionTable, query: TableQuery, options: QueryOptions, rescale: bool) -> _TablePlan:
        """What every way of answering a table query needs: checked filters, scale factors,
        the effective limit and the answer's headers."""
        source = found.source
        stray = sorted({f.table for f in query.filters} - {source.name})
        if stray:
            raise BadRequest(
                f"Filters name table(s) {stray}, but this query is on {source.name!r}; key filters by {source.name!r}.",
                code="unknown_table",
            )
        desired = query.desired_resolution if rescale else None
        limit, capped = self._capped(query.paging.limit)
        return _TablePlan(
            found=found,
            query=query,
            count=options.count,
            filters=planner.check_filters(source, query.filters),
            factors=planner.scale_factors(source, desired),
            limit=limit,
            capped=capped,
            arguments=dict(
                count=options.count, random_sample=options.random_sample, offset=query.paging.offset, limit=None if options.count else limit
            ),
            headers={
                "resolution": (desired or source.voxel_resolution) if rescale else None,
                "warnings": self._notices(found),
            },
        )

    def _direct(self, plan: _TablePlan, in_memory: bool) -> Answer | None:
        """The plan's answer computed without SQL (``direct.answer``), or None."""
        source = plan.found.source
        table = direct.answer(
            self.root_rows, source, plan.filters, plan.query.select_columns, plan.factors, in_memory=in_memory, **plan.arguments
        )
        if table is None:
            return None
        if plan.capped and not plan.count and table.num_rows >= (plan.limit or 0):
            plan.headers["warnings"].append(truncation_warning(plan.limit or 0))
        return from_table(table, column_names={source.name: {n: n for n in table.column_names}}, **plan.headers)

    def _pruning_copy(self, source: planner.Source, filters: list) -> str | None:
        """The root column whose long id list is best read from its clustered copy: the one
        whose ids' row groups hold the fewest rows, if under ``PRUNED_SHARE`` of the table
        (the SQL then prunes the copy's row groups by the ids; ``planner.pick_relation``)."""
        best: tuple[int, str] | None = None
        for f in filters:
            if f.kind != "in" or f.column not in source.clustered or len(f.value) <= planner.CLUSTER_MAX_IDS:
                continue
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in f.value):
                continue
            index = self.root_rows.index(source.clustered[f.column], f.column)
            if index is None:
                continue
            rows = index.candidate_rows(np.unique(np.asarray(f.value, dtype=np.int64)))
            if best is None or rows < best[0]:
                best = (rows, f.column)
        if best is None or source.row_count is None or best[0] > PRUNED_SHARE * source.row_count:
            return None
        return best[1]

    def query_join(self, left: VersionTable, right: VersionTable, query: JoinQuery, options: QueryOptions, rescale: bool) -> Answer:
        """An inner join of two frozen tables (``frozen_table``), in the order ``query.tables`` names them."""
        desired = query.desired_resolution if rescale else None
        if rescale and desired is None:
            desired = right.source.voxel_resolution  # upstream: the last table's resolution
        factors = (planner.scale_factors(left.source, desired), planner.scale_factors(right.source, desired))
        limit, capped = self._capped(query.paging.limit)
        sql, params, _, column_map = planner.join_select(
            left.source,
            right.source,
            (query.tables[0][1], query.tables[1][1]),
            query.filters,
            query.select_column_map,
            query.select_columns,
            query.suffixes,
            factors,
            count=options.count,
            random_sample=options.random_sample,
            offset=query.paging.offset,
            limit=None if options.count else limit,
        )
        headers = {
            "column_names": column_map,
            "resolution": desired if rescale else None,
            "warnings": list(query.warnings) + self._notices(left) + self._notices(right),
        }
        return self._execute(sql, params, capped and not options.count, limit, headers)

    @staticmethod
    def _notices(found: VersionTable) -> list[str]:
        notice = found.frozen.metadata.get("notice_text")
        return [f"Table Owner Notice on {found.frozen.table_name}: {notice}"] if notice else []

    # -- views ---------------------------------------------------------------------------------
    def views_of(self, datastack: str, version: int) -> dict[str, dict[str, Any]]:
        found = self._usable(datastack, version)
        return {t.table_name: {k: v for k, v in t.metadata.items() if k != "table_name"} for t in self.registry.tables(found, "view")}

    def view_schema(self, datastack: str, version: int, view: str) -> dict[str, dict[str, str]]:
        return view_column_types(self.frozen_table(datastack, version, view, kind="view").source.layout)

    def view_schemas(self, datastack: str, version: int) -> dict[str, dict[str, dict[str, str]]]:
        found = self._usable(datastack, version)
        return {t.table_name: self.view_schema(datastack, version, t.table_name) for t in self.registry.tables(found, "view")}

    # -- live table facts ------------------------------------------------------------------------
    def unique_string_values(self, datastack: str, table: str) -> dict[str, list[str]]:
        """Distinct values of every string column of the live table (rows alive now)."""
        aligned_volume = self._check_datastack(datastack)
        meta = self.annotations.table_metadata(aligned_volume, table)
        layout = frozen_layout(meta["schema_type"])
        if not layout.string_columns:
            return {}
        rows = self.annotations.read_rows(aligned_volume, table, alive_at=datetime.now(timezone.utc).timestamp())
        out = {}
        for column in layout.string_columns:
            values = rows.column(column).drop_null().unique().to_pylist()
            out[column] = sorted(values)
        return out
