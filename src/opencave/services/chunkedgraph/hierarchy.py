"""Builds the node hierarchy (supervoxel → L2 → … → root) of a set of objects.

The same function builds the whole graph at ingest and the affected objects of an edit. Layer 2
nodes are the connected components of supervoxels inside one atomic chunk. Each higher layer
L < N joins the nodes that are connected inside one chunk of layer L (a 2×2×2 block of the
layer below); a node left alone at a layer is carried up unchanged (PyChunkedGraph's skip
connections). Layer N holds one root per connected object.

An edit rebuilds the hierarchy of the objects it touches and keeps every old node whose layer
and children are unchanged (``reuse``), so only the nodes on the path of the change get new
ids, as in PyChunkedGraph. Roots are always new.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

Allocator = Callable[[int, np.ndarray], np.ndarray]
"""(layer, (m, 3) chunk coordinates at that layer) → m new node ids."""

Reuse = Callable[[int, np.ndarray, np.ndarray], np.ndarray]
"""(layer, child ids, CSR pointer of the groups) → for each group of children, the id of the
existing node of that layer with exactly those children, or 0 where there is none."""


@dataclass
class BuiltHierarchy:
    """New nodes in creation order (children before parents) and the resulting roots."""

    node_ids: np.ndarray  # uint64 (m,)
    layers: np.ndarray  # int64 (m,)
    child_ptr: np.ndarray  # int64 (m + 1,)
    child_ids: np.ndarray  # uint64, children of node i at child_ptr[i]:child_ptr[i + 1]
    root_ids: np.ndarray  # uint64, one per object
    sv_root: np.ndarray  # uint64 (n_sv,), the root of each input supervoxel
    reused: int  # number of old nodes kept


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component label of each of ``n`` items linked by the pairs (a, b)."""
    if a.size == 0:
        return np.arange(n, dtype=np.int64)
    # Weak components of the directed graph: the same partition, without symmetrising first.
    graph = csr_matrix((np.ones(a.size), (a, b)), shape=(n, n))
    return connected_components(graph, directed=True, connection="weak")[1].astype(np.int64)


def group(labels: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Items sorted by (label, item) and the CSR pointer of each label's run."""
    order = np.lexsort((items, labels))
    counts = np.bincount(labels, minlength=int(labels.max()) + 1 if labels.size else 0)
    ptr = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return items[order], ptr


class _Collector:
    """Accumulates new nodes while deciding, per group, whether an old node can be kept."""

    def __init__(self, allocate: Allocator, reuse: Reuse | None) -> None:
        self.allocate = allocate
        self.reuse = reuse
        self.ids: list[np.ndarray] = []
        self.layers: list[np.ndarray] = []
        self.children: list[np.ndarray] = []
        self.counts: list[np.ndarray] = []
        self.reused = 0

    def add(self, layer: int, coords: np.ndarray, child_ids: np.ndarray, ptr: np.ndarray, keep: bool) -> np.ndarray:
        """Ids for the groups ``child_ids[ptr[i]:ptr[i+1]]``: old ones where allowed, else new."""
        n = ptr.size - 1
        ids = np.zeros(n, dtype=np.uint64)
        if keep and self.reuse is not None and n:
            ids = np.asarray(self.reuse(layer, child_ids, ptr), dtype=np.uint64)
        fresh = ids == 0
        self.reused += int(n - fresh.sum())
        if fresh.any():
            ids[fresh] = self.allocate(layer, coords[fresh])
            sizes = np.diff(ptr)[fresh]
            starts = ptr[:-1][fresh]
            take = np.repeat(starts - np.concatenate(([0], np.cumsum(sizes)[:-1])), sizes) + np.arange(sizes.sum())
            self.ids.append(ids[fresh])
            self.layers.append(np.full(int(fresh.sum()), layer, dtype=np.int64))
            self.children.append(child_ids[take])
            self.counts.append(sizes)
        return ids

    def result(self, root_ids: np.ndarray, sv_root: np.ndarray) -> BuiltHierarchy:
        counts = np.concatenate(self.counts) if self.counts else np.zeros(0, dtype=np.int64)
        ptr = np.zeros(counts.size + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        return BuiltHierarchy(
            node_ids=np.concatenate(self.ids) if self.ids else np.zeros(0, dtype=np.uint64),
            layers=np.concatenate(self.layers) if self.layers else np.zeros(0, dtype=np.int64),
            child_ptr=ptr,
            child_ids=np.concatenate(self.children) if self.children else np.zeros(0, dtype=np.uint64),
            root_ids=root_ids,
            sv_root=sv_root,
            reused=self.reused,
        )


def build_hierarchy(
    sv_ids: np.ndarray,
    sv_chunks: np.ndarray,
    edge_a: np.ndarray,
    edge_b: np.ndarray,
    n_layers: int,
    allocate: Allocator,
    reuse: Reuse | None = None,
) -> BuiltHierarchy:
    """Hierarchy of the objects formed by ``sv_ids`` linked by the active edges (a, b).

    ``sv_chunks`` are the supervoxels' chunk coordinates; ``edge_a``/``edge_b`` index into
    ``sv_ids``. ``reuse`` finds old nodes with the same layer and children (kept, not remade).
    """
    n = sv_ids.size
    collector = _Collector(allocate, reuse)
    objects = components(n, edge_a, edge_b)

    # Layer 2: components inside each atomic chunk.
    sv_keys = _chunk_keys(sv_chunks)
    inside = sv_keys[edge_a] == sv_keys[edge_b]
    l2_of_sv = components(n, edge_a[inside], edge_b[inside])
    children, ptr = group(l2_of_sv, sv_ids)
    members, _ = group(l2_of_sv, np.arange(n))
    first_member = members[ptr[:-1]]
    top_coords = sv_chunks[first_member]  # layer-2 chunk of each top node
    top_ids = collector.add(2, top_coords, children, ptr, keep=True)
    top_object = objects[first_member]
    # Edges between different tops; an edge inside one top stays inside it at every layer above,
    # so the list only shrinks (most edges are gone after layer 2).
    ta, tb = l2_of_sv[edge_a], l2_of_sv[edge_b]
    between = ta != tb
    ta, tb = ta[between], tb[between]

    for layer in range(3, n_layers):
        shift = layer - 2
        chunk = top_coords >> shift
        keys = _chunk_keys(chunk)
        linked = keys[ta] == keys[tb]
        joined = components(top_ids.size, ta[linked], tb[linked])
        sizes = np.bincount(joined)
        grouped = sizes[joined] >= 2
        if not grouped.any():
            continue
        # Renumber: multi-member components become new tops, singletons keep theirs.
        comp_ids = np.unique(joined[grouped])
        comp_rank = np.full(sizes.size, -1, dtype=np.int64)
        comp_rank[comp_ids] = np.arange(comp_ids.size)
        member_rank = comp_rank[joined[grouped]]
        child_list, cptr = group(member_rank, top_ids[grouped])
        first = np.flatnonzero(grouped)[np.lexsort((top_ids[grouped], member_rank))][cptr[:-1]]
        parent_ids = collector.add(layer, chunk[first], child_list, cptr, keep=True)

        single = np.flatnonzero(~grouped)
        new_index = np.empty(top_ids.size, dtype=np.int64)
        new_index[single] = np.arange(single.size)
        new_index[grouped] = single.size + member_rank
        top_ids = np.concatenate((top_ids[single], parent_ids))
        top_coords = np.concatenate((top_coords[single], top_coords[first]))
        top_object = np.concatenate((top_object[single], top_object[first]))
        ta, tb = new_index[ta], new_index[tb]
        between = ta != tb
        ta, tb = ta[between], tb[between]

    # Root layer: one new root per object.
    n_objects = int(objects.max()) + 1 if n else 0
    child_list, rptr = group(top_object, top_ids)
    root_ids = collector.add(n_layers, np.zeros((n_objects, 3), dtype=np.int64), child_list, rptr, keep=False)
    return collector.result(root_ids, root_ids[objects])


def _chunk_keys(coords: np.ndarray) -> np.ndarray:
    """One integer per (x, y, z) chunk coordinate row (each below 2**21), to compare rows at once."""
    coords = np.asarray(coords, dtype=np.int64)
    return (coords[:, 0] << 42) | (coords[:, 1] << 21) | coords[:, 2]
