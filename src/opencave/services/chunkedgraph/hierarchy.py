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
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

Allocator = Callable[[int, np.ndarray], np.ndarray]
"""(layer, (m, 3) chunk coordinates at that layer) → m new node ids."""

ReuseKey = tuple[int, tuple[int, ...]]


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
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(a.size, dtype=np.int8), (a, b)), shape=(n, n)).tocsr()
    return connected_components(graph, directed=False)[1].astype(np.int64)


def group(labels: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Items sorted by (label, item) and the CSR pointer of each label's run."""
    order = np.lexsort((items, labels))
    counts = np.bincount(labels, minlength=int(labels.max()) + 1 if labels.size else 0)
    ptr = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return items[order], ptr


class _Collector:
    """Accumulates new nodes while deciding, per group, whether an old node can be kept."""

    def __init__(self, allocate: Allocator, reuse: dict[ReuseKey, int] | None) -> None:
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
        fresh = np.ones(n, dtype=bool)
        if keep and self.reuse:
            for i in range(n):
                old = self.reuse.get((layer, tuple(child_ids[ptr[i] : ptr[i + 1]].tolist())))
                if old is not None:
                    ids[i] = old
                    fresh[i] = False
            self.reused += int((~fresh).sum())
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
    reuse: dict[ReuseKey, int] | None = None,
) -> BuiltHierarchy:
    """Hierarchy of the objects formed by ``sv_ids`` linked by the active edges (a, b).

    ``sv_chunks`` are the supervoxels' chunk coordinates; ``edge_a``/``edge_b`` index into
    ``sv_ids``. ``reuse`` maps (layer, sorted child ids) of old nodes to their ids.
    """
    n = sv_ids.size
    collector = _Collector(allocate, reuse)
    objects = components(n, edge_a, edge_b)

    # Layer 2: components inside each atomic chunk.
    inside = np.all(sv_chunks[edge_a] == sv_chunks[edge_b], axis=1)
    l2_of_sv = components(n, edge_a[inside], edge_b[inside])
    children, ptr = group(l2_of_sv, sv_ids)
    members, _ = group(l2_of_sv, np.arange(n))
    first_member = members[ptr[:-1]]
    top_coords = sv_chunks[first_member]  # layer-2 chunk of each top node
    top_ids = collector.add(2, top_coords, children, ptr, keep=True)
    top_of_sv = l2_of_sv
    top_object = objects[first_member]

    for layer in range(3, n_layers):
        shift = layer - 2
        ta, tb = top_of_sv[edge_a], top_of_sv[edge_b]
        chunk = top_coords >> shift
        linked = (ta != tb) & np.all(chunk[ta] == chunk[tb], axis=1)
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
        top_of_sv = new_index[top_of_sv]

    # Root layer: one new root per object.
    n_objects = int(objects.max()) + 1 if n else 0
    child_list, rptr = group(top_object, top_ids)
    root_ids = collector.add(n_layers, np.zeros((n_objects, 3), dtype=np.int64), child_list, rptr, keep=False)
    return collector.result(root_ids, root_ids[objects])
