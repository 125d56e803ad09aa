"""Finds the supervoxel a user meant by an id and a point, as PyChunkedGraph does for edits.

A supervoxel id is taken as it is. For any other node (usually a root), the watershed is read
in growing boxes around the point until it shows a supervoxel that belongs to that node at the
request time.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from opencave.errors import BadRequest

from .index import GraphIndex

SEARCH_RADII_NM = (4, 8, 14, 28)  # × the mean voxel size, as PyChunkedGraph searches

SupervoxelsNear = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(point in voxels, box radius in voxels per axis) → unique supervoxel ids in that box."""


def nm_to_voxels(index: GraphIndex, point_nm: list[float]) -> np.ndarray:
    return np.floor(np.asarray(point_nm, dtype=np.float64) / np.asarray(index.geometry.resolution)).astype(np.int64)


def resolve_supervoxel(index: GraphIndex, node_id: int, point_voxels: np.ndarray, seq: int, near: SupervoxelsNear) -> int:
    """The supervoxel of ``node_id`` at (or nearest to) the point."""
    idx = index.node_index([node_id])[0]
    if idx < 0 or not index.exists_at(np.array([idx]), seq)[0]:
        raise BadRequest(f"Node {node_id} does not exist in this graph.", code="unknown_node")
    if idx < index.n_sv:
        return int(node_id)
    layer = int(index.node_layer.view()[idx])
    target = index.roots_at(np.array([idx]), seq)[0]
    resolution = np.asarray(index.geometry.resolution)
    for radius_nm in SEARCH_RADII_NM:
        radius = np.maximum(1, np.round(radius_nm * resolution.mean() / resolution)).astype(np.int64)
        candidates = near(point_voxels, radius)
        if candidates.size == 0:
            continue
        cand_idx = index.node_index(candidates)
        ok = cand_idx >= 0
        roots = np.full(candidates.size, -2)
        roots[ok] = index.roots_at(cand_idx[ok], seq)
        if layer < index.n_layers:  # below the root: the node must contain the supervoxel
            below = np.isin(cand_idx, index.leaf_indices(np.array([idx])))
            ok &= below
        hits = candidates[ok & (roots == target)]
        if hits.size:
            return int(hits.min())
    raise BadRequest(
        f"Could not determine supervoxel ID for coordinates {point_voxels.tolist()} - Lookup stage: "
        f"no voxel of node {node_id} near that point; click on the object itself.",
        code="supervoxel_lookup_failed",
    )
