"""Supervoxel → root id at a moment, and root-id filter remapping between moments.

Both use the chunkedgraph's in-memory index, so millions of rows resolve in well under a
second. Remapping is exact in both directions: the roots at time B that overlap a root at time
A are the roots at B of A's supervoxels (a root's supervoxel set never changes).
"""

from __future__ import annotations

import numpy as np

from opencave.services.chunkedgraph.index import GraphIndex


def roots_of(index: GraphIndex, supervoxels: np.ndarray, timestamp: float) -> np.ndarray:
    """Root id (int64) of each supervoxel at ``timestamp``; 0 for 0 and unknown ids."""
    svs = np.asarray(supervoxels, dtype=np.int64)
    out = np.zeros(svs.size, dtype=np.int64)
    known = svs > 0
    if not known.any():
        return out
    idx = index.sv_index(svs[known].astype(np.uint64))
    seq = index.seq_at(timestamp)
    root_idx = np.where(idx >= 0, index.sv_roots_at(seq)[np.maximum(idx, 0)], -1)
    out[known] = index.ids_of(root_idx).astype(np.int64)
    return out


def alive_roots(index: GraphIndex, roots: np.ndarray, timestamp: float) -> np.ndarray:
    """Whether each id is a root that exists, and is not superseded, at ``timestamp``."""
    ids = np.asarray(roots, dtype=np.int64)
    idx = index.node_index(np.maximum(ids, 0).astype(np.uint64))
    return (ids > 0) & (idx >= 0) & index.is_latest_root(idx, index.seq_at(timestamp))


def remap_roots(index: GraphIndex, roots: np.ndarray, timestamp_to: float) -> np.ndarray:
    """The roots at ``timestamp_to`` that share supervoxels with ``roots`` (from any moment)."""
    ids = np.asarray(roots, dtype=np.int64)
    ids = ids[ids > 0]
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64)
    idx = index.node_index(ids.astype(np.uint64))
    leaves = index.leaf_indices(idx[idx >= 0])
    if leaves.size == 0:
        return np.zeros(0, dtype=np.int64)
    at = index.sv_roots_at(index.seq_at(timestamp_to))[leaves]
    return np.unique(index.ids_of(np.unique(at)).astype(np.int64))
