"""Plans edits: which supervoxel edges a merge, split, undo or redo adds or removes, and the
new hierarchy of the objects it touches. Planning reads the index and allocates ids but writes
nothing; ``GraphService`` commits the plan and then applies it to the index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from opencave.errors import BadRequest

from .hierarchy import BuiltHierarchy, build_hierarchy, components
from .index import GraphIndex

MAX_CHEBYSHEV_CHUNKS = 3
DEFAULT_BB_OFFSET = (240, 240, 24)  # voxels around split points, as PyChunkedGraph
_CAPACITY_SCALE = 1_000_000
_INFINITE = np.int32(2**30)


@dataclass
class EditPlan:
    """Everything a committed edit writes."""

    kind: str
    added: np.ndarray  # (k, 2) uint64 supervoxel pairs
    removed: np.ndarray
    old_roots: np.ndarray  # uint64
    built: BuiltHierarchy
    details: dict[str, Any] = field(default_factory=dict)
    target_op_id: int | None = None  # the operation an undo or redo acts on

    def log_details(self) -> dict[str, Any]:
        return {
            **self.details,
            "added_edges": self.added.tolist(),
            "removed_edges": self.removed.tolist(),
            "old_roots": self.old_roots.tolist(),
            "new_roots": self.built.root_ids.tolist(),
        }


def _pairs(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.uint64).reshape(-1, 2)


def plan_edge_change(index: GraphIndex, kind: str, added: np.ndarray, removed: np.ndarray, details: dict[str, Any]) -> EditPlan:
    """Rebuild the objects touched by adding and removing supervoxel edges."""
    seq = index.seq
    added, removed = _pairs(added), _pairs(removed)
    ends = index.sv_index(np.concatenate((added.ravel(), removed.ravel())))
    if (ends < 0).any():
        raise BadRequest("The edit names supervoxels that are not in this graph.")
    old_roots = np.unique(index.root_now[ends])
    svs = np.sort(index.leaf_indices(old_roots))
    edges = index.internal_edges(svs, seq)
    a, b = index.edge_a.view()[edges], index.edge_b.view()[edges]
    if removed.size:
        drop = index.edge_indices(removed)
        keep = ~np.isin(edges, drop[drop >= 0])
        a, b = a[keep], b[keep]
    if added.size:
        add_a, add_b = index.sv_index(added[:, 0]), index.sv_index(added[:, 1])
        a, b = np.concatenate((a, add_a)), np.concatenate((b, add_b))
    local_a, local_b = np.searchsorted(svs, a), np.searchsorted(svs, b)
    built = build_hierarchy(
        index.node_id.view()[svs],
        index.sv_chunk_coords(svs),
        local_a,
        local_b,
        index.n_layers,
        index.allocate,
        reuse=index.existing_nodes,
    )
    return EditPlan(kind, added, removed, index.ids_of(old_roots), built, details)


def plan_merge(index: GraphIndex, sv_a: int, sv_b: int, details: dict[str, Any], allow_same_segment: bool = False) -> EditPlan:
    ia, ib = index.sv_index(np.array([sv_a, sv_b], dtype=np.uint64))
    if ia < 0 or ib < 0:
        raise BadRequest("Merge points must resolve to supervoxels of this graph.")
    if ia == ib:
        raise BadRequest("Both merge points lie on the same supervoxel; pick points on the two objects to join.")
    root_a, root_b = index.root_now[[ia, ib]]
    if root_a == root_b and not allow_same_segment:
        raise BadRequest(
            f"Both merge points already belong to one object (root {int(index.ids_of(root_a))}); "
            "a merge must join two different objects."
        )
    chunk_a, chunk_b = index.sv_chunk_coords(np.array([ia, ib]))
    if np.abs(chunk_a - chunk_b).max() > MAX_CHEBYSHEV_CHUNKS:
        raise BadRequest(f"Chebyshev distance between merge points exceeded allowed maximum ({MAX_CHEBYSHEV_CHUNKS} chunks).")
    return plan_edge_change(index, "merge", np.array([[sv_a, sv_b]], dtype=np.uint64), np.zeros((0, 2), np.uint64), details)


@dataclass
class SplitCut:
    """A min-cut between sources and sinks of one object."""

    root: int
    removed: np.ndarray  # (k, 2) uint64 pairs
    local_components: list[np.ndarray]  # supervoxel ids: sources' first, sinks' second
    separated: bool


def find_split(
    index: GraphIndex,
    sources: np.ndarray,
    sinks: np.ndarray,
    source_coords: np.ndarray,
    sink_coords: np.ndarray,
    mincut: bool = True,
    bb_offset: tuple[int, int, int] = DEFAULT_BB_OFFSET,
) -> SplitCut:
    """The edges a split removes (min-cut in a box around the points, or the direct edges)."""
    seq = index.seq
    src = index.sv_index(sources)
    snk = index.sv_index(sinks)
    if (src < 0).any() or (snk < 0).any():
        raise BadRequest("Split points must resolve to supervoxels of this graph.")
    if np.intersect1d(src, snk).size:
        raise BadRequest("A supervoxel is both a source and a sink; move the split points apart.")
    roots = np.unique(index.root_now[np.concatenate((src, snk))])
    if roots.size != 1:
        raise BadRequest(
            "Split sources and sinks must lie in one object, but they lie in "
            f"{roots.size} objects ({', '.join(str(int(r)) for r in index.ids_of(roots))})."
        )
    svs = np.sort(index.leaf_indices(roots))
    edges = index.internal_edges(svs, seq)
    a, b = index.edge_a.view()[edges], index.edge_b.view()[edges]
    if mincut:
        local = _inside_box(index, svs, np.vstack((source_coords, sink_coords)), bb_offset)
        local_edges = np.isin(a, local) & np.isin(b, local)
        cut = _min_cut(local, a[local_edges], b[local_edges], index.edge_affinity.view()[edges[local_edges]], src, snk)
        cut_edges = edges[local_edges][cut]
        nodes = local
    else:
        direct = (np.isin(a, src) & np.isin(b, snk)) | (np.isin(a, snk) & np.isin(b, src))
        cut_edges = edges[direct]
        nodes = np.unique(np.concatenate((src, snk)))
    if cut_edges.size == 0:
        raise BadRequest("The split removes no edge: sources and sinks are not connected by edges that can be cut.")
    keep = ~np.isin(edges, cut_edges)
    labels = components(svs.size, np.searchsorted(svs, a[keep]), np.searchsorted(svs, b[keep]))
    separated = not np.intersect1d(labels[np.searchsorted(svs, src)], labels[np.searchsorted(svs, snk)]).size
    removed = np.stack((index.node_id.view()[index.edge_a.view()[cut_edges]], index.node_id.view()[index.edge_b.view()[cut_edges]]), axis=1)
    return SplitCut(int(index.ids_of(roots)[0]), removed, _local_components(index, nodes, a[keep], b[keep], src, snk), separated)


def plan_split(index: GraphIndex, cut: SplitCut, details: dict[str, Any]) -> EditPlan:
    if not cut.separated:
        raise BadRequest(
            "The min-cut inside the box around the points did not separate sources from sinks; "
            "place the points closer to where the objects should come apart, or add more points."
        )
    return plan_edge_change(index, "split", np.zeros((0, 2), np.uint64), cut.removed, details)


def plan_undo_redo(index: GraphIndex, target_op_id: int, redo: bool) -> EditPlan:
    """Undo (or redo) an operation: apply the inverse (or the same) edge changes again.

    Undoing an undo is a redo of the original operation and vice versa, as in PyChunkedGraph.
    """
    if not 1 <= target_op_id <= index.seq:
        raise BadRequest(f"Operation {target_op_id} does not exist in this graph.")
    target = index.operations[target_op_id]
    assert target is not None
    if target.kind in ("undo", "redo"):
        redo = (target.kind == "undo") == redo  # undo of an undo → redo of its target, etc.
        target = index.operations[int(target.target_op_id)]
        assert target is not None
    added, removed = _pairs(target.details.get("added_edges", [])), _pairs(target.details.get("removed_edges", []))
    if not redo:
        added, removed = removed, added
    added = added[~_active(index, added)] if added.size else added
    removed = removed[_active(index, removed)] if removed.size else removed
    if added.size == 0 and removed.size == 0:
        verb = "redone" if redo else "undone"
        raise BadRequest(f"Operation {target.op_id} cannot be {verb}: its edges are already in that state.")
    kind = "redo" if redo else "undo"
    plan = plan_edge_change(index, kind, added, removed, {f"{kind}_operation_id": target.op_id})
    plan.target_op_id = target.op_id
    return plan


def _active(index: GraphIndex, pairs: np.ndarray) -> np.ndarray:
    edges = index.edge_indices(pairs)
    out = np.zeros(edges.size, dtype=bool)
    out[edges >= 0] = index.edges_active_at(edges[edges >= 0], index.seq)
    return out


def _inside_box(index: GraphIndex, svs: np.ndarray, points: np.ndarray, offset: tuple[int, int, int]) -> np.ndarray:
    """Supervoxels of ``svs`` in chunks that intersect the box around the points."""
    chunk = np.asarray(index.geometry.chunk_size)
    origin = np.asarray(index.geometry.voxel_offset)
    lo = (points.min(axis=0) - offset - origin) // chunk
    hi = (points.max(axis=0) + offset - origin) // chunk
    coords = index.sv_chunk_coords(svs)
    inside = np.all((coords >= lo) & (coords <= hi), axis=1)
    return svs[inside]


def _min_cut(nodes: np.ndarray, a: np.ndarray, b: np.ndarray, affinity: np.ndarray, src: np.ndarray, snk: np.ndarray) -> np.ndarray:
    """Mask of the edges (a, b) in a minimum cut between sources and sinks."""
    n = nodes.size
    la, lb = np.searchsorted(nodes, a), np.searchsorted(nodes, b)
    s_local = np.searchsorted(nodes, src[np.isin(src, nodes)])
    t_local = np.searchsorted(nodes, snk[np.isin(snk, nodes)])
    if s_local.size == 0 or t_local.size == 0:
        raise BadRequest("Split points lie outside the object's local graph.")
    cap = np.maximum(1, (affinity.astype(np.float64) * _CAPACITY_SCALE).astype(np.int64)).clip(max=_INFINITE - 1).astype(np.int32)
    s, t = n, n + 1
    rows = np.concatenate((la, lb, np.full(s_local.size, s), t_local))
    cols = np.concatenate((lb, la, s_local, np.full(t_local.size, t)))
    caps = np.concatenate((cap, cap, np.full(s_local.size, _INFINITE), np.full(t_local.size, _INFINITE)))
    graph = csr_matrix((caps, (rows, cols)), shape=(n + 2, n + 2))
    graph.sum_duplicates()
    flow = maximum_flow(graph, s, t).flow
    residual = (graph - flow).tocsr()
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    reachable = np.zeros(n + 2, dtype=bool)
    reachable[breadth_first_order(residual, s, directed=True, return_predecessors=False)] = True
    return reachable[la] != reachable[lb]


def _local_components(index: GraphIndex, nodes: np.ndarray, a: np.ndarray, b: np.ndarray, src: np.ndarray, snk: np.ndarray) -> list[np.ndarray]:
    """Components of the local graph after the cut: the sources', the sinks', then the rest."""
    inside = np.isin(a, nodes) & np.isin(b, nodes)
    labels = components(nodes.size, np.searchsorted(nodes, a[inside]), np.searchsorted(nodes, b[inside]))
    ids = index.node_id.view()[nodes]
    first = [labels[np.searchsorted(nodes, src[0])], labels[np.searchsorted(nodes, snk[0])]]
    order = list(dict.fromkeys(first + np.unique(labels).tolist()))
    return [ids[labels == label] for label in order]
