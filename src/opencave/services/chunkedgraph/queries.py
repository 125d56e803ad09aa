"""Read queries of a chunkedgraph, answered from its index as of a sequence number.

Every function returns plain Python/numpy values; the HTTP layer only encodes them.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import numpy as np

from opencave.errors import BadRequest, NotFound
from opencave.wire.node_ids import chunk_coordinates

from .hierarchy import components
from .index import GraphIndex, Operation


# -- ids and bounds ------------------------------------------------------------------------
def node_indices(index: GraphIndex, ids: Any, seq: int | None = None) -> np.ndarray:
    """Indices of node ids; 404 naming the first unknown one (or one not created yet)."""
    ids = np.atleast_1d(np.asarray(ids, dtype=np.uint64))
    idx = index.node_index(ids)
    known = idx >= 0 if seq is None else index.exists_at(idx, seq)
    if not known.all():
        bad = int(ids[~known][0])
        when = "" if seq is None else " at the requested time"
        raise NotFound(f"Node {bad} does not exist in this graph{when}.", code="unknown_node")
    return idx


def root_indices(index: GraphIndex, ids: Any) -> np.ndarray:
    """Indices of root ids; 400 for ids of another layer, 404 for unknown ids."""
    idx = node_indices(index, ids)
    layers = index.node_layer.view()[idx]
    wrong = layers != index.n_layers
    if wrong.any():
        bad = int(np.atleast_1d(np.asarray(ids, dtype=np.uint64))[wrong][0])
        raise BadRequest(
            f"Node {bad} is a layer-{int(layers[wrong][0])} node; this endpoint takes root ids (layer {index.n_layers}).",
            code="not_a_root",
        )
    return idx


def in_bounds(index: GraphIndex, node_idx: np.ndarray, bounds: np.ndarray | None) -> np.ndarray:
    """Whether each node's chunk intersects the bounds (voxels)."""
    if bounds is None:
        return np.ones(node_idx.size, dtype=bool)
    geometry = index.geometry
    chunk = np.asarray(geometry.chunk_size)
    origin = np.asarray(geometry.voxel_offset)
    lo = (bounds[:, 0] - origin) // chunk
    hi = (np.maximum(bounds[:, 1] - 1, bounds[:, 0]) - origin) // chunk
    layers = index.node_layer.view()[node_idx].astype(np.int64)
    coords = chunk_coordinates(index.layout, index.node_id.view()[node_idx])
    scale = (1 << np.maximum(layers - 2, 0))[:, None]
    first = coords * scale
    last = (coords + 1) * scale - 1
    overlap = np.all((last >= lo) & (first <= hi), axis=1)
    return overlap | (layers >= index.n_layers)


# -- hierarchy -----------------------------------------------------------------------------
def roots(index: GraphIndex, ids: np.ndarray, seq: int, stop_layer: int | None = None) -> np.ndarray:
    """Root (or ancestor at ``stop_layer``) id of each node; 0 for unknown ids."""
    idx = index.node_index(ids)
    return index.ids_of(index.roots_at(idx, seq, stop_layer))


def root(index: GraphIndex, node_id: int, seq: int, stop_layer: int | None = None) -> int:
    idx = node_indices(index, [node_id], seq)
    return int(index.ids_of(index.roots_at(idx, seq, stop_layer))[0])


def children(index: GraphIndex, node_id: int) -> np.ndarray:
    idx = node_indices(index, [node_id])
    kids, _ = index.children_of(idx)
    return np.sort(index.ids_of(kids))


def leaves(index: GraphIndex, node_id: int, stop_layer: int = 1, bounds: np.ndarray | None = None) -> np.ndarray:
    idx = node_indices(index, [node_id])
    return _leaves(index, idx, stop_layer, bounds)


def _leaves(index: GraphIndex, idx: np.ndarray, stop_layer: int, bounds: np.ndarray | None) -> np.ndarray:
    if bounds is None:
        found = index.leaf_indices(idx, stop_layer)
    else:  # prune whole subtrees outside the bounds
        layers = index.node_layer.view()
        frontier, parts = idx, []
        while frontier.size:
            frontier = frontier[in_bounds(index, frontier, bounds)]
            done = layers[frontier] <= stop_layer
            parts.append(frontier[done])
            frontier, _ = index.children_of(frontier[~done])
        found = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return index.ids_of(found)


def leaves_many(index: GraphIndex, ids: Any, stop_layer: int = 1, bounds: np.ndarray | None = None) -> dict[int, np.ndarray]:
    idx = node_indices(index, ids)
    return {int(index.ids_of(i)): _leaves(index, np.array([i]), stop_layer, bounds) for i in idx}


def minimal_covering_nodes(index: GraphIndex, ids: Any, seq: int) -> np.ndarray:
    """The fewest nodes whose supervoxels are exactly those of the given nodes."""
    current = np.unique(node_indices(index, ids, seq))
    while True:
        parents = index.parents_at(current, seq)
        candidates = np.unique(parents[parents >= 0])
        if candidates.size == 0:
            break
        kids, owner = index.children_of(candidates)
        missing = np.bincount(owner[~np.isin(kids, current)], minlength=candidates.size)
        full = candidates[missing == 0]
        if full.size == 0:
            break
        covered, _ = index.children_of(full)
        current = np.union1d(current[~np.isin(current, covered)], full)
    return np.sort(index.ids_of(current))


# -- lineage and time ------------------------------------------------------------------------
def is_latest(index: GraphIndex, ids: Any, seq: int) -> np.ndarray:
    """Whether each id is a current root at ``seq``. Unknown ids (0 included) are not, as in
    PyChunkedGraph — caveclient's live queries ask about every root id a filter names; a known
    node of another layer is a mistake worth a 400."""
    ids = np.atleast_1d(np.asarray(ids, dtype=np.uint64))
    idx = index.node_index(ids)
    known = idx >= 0
    if known.any():
        root_indices(index, ids[known])
    return index.is_latest_root(idx, seq)


def root_timestamps(index: GraphIndex, ids: Any, seq: int, latest: bool, now: float) -> list[float]:
    """Creation time of each node, or with ``latest`` the time it stopped being the latest."""
    idx = node_indices(index, ids)
    if not latest:
        return [index.op_timestamp(int(op)) for op in index.node_op.view()[idx]]
    superseded = index.superseded_op.view()[idx]
    return [index.op_timestamp(int(op)) if 0 < op <= seq else now for op in superseded]


def valid_nodes(index: GraphIndex, ids: Any, start: float, end: float) -> np.ndarray:
    """The ids that exist and were created within [start, end]."""
    ids = np.atleast_1d(np.asarray(ids, dtype=np.uint64))
    idx = index.node_index(ids)
    known = idx >= 0
    created = np.full(ids.size, np.inf)
    created[known] = index.op_ts.view()[index.node_op.view()[idx[known]]]
    return ids[known & (created >= start) & (created <= end)]


def _creating_op(index: GraphIndex, node: int) -> Operation | None:
    op = int(index.node_op.view()[node])
    return index.operations[op] if op else None


def lineage_graph(index: GraphIndex, ids: Any, t_past: float, t_future: float) -> dict[str, Any]:
    """Roots linked to the roots they replaced (back to ``t_past``) and the roots that replaced
    them (up to ``t_future``): networkx node-link JSON, as PyChunkedGraph answers."""
    start = root_indices(index, ids)
    nodes: dict[int, dict[str, Any]] = {}
    links: set[tuple[int, int]] = set()
    ts = index.op_ts.view()

    def add(node: int) -> int:
        node_id = int(index.ids_of(node))
        if node_id not in nodes:
            superseded = int(index.superseded_op.view()[node])
            op = superseded or int(index.node_op.view()[node])
            attrs: dict[str, Any] = {"id": node_id, "timestamp": float(ts[index.node_op.view()[node]])}
            if op:
                attrs["operation_id"] = op
            nodes[node_id] = attrs
        return node_id

    past, future = list(start), list(start)
    seen_past, seen_future = set(), set()
    while past or future:
        next_past, next_future = [], []
        for node in past:
            if node in seen_past:
                continue
            seen_past.add(node)
            node_id = add(node)
            operation = _creating_op(index, node)
            if operation is None or index.op_timestamp(operation.op_id) < t_past:
                continue
            for former in index.node_index(np.array(operation.old_roots, dtype=np.uint64)):
                links.add((add(former), node_id))
                next_past.append(int(former))
        for node in future:
            if node in seen_future:
                continue
            seen_future.add(node)
            node_id = add(node)
            superseded = int(index.superseded_op.view()[node])
            if not superseded or index.op_timestamp(int(index.node_op.view()[node])) > t_future:
                continue
            for newer in index.node_index(np.array(index.operations[superseded].new_roots, dtype=np.uint64)):
                links.add((node_id, add(newer)))
                next_future.append(int(newer))
        past, future = next_past, next_future
    return {
        "directed": True,
        "multigraph": False,
        "graph": {},
        "nodes": sorted(nodes.values(), key=lambda n: n["id"]),
        "links": [{"source": s, "target": t} for s, t in sorted(links)],
    }


def past_id_mapping(index: GraphIndex, ids: Any, seq_past: int, seq_future: int) -> dict[str, dict[str, Any]]:
    """For each root, the roots at the past time that held any of its supervoxels; for each of
    those, the single root at the future time holding all of its supervoxels (if there is one)."""
    idx = root_indices(index, ids)
    past_roots = index.sv_roots_at(seq_past)
    future_roots = index.sv_roots_at(seq_future)
    past_map: dict[str, list[int]] = {}
    future_map: dict[str, int] = {}
    for node in idx:
        svs = index.leaf_indices(np.array([node]))
        olds = np.unique(past_roots[svs])
        past_map[str(int(index.ids_of(node)))] = index.ids_of(olds).tolist()
        for old in olds:
            later = np.unique(future_roots[index.leaf_indices(np.array([old]))])
            if later.size == 1:
                future_map[str(int(index.ids_of(old)))] = int(index.ids_of(later[0]))
    return {"past_id_map": past_map, "future_id_map": future_map}


def delta_roots(index: GraphIndex, seq_past: int, seq_future: int) -> tuple[np.ndarray, np.ndarray]:
    """Roots that stopped existing between the two times, and roots that appeared."""
    old: set[int] = set()
    new: set[int] = set()
    for op_id in range(seq_past + 1, seq_future + 1):
        operation = index.operations[op_id]
        old.update(operation.old_roots)
        new.update(operation.new_roots)
    old_idx = index.node_index(np.array(sorted(old), dtype=np.uint64))
    new_idx = index.node_index(np.array(sorted(new), dtype=np.uint64))
    old_idx = old_idx[index.exists_at(old_idx, seq_past) & index.is_latest_root(old_idx, seq_past)]
    new_idx = new_idx[index.is_latest_root(new_idx, seq_future)]
    return np.sort(index.ids_of(old_idx)), np.sort(index.ids_of(new_idx))


def history_operations(index: GraphIndex, root_id: int) -> tuple[list[Operation], list[int]]:
    """The operations that built a root (oldest first) and every root it descends from."""
    start = root_indices(index, [root_id])[0]
    ops: dict[int, Operation] = {}
    ancestors: list[int] = []
    frontier = [int(start)]
    seen = set(frontier)
    while frontier:
        node = frontier.pop()
        operation = _creating_op(index, node)
        if operation is None:
            continue
        ops[operation.op_id] = operation
        for former in index.node_index(np.array(operation.old_roots, dtype=np.uint64)).tolist():
            if former not in seen:
                seen.add(former)
                ancestors.append(int(index.ids_of(former)))
                frontier.append(former)
    return [ops[k] for k in sorted(ops)], sorted(ancestors)


def undone_operations(operations: list[Operation]) -> set[int]:
    """Ids of operations whose last undo/redo (among ``operations``) left them undone."""
    state: dict[int, bool] = {}
    for operation in operations:
        if operation.kind in ("undo", "redo") and operation.target_op_id is not None:
            state[int(operation.target_op_id)] = operation.kind == "undo"
    return {op for op, undone in state.items() if undone}


def filtered_history(operations: list[Operation]) -> list[Operation]:
    """Operations without the undone ones and without the undos and redos themselves."""
    undone = undone_operations(operations)
    return [op for op in operations if op.kind not in ("undo", "redo") and op.op_id not in undone]


def change_log(index: GraphIndex, root_id: int, filtered: bool) -> dict[str, Any]:
    operations, ancestors = history_operations(index, root_id)
    if filtered:
        operations = filtered_history(operations)
    users: dict[str, dict[str, int]] = defaultdict(lambda: {"n_splits": 0, "n_mergers": 0})
    for operation in operations:
        users[operation.user_id]["n_mergers" if operation.is_merge else "n_splits"] += 1
    merges = sum(op.is_merge for op in operations)
    return {
        "n_splits": len(operations) - merges,
        "n_mergers": merges,
        "user_info": dict(users),
        "operations_ids": [op.op_id for op in operations],
        "past_ids": ancestors,
    }


def tabular_change_log(index: GraphIndex, root_id: int, filtered: bool) -> list[dict[str, Any]]:
    """One row per operation in a root's history (oldest first)."""
    operations, _ = history_operations(index, root_id)
    undone = undone_operations(operations)
    final = set(index.leaf_indices(root_indices(index, [root_id])).tolist())
    rows = []
    for operation in filtered_history(operations) if filtered else operations:
        row: dict[str, Any] = {
            "operation_id": operation.op_id,
            "timestamp": int(round(operation.timestamp * 1000)),
            "user_id": operation.user_id,
            "before_root_ids": operation.old_roots,
            "after_root_ids": operation.new_roots,
            "is_merge": operation.is_merge,
        }
        if not filtered:
            edges = np.asarray(operation.details.get("added_edges", []) + operation.details.get("removed_edges", []), dtype=np.uint64)
            touched = index.sv_index(edges.ravel()) if edges.size else np.zeros(0, np.int64)
            row["in_neuron"] = bool(any(int(sv) in final for sv in touched))
            row["is_relevant"] = row["in_neuron"] and operation.op_id not in undone and operation.kind not in ("undo", "redo")
        rows.append(row)
    return rows


def merge_log(index: GraphIndex, root_id: int) -> dict[str, list[Any]]:
    operations, _ = history_operations(index, root_id)
    merges = [op for op in operations if op.kind == "merge"]
    return {
        "merge_edges": [op.details.get("added_edges", []) for op in merges],
        "merge_edge_coords": [[[c] for c in op.details.get("source_coords", []) + op.details.get("sink_coords", [])] for op in merges],
    }


def user_operations(index: GraphIndex, user_id: str | None, start: float, end: float, include_undone: bool) -> list[Operation]:
    operations = [op for op in index.operations[1 : index.seq + 1] if op is not None and start <= op.timestamp <= end]
    if user_id is not None:
        operations = [op for op in operations if op.user_id == str(user_id)]
    if not include_undone:
        undone = undone_operations([op for op in index.operations[1 : index.seq + 1] if op is not None])
        operations = [op for op in operations if op.op_id not in undone]
    return operations


def operation_details(index: GraphIndex, op_ids: list[int]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for op_id in op_ids:
        if not 1 <= op_id <= index.seq:
            raise NotFound(f"Operation {op_id} does not exist in this graph.", code="unknown_operation")
        operation = index.operations[op_id]
        details = operation.details
        entry: dict[str, Any] = {
            "roots": details.get("new_roots", []),
            "user": operation.user_id,
            "timestamp": str(datetime.fromtimestamp(operation.timestamp, UTC)),
            "operation_ts": operation.timestamp,
            "operation_status": 0,
        }
        for key in ("added_edges", "removed_edges", "source_ids", "sink_ids", "source_coords", "sink_coords", "bb_offset"):
            if details.get(key):
                entry[key] = details[key]
        for key in ("undo_operation_id", "redo_operation_id"):
            if key in details:
                entry[key] = details[key]
        out[str(op_id)] = entry
    return out


# -- graphs inside one object ----------------------------------------------------------------
def _root_edges(index: GraphIndex, node: int) -> tuple[np.ndarray, np.ndarray]:
    """Supervoxels below a node and their active edges: for a root, as they were while it
    existed; for other nodes, as they are now."""
    svs = np.sort(index.leaf_indices(np.array([node])))
    seq = index.seq
    if index.node_layer.view()[node] == index.n_layers:
        superseded = int(index.superseded_op.view()[node])
        seq = superseded - 1 if superseded else index.seq
    return svs, index.internal_edges(svs, seq)


def subgraph(index: GraphIndex, node_id: int, bounds: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Supervoxel edges inside a node (within bounds): pairs, affinities, areas."""
    node = node_indices(index, [node_id])[0]
    _, edges = _root_edges(index, int(node))
    a, b = index.edge_a.view()[edges], index.edge_b.view()[edges]
    if bounds is not None:
        keep = in_bounds(index, a, bounds) & in_bounds(index, b, bounds)
        edges, a, b = edges[keep], a[keep], b[keep]
    pairs = np.stack((index.ids_of(a), index.ids_of(b)), axis=1)
    return pairs, index.edge_affinity.view()[edges].astype(np.float64), index.edge_area.view()[edges]


def level2_graph(index: GraphIndex, root_id: int, bounds: np.ndarray | None) -> np.ndarray:
    """Pairs of L2 nodes of an object joined by at least one active supervoxel edge."""
    node = root_indices(index, [root_id])[0]
    _, edges = _root_edges(index, int(node))
    l2 = index.leaf_indices(np.array([node]), stop_layer=2)
    kids, owner = index.children_of(l2)
    l2_of_sv = np.full(index.n_sv, -1, dtype=np.int64)
    l2_of_sv[kids] = l2[owner]
    a = l2_of_sv[index.edge_a.view()[edges]]
    b = l2_of_sv[index.edge_b.view()[edges]]
    keep = a != b
    if bounds is not None:
        keep &= in_bounds(index, a, bounds) & in_bounds(index, b, bounds)
    lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    keys = np.unique(lo * np.int64(index.node_id.size) + hi)  # one int per pair: a 1-d unique
    lo, hi = np.divmod(keys, np.int64(index.node_id.size))
    return np.stack((index.ids_of(lo), index.ids_of(hi)), axis=1) if keys.size else np.zeros((0, 2), np.uint64)


def level2_of_supervoxels(index: GraphIndex, sv_ids: np.ndarray, seq: int) -> np.ndarray:
    return index.ids_of(index.roots_at(index.node_index(sv_ids), seq, stop_layer=2))


def contact_sites(index: GraphIndex, root_id: int, bounds: np.ndarray | None, partners: bool) -> dict[str, list[dict[str, Any]]]:
    """Where an object touches others: groups of touching supervoxel pairs (connected through
    the object's own edges), with their contact area in voxel faces."""
    node = root_indices(index, [root_id])[0]
    svs = np.sort(index.leaf_indices(np.array([node])))
    member = np.zeros(index.n_sv, dtype=bool)
    member[svs] = True
    edges = index.incident_edges(svs)
    a, b = index.edge_a.view()[edges], index.edge_b.view()[edges]
    touching = member[a] != member[b]
    inner = np.where(member[a[touching]], a[touching], b[touching])
    outer = np.where(member[a[touching]], b[touching], a[touching])
    area = index.edge_area.view()[edges[touching]]
    if bounds is not None:
        keep = in_bounds(index, inner, bounds)
        inner, outer, area = inner[keep], outer[keep], area[keep]
    partner = index.sv_roots_at(index.seq)[outer]
    out: dict[str, list[dict[str, Any]]] = {}
    site_number = 0
    for other in np.unique(partner):
        sel = partner == other
        members = np.unique(inner[sel])
        own = index.internal_edges(svs, index.seq)
        oa, ob = index.edge_a.view()[own], index.edge_b.view()[own]
        link = np.isin(oa, members) & np.isin(ob, members)
        labels = components(members.size, np.searchsorted(members, oa[link]), np.searchsorted(members, ob[link]))
        site_of_pair = labels[np.searchsorted(members, inner[sel])]
        for site in np.unique(site_of_pair):
            pick = site_of_pair == site
            site_number += 1
            key = str(int(index.ids_of(other))) if partners else str(site_number)
            out.setdefault(key, []).append(
                {
                    "area": int(area[sel][pick].sum()),
                    "supervoxel_pairs": np.stack((index.ids_of(inner[sel][pick]), index.ids_of(outer[sel][pick])), axis=1).tolist(),
                }
            )
    return out
