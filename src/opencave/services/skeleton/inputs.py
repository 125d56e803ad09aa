"""What a skeleton is made from: a root's L2 graph, L2 positions and volumes, its moment.

A root never changes: its L2 nodes are immutable and ``level2_graph`` answers an expired root
with the edges active while it was the latest, so any root's skeleton is the skeleton as of
its own time.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from opencave.errors import BadRequest
from opencave.services.chunkedgraph import queries
from opencave.services.chunkedgraph.index import GraphIndex
from opencave.services.chunkedgraph.service import GraphHandle
from opencave.services.l2cache.cache import L2Cache
from opencave.wire.node_ids import chunk_coordinates

NAN_ROUNDS = 10  # neighbour-averaging rounds for L2 nodes without a position (as pcg_skel)
MAX_INVALIDATION_NM = 7500.0  # pcg_skel's default for real datasets


@dataclass
class RootGraph:
    """The L2 graph of one root, ready to skeletonize."""

    root_id: int
    l2_ids: np.ndarray  # sorted uint64
    edges: np.ndarray  # (m, 2) indices into l2_ids
    vertices: np.ndarray  # (n, 3) nm; missing positions filled in
    sizes: np.ndarray  # (n,) nm³, 0 where unknown
    timestamp: float  # the moment the skeleton describes (now for a latest root)
    is_latest: bool
    filled: int  # how many positions were missing


class RootCheck:
    """Outcome of checking an id against a graph: ok, or the bulk sentinel that applies."""

    OK, UNKNOWN, WRONG_LAYER = "ok", "invalid_rid", "invalid_layer_rid"


def check_root(index: GraphIndex, root_id: int) -> str:
    """Whether ``root_id`` is a root of this graph (of any age)."""
    if not 0 < root_id < 2**64:
        return RootCheck.UNKNOWN
    idx = int(index.node_index(np.array([root_id], dtype=np.uint64))[0])
    if idx < 0 or not index.exists_at(np.array([idx]), index.seq)[0]:
        return RootCheck.UNKNOWN
    if int(index.node_layer.view()[idx]) != index.n_layers:
        return RootCheck.WRONG_LAYER
    return RootCheck.OK


def require_root(index: GraphIndex, root_id: int) -> None:
    """400/404 with a message for an id that is not a root of this graph."""
    state = check_root(index, root_id)
    if state == RootCheck.UNKNOWN:
        raise BadRequest(f"Invalid root id: {root_id} does not exist in this datastack's segmentation.", code="invalid_rid")
    if state == RootCheck.WRONG_LAYER:
        raise BadRequest(
            f"Invalid root id: {root_id} is not a root id (perhaps it is a supervoxel or another layer's node); "
            "skeletons are made of root ids.",
            code="invalid_layer_rid",
        )


def root_moment(index: GraphIndex, root_id: int, now: float) -> tuple[float, bool]:
    """(the moment a root's skeleton describes, whether it is the latest root now).

    An expired root is described just before the operation that replaced it.
    """
    idx = int(index.node_index(np.array([root_id], dtype=np.uint64))[0])
    superseded = int(index.superseded_op.view()[idx])
    if superseded <= 0 or superseded > index.seq:
        return now, True
    end = index.op_timestamp(superseded)
    start = index.op_timestamp(superseded - 1)
    return end - min(1e-3, (end - start) / 2), False


def invalidation_distance(index: GraphIndex) -> float:
    """min(7500 nm, twice the largest L2 chunk extent): TEASAR's reach and the soma radius."""
    extent = max(c * r for c, r in zip(index.geometry.chunk_size, index.geometry.resolution))
    return float(min(MAX_INVALIDATION_NM, 2.0 * extent))


def chunk_centres_nm(index: GraphIndex, l2_ids: np.ndarray) -> np.ndarray:
    """Centre of each L2 node's chunk in nm (the last resort for a node without a position)."""
    g = index.geometry
    coords = chunk_coordinates(index.layout, l2_ids).astype(np.float64)
    size = np.asarray(g.chunk_size, dtype=np.float64)
    return (coords * size + np.asarray(g.voxel_offset) + size / 2) * np.asarray(g.resolution)


def fill_missing_positions(vertices: np.ndarray, edges: np.ndarray, fallback: np.ndarray, rounds: int = NAN_ROUNDS) -> int:
    """Give L2 nodes without a position the mean of their neighbours' (pcg_skel's smoothing).

    A node with one known neighbour is put 1 nm off it so the edge keeps a length; nodes still
    unknown after ``rounds`` take ``fallback`` (their chunk centre). Returns how many were missing.
    """
    missing = np.isnan(vertices).any(axis=1)
    count = int(missing.sum())
    if count == 0:
        return 0
    n = len(vertices)
    if len(edges):
        adj = sparse.csr_matrix(
            (np.ones(2 * len(edges)), (np.concatenate((edges[:, 0], edges[:, 1])), np.concatenate((edges[:, 1], edges[:, 0])))),
            shape=(n, n),
        )
        for _ in range(rounds):
            missing = np.isnan(vertices).any(axis=1)
            if not missing.any():
                break
            known = (~missing).astype(np.float64)
            sums = adj @ np.where(missing[:, None], 0.0, vertices)
            counts = adj @ known
            fix = missing & (counts > 0)
            if not fix.any():
                break
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                vertices[fix] = sums[fix] / counts[fix, None]
            single = fix & (counts == 1)
            vertices[single, 2] += 1.0
    still = np.isnan(vertices).any(axis=1)
    vertices[still] = fallback[still]
    return count


def root_graph(l2cache: L2Cache, handle: GraphHandle, root_id: int, now: float) -> RootGraph:
    """The L2 graph, positions and volumes of a root (validated first)."""
    index = handle.index
    require_root(index, root_id)
    pairs = queries.level2_graph(index, root_id, None)
    root_idx = index.node_index(np.array([root_id], dtype=np.uint64))
    l2_ids = np.sort(index.ids_of(index.leaf_indices(root_idx, stop_layer=2)))
    edges = np.searchsorted(l2_ids, pairs).reshape(-1, 2) if len(pairs) else np.zeros((0, 2), dtype=np.int64)
    attrs = l2cache.attributes(handle, l2_ids, ["rep_coord_nm", "size_nm3"])
    vertices = np.full((len(l2_ids), 3), np.nan)
    sizes = np.zeros(len(l2_ids))
    for i, l2 in enumerate(l2_ids.tolist()):
        values = attrs.get(l2, {})
        coord = values.get("rep_coord_nm")
        if coord is not None and len(coord) == 3:
            vertices[i] = coord
        size = values.get("size_nm3")
        if size is not None:
            sizes[i] = float(size)
    filled = fill_missing_positions(vertices, edges, chunk_centres_nm(index, l2_ids))
    moment, latest = root_moment(index, root_id, now)
    return RootGraph(root_id, l2_ids, edges.astype(np.int64), vertices, sizes, moment, latest, filled)
