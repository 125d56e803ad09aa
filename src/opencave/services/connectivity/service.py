"""Connectivity at a version or a moment: who connects to whom, how strongly, by cell type,
through which paths, and what changed between two moments. Nothing here knows of HTTP.

Every operation reads the synapse table's *connections* (``sources.Sources.connections``) and
runs one DuckDB query over them, so answers at a version cost what their roots' connections
cost, not the synapse table's size. The semantics (thresholds, orderings, ambiguous cell
types, lineage in diffs) are the ones of ``docs/connectivity.md``; client-side functions on
DataFrames (``opencave.connectivity``) compute the same, and paths and diffs are computed by
them here too, on the rows this service selects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from opencave import connectivity as frames
from opencave.errors import BadRequest
from opencave.services.annotation.service import GRAPHENE
from opencave.services.connectivity.moments import At, resolve
from opencave.services.connectivity.sources import INLINE_IDS, POST, PRE, CheckRead, Sources, Table, Workspace
from opencave.services.materialize.roots import alive_roots, remap_roots, roots_of
from opencave.wire import connectivity as wire
from opencave.wire.materialize_query import Filter

if TYPE_CHECKING:
    from opencave.services.chunkedgraph.index import GraphIndex
    from opencave.services.chunkedgraph.service import GraphService
    from opencave.services.materialize.live import LiveQueries
    from opencave.services.materialize.service import MaterializeService

DIFF_COLUMNS = ["id", "pre_pt_supervoxel_id", PRE, "post_pt_supervoxel_id", POST]


@dataclass
class Result:
    """An answer: one table and what it describes."""

    table: pa.Table
    meta: dict[str, Any] = field(default_factory=dict)


class ConnectivityService:
    """Answers a datastack's connectivity questions; lists (edges, partners, common partners,
    paths, diffs) are cut at the operator's row cap (``opencave serve --row-limit``) and say so,
    matrices are refused whole rather than cut, since a cut matrix reads as zeros."""

    def __init__(self, materialize: "MaterializeService", live: "LiveQueries", graphs: "GraphService", check_read: CheckRead) -> None:
        self.materialize = materialize
        self.live = live
        self.graphs = graphs
        self.sources = Sources(materialize, live, check_read)
        self._graph_tables: dict[str, str | None] = {}

    # -- shared ----------------------------------------------------------------------------------
    def _start(self, datastack: str, request: wire._Request) -> tuple[At, Table, dict[str, Any]]:
        at = resolve(self.materialize, self.sources.aligned_volume, datastack, request.version, request.timestamp)
        table = self.sources.synapse_table(at, request.synapse_table)
        meta = {"datastack": datastack, "synapse_table": table.name, **at.meta(), "min_synapses": request.min_synapses, "truncated": False}
        return at, table, meta

    def _index(self, datastack: str) -> "GraphIndex | None":
        """The datastack's segmentation (None: it has none here, e.g. an imported release)."""
        if datastack not in self._graph_tables:
            match = GRAPHENE.match(self.sources.record(datastack).get("segmentation_source") or "")
            self._graph_tables[datastack] = match.group(1) if match and self.graphs.exists(match.group(1)) else None
        graph = self._graph_tables[datastack]
        return self.graphs.graph(graph).index if graph else None

    def _check_roots(self, at: At, ids: list[int]) -> None:
        """Root ids must be roots at the moment (when the datastack has a segmentation to tell)."""
        index = self._index(at.datastack)
        if index is None or not ids:
            return
        array = np.asarray(ids, dtype=np.int64)
        ok = alive_roots(index, array, at.timestamp.timestamp())
        if not ok.all():
            bad = sorted(set(array[~ok].tolist()))
            raise BadRequest(
                f"Some root ids are not roots at {at.label}: {bad[:20]}{' …' if len(bad) > 20 else ''}; use roots of that moment "
                "(chunkedgraph.get_latest_roots or suggest_latest_roots map old ones).",
                code="invalid_root_ids",
                data={"invalid_root_ids": bad[:1000]},
            )

    def _capped(self, result: Result) -> Result:
        limit = self.materialize.row_limit
        if limit is not None and result.table.num_rows > limit:
            result.table = result.table.slice(0, limit)
            result.meta["truncated"] = True
            result.meta["row_limit"] = limit
        return result

    def _whole(self, result: Result, what: str) -> Result:
        limit = self.materialize.row_limit
        if limit is not None and result.table.num_rows > limit:
            raise BadRequest(
                f"The {what} has {result.table.num_rows:,} non-zero cells, more than this server's row limit of {limit:,}; "
                "ask about fewer roots (or raise min_synapses).",
                code="answer_too_large",
            )
        return result

    # -- operations ------------------------------------------------------------------------------
    def edges(self, datastack: str, request: wire.EdgesRequest) -> Result:
        at, table, meta = self._start(datastack, request)
        pre, post = request.pre_roots, request.post_roots
        self._check_roots(at, sorted(set((pre or []) + (post or []))))
        with Workspace(self.materialize.snapshots.cursor()) as ws:
            relation = self.sources.connections(ws, at, table, pre, post)
            conditions = ["n_synapses >= ?"]
            if pre is not None:
                conditions.append(ws.member(PRE, pre))
            if post is not None:
                conditions.append(ws.member(POST, post))
            sql = (
                f"SELECT {PRE}, {POST}, n_synapses, size_sum FROM {relation} WHERE {' AND '.join(conditions)} "
                f"ORDER BY n_synapses DESC, {PRE}, {POST}"
            )
            return self._capped(Result(_typed(ws.table(sql, [request.min_synapses]), wire.EDGES), meta))

    def adjacency(self, datastack: str, request: wire.AdjacencyRequest) -> Result:
        """The connections among ``roots`` (the matrix's non-zero cells)."""
        at, table, meta = self._start(datastack, request)
        roots = request.roots
        self._check_roots(at, roots)
        meta["roots"] = len(roots)
        with Workspace(self.materialize.snapshots.cursor()) as ws:
            relation = self.sources.connections(ws, at, table, roots, roots)
            sql = (
                f"SELECT {PRE}, {POST}, n_synapses, size_sum FROM {relation} "
                f"WHERE n_synapses >= ? AND {ws.member(PRE, roots)} AND {ws.member(POST, roots)} ORDER BY {PRE}, {POST}"
            )
            return self._whole(Result(_typed(ws.table(sql, [request.min_synapses]), wire.EDGES), meta), "adjacency matrix")

    def _partner_answer(self, datastack: str, request: wire.PartnersRequest, shape: Callable[[str, int], str], schema: pa.Schema) -> Result:
        """Partner rows ``(root_id, partner_root_id, n_synapses, size_sum, ord)`` of the roots
        (``ord``: the root's place in the request), turned into the answer by ``shape(sql,
        number of roots)``."""
        at, table, meta = self._start(datastack, request)
        roots = wire.ordered_unique(request.roots)
        self._check_roots(at, roots)
        meta["direction"] = request.direction
        own, other = (POST, PRE) if request.direction == "input" else (PRE, POST)
        with Workspace(self.materialize.snapshots.cursor()) as ws:
            relation = self.sources.connections(ws, at, table, *((None, roots) if request.direction == "input" else (roots, None)))
            if len(roots) <= INLINE_IDS:  # a join costs more than the query here: order by place in the list
                order = f"list_position([{', '.join(str(r) for r in roots)}], e.{own}) - 1"
                rows = f"SELECT e.{own} AS root_id, e.{other} AS partner_root_id, e.n_synapses, e.size_sum, {order} AS ord FROM {relation} e"
            else:
                rows = (
                    f"SELECT r.root AS root_id, e.{other} AS partner_root_id, e.n_synapses, e.size_sum, r.ord AS ord "
                    f"FROM {relation} e JOIN {ws.roots(roots)} r ON e.{own} = r.root"
                )
            rows += f" WHERE e.n_synapses >= {int(request.min_synapses)} AND {ws.member('e.' + own, roots)}"
            return self._capped(Result(_typed(ws.table(shape(rows, len(roots))), schema), meta))

    def partners(self, datastack: str, request: wire.PartnersRequest) -> Result:
        def ranked(rows: str, _: int) -> str:
            return f"SELECT root_id, partner_root_id, n_synapses, size_sum FROM ({rows}) ORDER BY ord, n_synapses DESC, partner_root_id"

        return self._partner_answer(datastack, request, ranked, wire.PARTNERS)

    def common_partners(self, datastack: str, request: wire.PartnersRequest) -> Result:
        def shared(rows: str, count: int) -> str:
            return (
                f"WITH p AS ({rows}), c AS (SELECT partner_root_id, sum(n_synapses) AS total FROM p GROUP BY 1 HAVING count(*) = {count}) "
                "SELECT p.partner_root_id, p.root_id, p.n_synapses, p.size_sum FROM p JOIN c USING (partner_root_id) "
                "ORDER BY c.total DESC, p.partner_root_id, p.ord"
            )

        return self._partner_answer(datastack, request, shared, wire.COMMON_PARTNERS)

    def cell_type_matrix(self, datastack: str, request: wire.CellTypeRequest) -> Result:
        at, table, meta = self._start(datastack, request)
        meta.update(cell_type_table=request.cell_type_table, column=request.column)
        with Workspace(self.materialize.snapshots.cursor()) as ws:
            rows = self.sources.cell_types(ws, at, request.cell_type_table, request.column)
            per_root = ws.register(ws.table(
                f"SELECT root, count(DISTINCT cell_type) AS kinds, min(cell_type) AS cell_type FROM {rows} "
                "WHERE root <> 0 AND cell_type IS NOT NULL GROUP BY root"
            ))
            typed = f"(SELECT root, cell_type FROM {per_root} WHERE kinds = 1)"
            neurons = ws.table(f"SELECT cell_type, count(*)::BIGINT AS n_neurons FROM {typed} GROUP BY 1 ORDER BY 1")
            per_type = ws.register(neurons)
            ambiguous = ws.table(f"SELECT count(*) AS n FROM {per_root} WHERE kinds > 1")["n"][0].as_py()
            relation = self.sources.connections(ws, at, table)
            pairs = (
                "SELECT a.cell_type AS pre_type, b.cell_type AS post_type, sum(e.n_synapses)::BIGINT AS n_synapses, "
                "sum(e.size_sum)::DOUBLE AS size_sum, count(*)::BIGINT AS n_connections, "
                f"count(DISTINCT e.{PRE})::BIGINT AS n_pre_neurons, count(DISTINCT e.{POST})::BIGINT AS n_post_neurons "
                f"FROM {relation} e JOIN {typed} a ON e.{PRE} = a.root JOIN {typed} b ON e.{POST} = b.root "
                "WHERE e.n_synapses >= ? GROUP BY 1, 2"
            )
            sql = (
                "SELECT g.*, g.n_synapses / n.n_neurons AS synapses_per_pre_neuron, g.n_synapses / m.n_neurons AS synapses_per_post_neuron "
                f"FROM ({pairs}) g JOIN {per_type} n ON g.pre_type = n.cell_type JOIN {per_type} m ON g.post_type = m.cell_type ORDER BY 1, 2"
            )
            matrix = ws.table(sql, [request.min_synapses])
        meta["neurons"] = {str(k): int(v) for k, v in zip(neurons["cell_type"].to_pylist(), neurons["n_neurons"].to_pylist())}
        meta["neuron_types"] = [_plain(v) for v in neurons["cell_type"].to_pylist()]
        meta["n_ambiguous"] = int(ambiguous)
        return self._whole(Result(matrix, meta), "cell-type matrix")

    def paths(self, datastack: str, request: wire.PathsRequest) -> Result:
        at, table, meta = self._start(datastack, request)
        sources, targets = wire.ordered_unique(request.sources), wire.ordered_unique(request.targets)
        self._check_roots(at, sorted(set(sources + targets)))
        meta.update(max_hops=request.max_hops, max_paths=request.max_paths)
        with Workspace(self.materialize.snapshots.cursor()) as ws:
            relation = self.sources.connections(ws, at, table)
            connections = ws.table(f"SELECT {PRE}, {POST}, n_synapses, size_sum FROM {relation} WHERE n_synapses >= ?", [request.min_synapses])
        found = frames.paths(
            connections.to_pandas(), sources, targets, max_hops=request.max_hops, min_synapses=request.min_synapses, max_paths=request.max_paths
        )
        meta["truncated"] = bool(found.attrs.get("truncated", False))
        return self._capped(Result(pa.Table.from_pandas(found[wire.PATHS.names], schema=wire.PATHS, preserve_index=False), meta))

    def diff(self, datastack: str, request: wire.DiffRequest) -> Result:
        before_at = resolve(self.materialize, self.sources.aligned_volume, datastack, request.from_version, request.from_timestamp)
        after_at = resolve(self.materialize, self.sources.aligned_volume, datastack, request.to_version, request.to_timestamp)
        before_table = self.sources.synapse_table(before_at, request.synapse_table)
        after_table = self.sources.synapse_table(after_at, before_table.name)
        index = self._index(datastack)
        if index is None:
            raise BadRequest(
                f"Datastack {datastack} holds no segmentation here, so roots cannot be followed from one moment to another; "
                "compare partners at each version instead.",
                code="no_segmentation",
            )
        roots = wire.ordered_unique(request.roots)
        self._check_roots(before_at, roots)
        t_after = after_at.timestamp.timestamp()
        successors = {r: remap_roots(index, np.array([r], np.int64), t_after).tolist() for r in roots}
        followed = sorted({s for found in successors.values() for s in found})
        before = self._rows_of(before_at, before_table, roots)
        after = self._rows_of(after_at, after_table, followed)
        found = frames.diff(
            before,
            after,
            roots,
            min_synapses=request.min_synapses,
            supervoxel_roots=lambda svs: roots_of(index, np.asarray(svs, np.int64), t_after),
            successors=successors,
        )
        meta = {
            "datastack": datastack,
            "synapse_table": before_table.name,
            "from": before_at.meta(),
            "to": after_at.meta(),
            "min_synapses": request.min_synapses,
            "truncated": False,
        }
        return self._capped(Result(_typed(pa.Table.from_pandas(found[wire.DIFF.names], preserve_index=False), wire.DIFF), meta))

    def _rows_of(self, at: At, table: Table, roots: list[int]) -> pd.DataFrame:
        """The synapses at ``at`` with either side on one of ``roots`` (diff's columns, by id)."""
        parts = []
        if roots:
            for column in (PRE, POST):
                parts += list(self.sources.rows(at, table, [Filter(table.name, column, "in", roots)], DIFF_COLUMNS))
        schema = pa.schema([(c, pa.int64()) for c in DIFF_COLUMNS])
        rows = pa.concat_tables([schema.empty_table(), *(p.cast(schema) for p in parts)]).to_pandas()
        return rows.drop_duplicates("id").sort_values("id", ignore_index=True)


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _typed(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly the answer's columns and types (DuckDB's sums of integers are HUGEINT)."""
    return pa.table({f.name: table[f.name].cast(f.type) for f in schema})
