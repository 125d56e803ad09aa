"""One graph chunk of a lab's segmentation turned into chunk-local supervoxels.

Every (chunk, original label) pair becomes one supervoxel, numbered 1..n in the chunk in
ascending label order, so a label crossing chunk boundaries is cut there as PyChunkedGraph's
chunked watersheds are. The chunk's stored watershed holds the supervoxel ids; what the graph
needs besides (labels, sizes, contacts, boundary faces) is small and returned to the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import fastremap
import numpy as np

from opencave.services.segmentation.precomputed import encode_chunk
from opencave.wire.node_ids import NodeIdLayout

Faces = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ChunkSupervoxels:
    """What the graph needs of one chunk; local labels are 1..n, 0 is background."""

    coords: tuple[int, int, int]
    labels: np.ndarray  # (n,) uint64 original label of each local supervoxel, ascending
    voxels: np.ndarray  # (n,) int64 voxel count
    pairs: np.ndarray  # (e, 2) int64 local labels in face contact inside the chunk, a < b
    area: np.ndarray  # (e,) int64 shared voxel faces
    low_faces: Faces  # local labels on the planes x = 0, y = 0, z = 0 of the chunk
    high_faces: Faces  # local labels on its last x, y and z planes
    watershed: bytes  # the stored chunk: supervoxel ids, compressed_segmentation + gzip

    @property
    def n(self) -> int:
        return int(self.labels.size)


def _local(plane: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Original labels of a plane → local labels (0 stays 0)."""
    local = np.searchsorted(labels, plane).astype(np.uint32) + 1
    local[plane == 0] = 0
    return np.ascontiguousarray(local)


def relabel_chunk(block: np.ndarray, coords: tuple[int, int, int], layout: NodeIdLayout) -> ChunkSupervoxels:
    """Split ``block`` (x, y, z original labels of chunk ``coords``) into its supervoxels."""
    labels, counts = fastremap.unique(block, return_counts=True)
    keep = labels != 0
    labels, voxels = labels[keep].astype(np.uint64), counts[keep].astype(np.int64)
    base = int(layout.chunk_id(1, *coords))
    table = {int(label): base | (i + 1) for i, label in enumerate(labels.tolist())}
    table[0] = 0
    ids = fastremap.remap(block, table, preserve_missing_labels=False, in_place=False).astype(np.uint64, copy=False)
    contacts = cc3d.contacts(block, connectivity=6) if labels.size > 1 else {}
    if contacts:
        pair_labels = np.array(list(contacts.keys()), dtype=np.uint64).reshape(-1, 2)
        local = np.searchsorted(labels, pair_labels).astype(np.int64) + 1
        pairs = np.sort(local, axis=1)
        area = np.array(list(contacts.values()), dtype=np.float64).round().astype(np.int64)
    else:
        pairs, area = np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    return ChunkSupervoxels(
        coords=coords,
        labels=labels,
        voxels=voxels,
        pairs=pairs,
        area=area,
        low_faces=(_local(block[0], labels), _local(block[:, 0], labels), _local(block[:, :, 0], labels)),
        high_faces=(_local(block[-1], labels), _local(block[:, -1], labels), _local(block[:, :, -1], labels)),
        watershed=encode_chunk(ids),
    )
