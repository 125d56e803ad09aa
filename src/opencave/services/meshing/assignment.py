"""Which voxels of a chunk cutout belong to which L2 node being meshed.

Chunked meshing gives each chunk the marching-cubes cells whose lowest corner it holds, so a
chunk's cutout reaches one voxel into its upper neighbours. A supervoxel of that overlap is
*claimed*, with the rest of its L2 node, by the L2 node of this chunk that node is joined to by
an active edge (the lowest id if several): its voxels take that node's label, and the node's
surface runs on into the neighbour, where the neighbour's own mesh continues it. Unclaimed
supervoxels are walled off.

The cells between a chunk and a lower neighbour belong to the neighbour, so they are meshed by
whoever claimed the nodes there. A node that no node of the lower neighbour claims (no active
edge reaches down) would get no surface in that slab at all; it meshes the one-voxel slab
itself instead (``slab_labels``).

Everything is decided as of ``seq``: the latest state in which the nodes exist (now for the
nodes of current roots). A node's mesh thus depends on its supervoxels and on the state of the
edges leaving them, so an edit that changes such edges re-meshes the nodes at their ends.
"""

from __future__ import annotations

import numpy as np

from opencave.services.chunkedgraph.index import GraphIndex
from opencave.wire.node_ids import chunk_coordinates


def alive_until(index: GraphIndex, node_idx: np.ndarray) -> np.ndarray:
    """For each L2 node (index), the last ``seq`` at which it was in the graph (now if current)."""
    node_idx = np.asarray(node_idx, dtype=np.int64)
    starts = index.child_ptr.view()[node_idx]
    child = index.child_flat.view()[starts]
    now = index.seq
    out = np.full(node_idx.size, now, dtype=np.int64)
    gone = np.flatnonzero(index.parents_at(child, now) != node_idx)
    created = index.node_op.view()[node_idx]
    for i in gone.tolist():
        lo, hi = int(created[i]), now  # alive at lo, not at hi: find the last alive seq
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if index.parents_at(child[i : i + 1], mid)[0] == node_idx[i]:
                lo = mid
            else:
                hi = mid
        out[i] = lo
    return out


class ChunkLabels:
    """Supervoxels of one chunk cutout, their L2 nodes and their active edges as of ``seq``."""

    def __init__(self, index: GraphIndex, labels: np.ndarray, chunk: tuple[int, int, int], seq: int) -> None:
        self.index = index
        self.labels = labels
        self.chunk = np.asarray(chunk, dtype=np.int64)
        self.seq = seq
        present = np.unique(labels)
        present = present[present != 0]
        sv_idx = index.sv_index(present)
        keep = sv_idx >= 0
        self.present, self.sv_idx = present[keep], sv_idx[keep]
        self.sv_chunk = chunk_coordinates(index.layout, self.present)
        self.inside = np.all(self.sv_chunk == self.chunk, axis=1)
        self.l2 = np.full(self.present.size, -1, dtype=np.int64)
        self.l2[self.inside] = index.roots_at(self.sv_idx[self.inside], seq, stop_layer=2)

    def _reaches(self, l2_idx: int, chunk: np.ndarray) -> np.ndarray:
        """L2 nodes (indices) of ``chunk`` that node ``l2_idx`` is joined to by an edge active at ``seq``."""
        index = self.index
        svs, _ = index.children_of(np.array([l2_idx], dtype=np.int64))
        edges = index.incident_edges(svs)
        edges = edges[index.edges_active_at(edges, self.seq)]
        a, b = index.edge_a.view()[edges], index.edge_b.view()[edges]
        partners = np.where(np.isin(a, svs), b, a)
        if partners.size == 0:
            return partners
        there = partners[np.all(index.sv_chunk_coords(partners) == chunk, axis=1)]
        return np.unique(index.roots_at(there, self.seq, stop_layer=2)) if there.size else there

    def claims(self) -> np.ndarray:
        """L2 node (index) each present supervoxel belongs to here: its own inside the chunk;
        for the overlap, the node of this chunk that claims the supervoxel's L2 node (whole
        nodes are claimed, so both sides of the chunk face split the surface alike); -1: none."""
        owner = self.l2.copy()
        outside = np.flatnonzero(~self.inside & np.all(self.sv_chunk >= self.chunk, axis=1))
        if outside.size == 0:
            return owner
        node_ids = self.index.node_id.view()
        their_l2 = self.index.roots_at(self.sv_idx[outside], self.seq, stop_layer=2)
        for l2 in np.unique(their_l2[their_l2 >= 0]).tolist():
            claimants = self._reaches(int(l2), self.chunk)
            if claimants.size:
                owner[outside[their_l2 == l2]] = claimants[np.argmin(node_ids[claimants])]
        return owner

    def relabel(self, owner: np.ndarray, l2_nodes: np.ndarray) -> np.ndarray:
        """uint32 volume: k + 1 where a voxel's owner is ``l2_nodes[k]`` (indices), else 0."""
        value_of = {int(n): k + 1 for k, n in enumerate(np.asarray(l2_nodes).tolist())}
        values = np.array([value_of.get(int(o), 0) for o in owner.tolist()], dtype=np.uint32)
        keys = np.concatenate((np.zeros(1, dtype=np.uint64), self.present.astype(np.uint64)))
        values = np.concatenate((np.zeros(1, dtype=np.uint32), values))
        order = np.argsort(keys)
        keys, values = keys[order], values[order]
        flat = self.labels.ravel()
        pos = np.minimum(np.searchsorted(keys, flat), keys.size - 1)
        return np.where(keys[pos] == flat, values[pos], 0).astype(np.uint32).reshape(self.labels.shape)


def chunk_labels(index: GraphIndex, labels: np.ndarray, chunk: tuple[int, int, int], seq: int, l2_nodes: np.ndarray) -> np.ndarray:
    """The chunk cutout (with its upper overlap) labelled by the nodes ``l2_nodes`` (indices)."""
    cut = ChunkLabels(index, labels, chunk, seq)
    return cut.relabel(cut.claims(), l2_nodes)


def reached_chunks(index: GraphIndex, node_idx: int, seq: int) -> set[tuple[int, int, int]]:
    """Chunks that edges active at ``seq`` lead into from an L2 node's supervoxels."""
    svs, _ = index.children_of(np.array([node_idx], dtype=np.int64))
    edges = index.incident_edges(svs)
    edges = edges[index.edges_active_at(edges, seq)]
    a, b = index.edge_a.view()[edges], index.edge_b.view()[edges]
    partners = np.where(np.isin(a, svs), b, a)
    return {tuple(int(v) for v in c) for c in index.sv_chunk_coords(partners)} if partners.size else set()


def slab_labels(
    index: GraphIndex, labels: np.ndarray, chunk: tuple[int, int, int], seq: int, l2_nodes: np.ndarray, lonely: np.ndarray
) -> np.ndarray:
    """A cutout reaching one voxel into lower neighbours, labelled by the nodes ``l2_nodes``
    only where they are ``lonely`` (no lower neighbour that owns those cells claims them); upper
    overlap voxels are claimed as in the chunk's own cutout, lower ones are background."""
    cut = ChunkLabels(index, labels, chunk, seq)
    owner = cut.claims()
    owner[cut.inside & ~np.isin(cut.l2, np.asarray(l2_nodes)[np.asarray(lonely, dtype=bool)])] = -1
    return cut.relabel(owner, l2_nodes)
