"""The in-memory index of one chunkedgraph: every node, its children, its parents over time,
the supervoxel edges and their state, and the operation log.

The SQL store is the truth; this index is rebuilt from it at start and brought up to date with
every operation another process committed (``GraphService`` does the syncing). It answers all
reads as of an operation sequence number ``seq`` (the number of operations applied at a
timestamp), so a read at any past time sees the graph exactly as it was.

Concurrency: one writer at a time (the service's lock) appends; readers never lock. Arrays
readers index are either append-only (``Growable``) or replaced whole on each change, and the
few values updated in place (when a root was superseded) are always compared with ``seq``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from opencave.wire.node_ids import (
    NodeIdLayout,
    chunk_coordinates,
    get_layer,
    segment_ids,
)

from .arrays import Growable, gather_ranges, insert_sorted, lookup_sorted
from .hierarchy import BuiltHierarchy

PAST_CACHE_SIZE = 6


@dataclass(frozen=True)
class Geometry:
    """Where the graph's chunks lie in the volume."""

    layout: NodeIdLayout
    chunks_per_axis: tuple[int, int, int]
    chunk_size: tuple[int, int, int]
    resolution: tuple[float, float, float]
    voxel_offset: tuple[int, int, int]
    volume_size: tuple[int, int, int]

    @property
    def n_layers(self) -> int:
        return self.layout.n_layers


@dataclass
class Operation:
    """One committed edit, as logged."""

    op_id: int
    timestamp: float
    user_id: str
    kind: str  # merge, split, undo, redo
    target_op_id: int | None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def old_roots(self) -> list[int]:
        return self.details.get("old_roots", [])

    @property
    def new_roots(self) -> list[int]:
        return self.details.get("new_roots", [])

    @property
    def is_merge(self) -> bool:
        return bool(self.details.get("added_edges"))


class GraphIndex:
    """Nodes, hierarchy, edges and operations of one graph, queryable at any ``seq``."""

    def __init__(
        self,
        geometry: Geometry,
        chunk_sv_counts: np.ndarray,
        edges: np.ndarray,
        affinity: np.ndarray,
        area: np.ndarray,
        initially_active: np.ndarray,
        created: float,
    ) -> None:
        self.geometry = geometry
        self.layout = geometry.layout
        self.n_layers = geometry.n_layers
        nx, ny, nz = geometry.chunks_per_axis
        counts = np.asarray(chunk_sv_counts, dtype=np.int64).reshape(nx, ny, nz)
        self._sv_counts = counts.ravel()
        self._sv_offsets = np.concatenate(([0], np.cumsum(self._sv_counts)))
        self.n_sv = int(self._sv_offsets[-1])
        sv_ids = self._all_supervoxel_ids(counts)

        # Edges between supervoxels (indices), sorted by (a, b) with a < b.
        a = self.sv_index(edges[:, 0])
        b = self.sv_index(edges[:, 1])
        if (a < 0).any() or (b < 0).any():
            raise ValueError("an edge names a supervoxel that is not in the volume")
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        order = np.lexsort((hi, lo))
        self.edge_a = Growable(np.int64, lo[order])
        self.edge_b = Growable(np.int64, hi[order])
        self.edge_affinity = Growable(np.float32, np.asarray(affinity, dtype=np.float32)[order])
        self.edge_area = Growable(np.int64, np.asarray(area)[order])
        self.active0 = Growable(bool, np.asarray(initially_active, dtype=bool)[order])
        self.n_base_edges = int(lo.size)
        self._edge_keys = lo[order] * self.n_sv + hi[order]
        ends = np.concatenate((lo[order], hi[order]))
        self._adj_edges = np.concatenate((np.arange(lo.size), np.arange(lo.size)))[np.argsort(ends, kind="stable")]
        self._adj_ptr = np.concatenate(([0], np.cumsum(np.bincount(ends, minlength=self.n_sv))))
        self._extra_edges: dict[int, int] = {}  # pair key -> edge index, for edges added by merges
        self._extra_adj: dict[int, tuple[int, ...]] = {}
        # (seq, root of each supervoxel, active flag of each edge) as of the last operation,
        # swapped as one so readers never mix two states.
        self._now: tuple[int, np.ndarray, np.ndarray] = (-1, np.full(self.n_sv, -1, dtype=np.int64), self.active0.view().copy())
        self._change_keys = np.zeros(0, dtype=np.int64)  # (edge << 32) | op, sorted
        self._change_state = np.zeros(0, dtype=bool)

        # Nodes: supervoxels first (index = canonical supervoxel order), then everything built.
        self.node_id = Growable(np.uint64, sv_ids)
        self.node_layer = Growable(np.int8, np.ones(self.n_sv, dtype=np.int8))
        self.node_op = Growable(np.int64, np.zeros(self.n_sv, dtype=np.int64))
        self.superseded_op = Growable(np.int64, np.zeros(self.n_sv, dtype=np.int64))
        self.child_ptr = Growable(np.int64, np.zeros(self.n_sv + 1, dtype=np.int64))
        self.child_flat = Growable(np.int64)
        self._other_ids = np.zeros(0, dtype=np.uint64)  # sorted ids of nodes above layer 1
        self._other_idx = np.zeros(0, dtype=np.int64)
        self._parent_keys = np.zeros(0, dtype=np.int64)  # (child << 32) | parent, sorted
        self.nodes_after_op = Growable(np.int64, [self.n_sv])  # node count once op k applied

        self.op_ts = Growable(np.float64, [created])
        self.operations: list[Operation | None] = [None]
        self._counters: dict[int, int] = {}
        self._past: OrderedDict[int, np.ndarray] = OrderedDict()
        self._past_lock = threading.Lock()

    # -- ids -------------------------------------------------------------------------------
    def _all_supervoxel_ids(self, counts: np.ndarray) -> np.ndarray:
        nx, ny, nz = counts.shape
        cx, cy, cz = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")
        chunk = np.repeat(np.arange(counts.size), counts.ravel())
        segment = np.arange(self.n_sv) - self._sv_offsets[chunk] + 1
        return self.layout.node_id(1, cx.ravel()[chunk], cy.ravel()[chunk], cz.ravel()[chunk], segment)

    def sv_index(self, ids: np.ndarray) -> np.ndarray:
        """Index of each supervoxel id, -1 where the id is not a supervoxel of this graph."""
        ids = np.atleast_1d(np.asarray(ids, dtype=np.uint64))
        out = np.full(ids.size, -1, dtype=np.int64)
        layer1 = get_layer(ids) == 1
        if not layer1.any():
            return out
        coords = chunk_coordinates(self.layout, ids[layer1])
        nx, ny, nz = self.geometry.chunks_per_axis
        inside = np.all((coords >= 0) & (coords < (nx, ny, nz)), axis=1)
        chunk = np.where(inside, (coords[:, 0] * ny + coords[:, 1]) * nz + coords[:, 2], 0)
        segment = segment_ids(self.layout, ids[layer1]).astype(np.int64)
        valid = inside & (segment >= 1) & (segment <= self._sv_counts[chunk])
        out[np.flatnonzero(layer1)[valid]] = self._sv_offsets[chunk[valid]] + segment[valid] - 1
        return out

    def node_index(self, ids: Any) -> np.ndarray:
        """Index of each node id of any layer, -1 where unknown."""
        ids = np.atleast_1d(np.asarray(ids, dtype=np.uint64))
        out = self.sv_index(ids)
        rest = out < 0
        if rest.any():
            out[rest] = lookup_sorted(self._other_ids, self._other_idx, ids[rest])
        return out

    def ids_of(self, index: np.ndarray) -> np.ndarray:
        """Node ids of indices; 0 where the index is -1."""
        ids = self.node_id.view()
        index = np.asarray(index, dtype=np.int64)
        return np.where(index >= 0, ids[np.maximum(index, 0)], np.uint64(0)).astype(np.uint64)

    def allocate(self, layer: int, coords: np.ndarray) -> np.ndarray:
        """New ids: the next free segment numbers in each chunk (writer only)."""
        chunk_ids = np.asarray(self.layout.chunk_id(layer, coords[:, 0], coords[:, 1], coords[:, 2]), dtype=np.uint64)
        out = np.empty(chunk_ids.size, dtype=np.uint64)
        unique, inverse = np.unique(chunk_ids, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        starts = np.searchsorted(inverse[order], np.arange(unique.size))
        rank = np.empty(chunk_ids.size, dtype=np.int64)
        rank[order] = np.arange(chunk_ids.size) - np.repeat(starts, np.bincount(inverse, minlength=unique.size))
        base = np.array([self._counters.get(int(c), 0) for c in unique], dtype=np.int64)
        out[:] = chunk_ids + (base[inverse] + rank + 1).astype(np.uint64)
        limit = 1 << self.layout.segment_bits(layer)
        if (base[inverse] + rank + 1 >= limit).any():
            raise OverflowError(f"chunk segment counter overflow at layer {layer}")
        for i, chunk in enumerate(unique.tolist()):
            self._counters[chunk] = int(base[i] + np.count_nonzero(inverse == i))
        return out

    @property
    def seq(self) -> int:
        """Operations applied (0: only the ingest; -1: nothing yet)."""
        return self._now[0]

    @property
    def root_now(self) -> np.ndarray:
        return self._now[1]

    @property
    def active_now(self) -> np.ndarray:
        return self._now[2]

    # -- time --------------------------------------------------------------------------------
    @property
    def created(self) -> float:
        return float(self.op_ts.view()[0])

    def seq_at(self, timestamp: float) -> int:
        """Number of operations applied as of ``timestamp`` (posix seconds)."""
        ts = self.op_ts.view()[: self.seq + 1]
        return int(np.searchsorted(ts[1:], timestamp, side="right"))

    def op_timestamp(self, op_id: int) -> float:
        return float(self.op_ts.view()[op_id])

    # -- applying ----------------------------------------------------------------------------
    def apply(self, built: BuiltHierarchy | tuple[np.ndarray, np.ndarray, np.ndarray], operation: Operation | None) -> None:
        """Add the nodes one operation created (op 0: the ingest) and its effects (writer only)."""
        if isinstance(built, BuiltHierarchy):
            node_ids, child_ptr, child_ids = built.node_ids, built.child_ptr, built.child_ids
        else:
            node_ids, child_ptr, child_ids = built
        op_id = 0 if operation is None else operation.op_id
        if op_id != self.seq + 1:
            raise ValueError(f"operation {op_id} applied out of order (at {self.seq})")
        first = self.node_id.size
        new_index = np.arange(first, first + node_ids.size)
        self._other_ids, self._other_idx = insert_sorted(self._other_ids, self._other_idx, node_ids, new_index)
        self.node_id.append(node_ids)
        self.node_layer.append(get_layer(node_ids).astype(np.int8))
        self.node_op.append(np.full(node_ids.size, op_id))
        self.superseded_op.append(np.zeros(node_ids.size, dtype=np.int64))
        child_index = self.node_index(child_ids)
        if (child_index < 0).any():
            raise ValueError("a new node names an unknown child")
        self.child_flat.append(child_index)
        self.child_ptr.append(self.child_ptr.view()[-1] + child_ptr[1:])
        parents = np.repeat(new_index, np.diff(child_ptr))
        self._parent_keys = merge_keys(self._parent_keys, (child_index << 32) | parents)
        if operation is None:
            self.nodes_after_op.set(0, self.node_id.size)
        else:
            self.nodes_after_op.append([self.node_id.size])
        self._note_counters(node_ids)

        root_now = self.root_now.copy()
        roots = new_index[get_layer(node_ids) == self.n_layers]
        leaves, owner = self.leaves_with_owner(roots)
        root_now[leaves] = roots[owner]
        active_now = self.active_now
        if operation is not None:
            active_now = self._apply_edge_changes(operation)
            old = self.node_index(np.array(operation.old_roots, dtype=np.uint64))
            self.superseded_op.set(old[old >= 0], op_id)
            self.op_ts.append([operation.timestamp])
            self.operations.append(operation)
        self._now = (op_id, root_now, active_now)

    def apply_many(self, items: list[tuple[tuple[np.ndarray, np.ndarray, np.ndarray], Operation]]) -> None:
        """Apply consecutive logged operations at once, as a process catching up does: the state
        ``apply`` reaches one operation at a time, but each whole-array copy and sorted merge
        (roots, parent keys, node ids) is made once for the batch, not once per operation
        (replaying a few thousand operations of a large graph went from minutes to seconds)."""
        if not items:
            return
        ops = [operation for _, operation in items]
        if [op.op_id for op in ops] != list(range(self.seq + 1, self.seq + 1 + len(ops))):
            raise ValueError(f"operations {ops[0].op_id}… applied out of order (at {self.seq})")
        counts = np.array([ids.size for (ids, _, _), _ in items], dtype=np.int64)
        node_ids = np.concatenate([ids for (ids, _, _), _ in items]).astype(np.uint64)
        child_ids = np.concatenate([kids for (_, _, kids), _ in items]).astype(np.uint64)
        sizes = np.concatenate([np.diff(ptr) for (_, ptr, _), _ in items]).astype(np.int64)
        first = self.node_id.size
        new_index = np.arange(first, first + node_ids.size)
        layers = get_layer(node_ids)
        self._other_ids, self._other_idx = insert_sorted(self._other_ids, self._other_idx, node_ids, new_index)
        self.node_id.append(node_ids)
        self.node_layer.append(layers.astype(np.int8))
        self.node_op.append(np.repeat([op.op_id for op in ops], counts))
        self.superseded_op.append(np.zeros(node_ids.size, dtype=np.int64))
        child_index = self.node_index(child_ids)  # children may be nodes of earlier operations of the batch
        if (child_index < 0).any():
            raise ValueError("a new node names an unknown child")
        self.child_flat.append(child_index)
        self.child_ptr.append(self.child_ptr.view()[-1] + np.cumsum(sizes))
        self._parent_keys = merge_keys(self._parent_keys, (child_index << 32) | np.repeat(new_index, sizes))
        self.nodes_after_op.append(first + np.cumsum(counts))
        self._note_counters(node_ids)

        root_now = self.root_now.copy()
        active_now = self.active_now.copy()
        ends = np.cumsum(counts)
        for operation, end, count in zip(ops, ends.tolist(), counts.tolist()):
            mine = slice(end - count, end)
            roots = new_index[mine][layers[mine] == self.n_layers]
            leaves, owner = self.leaves_with_owner(roots)
            root_now[leaves] = roots[owner]
            active_now = self._apply_edge_changes(operation, active_now)
            old = self.node_index(np.array(operation.old_roots, dtype=np.uint64))
            self.superseded_op.set(old[old >= 0], operation.op_id)
        self.op_ts.append([op.timestamp for op in ops])
        self.operations.extend(ops)
        self._now = (ops[-1].op_id, root_now, active_now)

    def _note_counters(self, node_ids: np.ndarray) -> None:
        if node_ids.size == 0:
            return
        segments = np.zeros(node_ids.size, dtype=np.uint64)
        chunks = np.zeros(node_ids.size, dtype=np.uint64)
        for layer in np.unique(get_layer(node_ids)):
            sel = get_layer(node_ids) == layer
            mask = np.uint64((1 << self.layout.segment_bits(int(layer))) - 1)
            segments[sel] = node_ids[sel] & mask
            chunks[sel] = node_ids[sel] & ~mask
        for chunk, seg in zip(*_max_per_key(chunks, segments)):
            if seg > self._counters.get(chunk, 0):
                self._counters[chunk] = seg

    def _apply_edge_changes(self, operation: Operation, working: np.ndarray | None = None) -> np.ndarray:
        """The edge states after ``operation``: a new array, or ``working`` changed in place
        (grown when the operation added edges) when a batch owns one."""
        changes: list[tuple[int, bool]] = []
        for key, state in (("added_edges", True), ("removed_edges", False)):
            pairs = np.asarray(operation.details.get(key, []), dtype=np.uint64).reshape(-1, 2)
            if pairs.size:
                for edge in self.edge_indices(pairs, create=state):
                    changes.append((int(edge), state))
        if not changes:
            return self.active_now if working is None else working
        active = self.active_now.copy() if working is None else working
        if active.size < self.edge_a.size:
            active = np.concatenate((active, np.zeros(self.edge_a.size - active.size, dtype=bool)))
        keys = np.array([(edge << 32) | operation.op_id for edge, _ in changes], dtype=np.int64)
        states = np.array([state for _, state in changes], dtype=bool)
        for edge, state in changes:
            active[edge] = state
        self._change_keys, self._change_state = insert_sorted(self._change_keys, self._change_state, keys, states)
        return active

    def edge_indices(self, pairs: np.ndarray, create: bool = False) -> np.ndarray:
        """Index of each supervoxel pair's edge; with ``create``, missing edges are added
        (a merge may join supervoxels that do not touch). -1 where absent."""
        a = self.sv_index(pairs[:, 0])
        b = self.sv_index(pairs[:, 1])
        if (a < 0).any() or (b < 0).any():
            raise ValueError("edge names an unknown supervoxel")
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        keys = lo * self.n_sv + hi
        out = lookup_sorted(self._edge_keys, np.arange(self._edge_keys.size), keys)
        for i in np.flatnonzero(out < 0):
            key = int(keys[i])
            if key in self._extra_edges:
                out[i] = self._extra_edges[key]
            elif create:
                edge = self.edge_a.size
                self.edge_a.append([lo[i]])
                self.edge_b.append([hi[i]])
                self.edge_affinity.append([np.float32(1.0)])
                self.edge_area.append([0])
                self.active0.append([False])
                extra = dict(self._extra_edges)
                extra[key] = edge
                adj = dict(self._extra_adj)
                adj[int(lo[i])] = adj.get(int(lo[i]), ()) + (edge,)
                adj[int(hi[i])] = adj.get(int(hi[i]), ()) + (edge,)
                self._extra_edges, self._extra_adj = extra, adj
                out[i] = edge
        return out

    # -- structure reads ---------------------------------------------------------------------
    def children_of(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return gather_ranges(self.child_ptr.view(), self.child_flat.view(), np.asarray(index, dtype=np.int64))

    def leaves_with_owner(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Supervoxels below each node, with the position in ``index`` each came from."""
        layers = self.node_layer.view()
        frontier = np.asarray(index, dtype=np.int64)
        owner = np.arange(frontier.size)
        found, owners = [], []
        while frontier.size:
            done = layers[frontier] <= 1
            found.append(frontier[done])
            owners.append(owner[done])
            frontier, rows = self.children_of(frontier[~done])
            owner = owner[~done][rows]
        if not found:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(found), np.concatenate(owners)

    def leaf_indices(self, index: np.ndarray, stop_layer: int = 1) -> np.ndarray:
        """All descendants at layer ≤ ``stop_layer`` (leaf sets never change: nodes are immutable)."""
        layers = self.node_layer.view()
        frontier = np.asarray(index, dtype=np.int64)
        found = []
        while frontier.size:
            done = layers[frontier] <= stop_layer
            found.append(frontier[done])
            frontier, _ = self.children_of(frontier[~done])
        return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)

    def exists_at(self, index: np.ndarray, seq: int) -> np.ndarray:
        """Whether each node had been created as of ``seq``."""
        index = np.asarray(index, dtype=np.int64)
        return (index >= 0) & (self.node_op.view()[np.maximum(index, 0)] <= seq)

    def parents_at(self, index: np.ndarray, seq: int) -> np.ndarray:
        """Each node's parent as of ``seq`` (-1 for roots and nodes not yet created)."""
        index = np.asarray(index, dtype=np.int64)
        limit = int(self.nodes_after_op.view()[seq]) - 1
        keys = self._parent_keys
        if keys.size == 0:
            return np.full(index.size, -1, dtype=np.int64)
        pos = np.searchsorted(keys, (index << 32) | limit, side="right") - 1
        found = (pos >= 0) & ((keys[np.maximum(pos, 0)] >> 32) == index)
        return np.where(found, keys[np.maximum(pos, 0)] & 0xFFFFFFFF, -1)

    def roots_at(self, index: np.ndarray, seq: int, stop_layer: int | None = None) -> np.ndarray:
        """Root (or ancestor at ``stop_layer``) of each node as of ``seq``; -1 if unknown then."""
        index = np.asarray(index, dtype=np.int64)
        out = np.full(index.size, -1, dtype=np.int64)
        known = self.exists_at(index, seq)
        top = self.n_layers if stop_layer is None else min(int(stop_layer), self.n_layers)
        layers = self.node_layer.view()
        is_sv = known & (index < self.n_sv)
        if top >= self.n_layers and is_sv.any():
            out[is_sv] = self.sv_roots_at(seq)[index[is_sv]]
            known = known & ~is_sv
        current = index[known]
        for _ in range(self.n_layers):
            climb = layers[current] < top
            if not climb.any():
                break
            parents = self.parents_at(current[climb], seq)
            moved = parents >= 0
            idx = np.flatnonzero(climb)[moved]
            current[idx] = parents[moved]
            if not moved.any():
                break
        out[known] = current
        return out

    def sv_roots_at(self, seq: int) -> np.ndarray:
        """Root index of every supervoxel as of ``seq`` (cached for recent past seqs)."""
        now_seq, root_now, _ = self._now
        if seq >= now_seq:
            return root_now
        with self._past_lock:
            if seq in self._past:
                self._past.move_to_end(seq)
                return self._past[seq]
            start_seq, roots = min(
                ((s, r) for s, r in self._past.items() if s >= seq),
                default=(now_seq, root_now),
                key=lambda item: item[0],
            )
        roots = roots.copy()
        for op_id in range(start_seq, seq, -1):
            operation = self.operations[op_id]
            for old_root in self.node_index(np.array(operation.old_roots, dtype=np.uint64)):
                roots[self.leaf_indices(np.array([old_root]))] = old_root
        with self._past_lock:
            self._past[seq] = roots
            while len(self._past) > PAST_CACHE_SIZE:
                self._past.popitem(last=False)
        return roots

    def is_latest_root(self, index: np.ndarray, seq: int) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        safe = np.maximum(index, 0)
        superseded = self.superseded_op.view()[safe]
        return (
            self.exists_at(index, seq)
            & (self.node_layer.view()[safe] == self.n_layers)
            & ((superseded == 0) | (superseded > seq))
        )

    # -- edges ---------------------------------------------------------------------------------
    def incident_edges(self, sv_index: np.ndarray) -> np.ndarray:
        """Indices of every edge touching the given supervoxels (unique)."""
        edges, _ = gather_ranges(self._adj_ptr, self._adj_edges, np.asarray(sv_index, dtype=np.int64))
        if self._extra_adj:
            extra = [e for s in np.asarray(sv_index).tolist() for e in self._extra_adj.get(int(s), ())]
            edges = np.concatenate((edges, np.array(extra, dtype=np.int64)))
        if edges.size < 4096:
            return np.unique(edges)
        # An edge is listed once per end; marking is much cheaper than a sort for big objects.
        mark = np.zeros(self.edge_a.size, dtype=bool)
        mark[edges] = True
        return np.flatnonzero(mark)

    def edges_active_at(self, edges: np.ndarray, seq: int) -> np.ndarray:
        """Whether each edge was part of the agglomeration as of ``seq``."""
        edges = np.asarray(edges, dtype=np.int64)
        now_seq, _, active = self._now
        if seq >= now_seq:
            return np.where(edges < active.size, active[np.minimum(edges, active.size - 1)], False)
        out = self.active0.view()[edges].copy()
        keys = self._change_keys
        if keys.size:
            pos = np.searchsorted(keys, (edges << 32) | seq, side="right") - 1
            found = (pos >= 0) & ((keys[np.maximum(pos, 0)] >> 32) == edges)
            out[found] = self._change_state[pos[found]]
        return out

    def internal_edges(self, svs: np.ndarray, seq: int, active_only: bool = True) -> np.ndarray:
        """Edges with both ends in ``svs`` (optionally only the active ones as of ``seq``)."""
        member = np.zeros(self.n_sv, dtype=bool)
        member[svs] = True
        edges = self.incident_edges(svs)
        a, b = self.edge_a.view()[edges], self.edge_b.view()[edges]
        edges = edges[member[a] & member[b]]
        if active_only:
            edges = edges[self.edges_active_at(edges, seq)]
        return edges

    def existing_nodes(self, layer: int, child_ids: np.ndarray, ptr: np.ndarray) -> np.ndarray:
        """For each group ``child_ids[ptr[i]:ptr[i+1]]``, the id of the current node of ``layer``
        whose children are exactly that group, else 0 (an edit keeps such nodes instead of
        making new ones). All children sharing one current parent with as many children as
        the group has means the parent's children are the group."""
        counts = np.diff(ptr)
        out = np.zeros(counts.size, dtype=np.uint64)
        if counts.size == 0:
            return out
        idx = self.node_index(child_ids)
        parent = np.full(idx.size, -1, dtype=np.int64)
        known = idx >= 0
        parent[known] = self.parents_at(idx[known], self.seq)
        group = np.repeat(np.arange(counts.size), counts)
        first = parent[ptr[:-1]]
        mixed = np.bincount(group, weights=(parent != first[group]) | (parent < 0), minlength=counts.size) > 0
        ok = ~mixed & (first >= 0)
        candidates = first[ok]
        child_ptr = self.child_ptr.view()
        ok[ok] = (self.node_layer.view()[candidates] == layer) & (child_ptr[candidates + 1] - child_ptr[candidates] == counts[ok])
        out[ok] = self.node_id.view()[first[ok]]
        return out

    def nbytes(self) -> dict[str, int]:
        """Bytes held by the index's numpy arrays, by part (allocated buffers, so growth room
        counts; the operation log's Python objects are not included)."""
        parts: dict[str, int] = {}
        for name, value in vars(self).items():
            if isinstance(value, Growable):
                parts[name.lstrip("_")] = value.capacity_nbytes
            elif isinstance(value, np.ndarray):
                parts[name.lstrip("_")] = value.nbytes
        now_seq, root_now, active_now = self._now
        parts["root_now"], parts["active_now"] = root_now.nbytes, active_now.nbytes
        parts["past_roots"] = sum(r.nbytes for r in list(self._past.values()))
        return parts

    def sv_chunk_coords(self, sv_index: np.ndarray) -> np.ndarray:
        return chunk_coordinates(self.layout, self.node_id.view()[sv_index])


def merge_keys(keys: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Sorted union of a sorted key array and new keys, in linear time for few new keys."""
    new = np.sort(new)
    if keys.size == 0:
        return new
    return np.insert(keys, np.searchsorted(keys, new), new)


def _max_per_key(keys: np.ndarray, values: np.ndarray) -> tuple[list[int], list[int]]:
    order = np.lexsort((values, keys))
    keys, values = keys[order], values[order]
    last = np.r_[keys[1:] != keys[:-1], True]
    return keys[last].tolist(), values[last].tolist()
