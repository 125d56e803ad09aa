"""Per-vertex properties of a skeleton: segments, effective radius, compartment labels.

The radius follows pcg_skel's ``add_segment_properties``: a segment is an unbranched run of
skeleton vertices (from a branch or end point, inclusive, to the next rootward branch point,
exclusive); its effective radius is that of a cylinder with the segment's volume (the summed
``size_nm3`` of its L2 nodes) and path length (each vertex's edge to its parent), and the root's
segment is treated as a sphere of its volume.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from opencave.wire.skeletons import COMPARTMENT_DENDRITE, COMPARTMENT_SOMA


def segments(n: int, edges: np.ndarray) -> np.ndarray:
    """Segment number of every vertex (edges are (child, parent) pairs)."""
    if len(edges) == 0:
        return np.arange(n)
    n_children = np.bincount(edges[:, 1], minlength=n)
    keep = n_children[edges[:, 1]] < 2  # cut every edge into a branch point
    kept = edges[keep]
    graph = sparse.csr_matrix((np.ones(len(kept)), (kept[:, 0], kept[:, 1])), shape=(n, n))
    _, labels = csgraph.connected_components(graph, directed=False)
    return labels


def effective_radius(
    vertices: np.ndarray, edges: np.ndarray, root: int, mesh_to_skel_map: np.ndarray, sizes: np.ndarray
) -> np.ndarray:
    """r_eff = sqrt(V / (π L)) per segment; the root segment (and any of zero length) a sphere."""
    n = len(vertices)
    seg = segments(n, edges)
    n_seg = int(seg.max()) + 1 if n else 0
    lengths = np.zeros(n_seg)
    if len(edges):
        edge_len = np.linalg.norm(vertices[edges[:, 0]] - vertices[edges[:, 1]], axis=1)
        lengths = np.bincount(seg[edges[:, 0]], weights=edge_len, minlength=n_seg)
    mapped = mesh_to_skel_map >= 0
    volumes = np.bincount(seg[mesh_to_skel_map[mapped]], weights=sizes[mapped], minlength=n_seg)
    sphere = (lengths <= 0) | (np.arange(n_seg) == seg[root])
    with np.errstate(divide="ignore", invalid="ignore"):
        r_seg = np.where(sphere, np.cbrt(volumes * 0.75 / np.pi), np.sqrt(volumes / (np.pi * lengths)))
    radius = r_seg[seg]
    good = np.isfinite(radius) & (radius > 0)
    if not good.all():  # L2 nodes without a volume: borrow the typical radius, else 1 nm
        radius[~good] = float(np.median(radius[good])) if good.any() else 1.0
    return radius.astype(np.float32)


def compartments(n: int, root: int, has_soma: bool, is_axon: np.ndarray | None = None) -> np.ndarray:
    """SWC compartment codes: 1 soma (the root, when a soma is known), 2 axon, 3 dendrite."""
    out = np.full(n, COMPARTMENT_DENDRITE, dtype=np.uint8)
    if is_axon is not None:
        out[is_axon] = 2
    if has_soma:
        out[root] = COMPARTMENT_SOMA
    return out
