"""The original labels of an ingested segmentation: which supervoxels each one became.

An ingested graph's ``graph.npz`` keeps ``sv_label`` (the lab's label of every supervoxel, in
canonical supervoxel order) and ``sv_voxels``; a label's supervoxels are found by binary search
in a label-sorted order built at first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from opencave.errors import NotFound

from .index import GraphIndex


@dataclass(frozen=True)
class LabelRoots:
    """Where one original label lies at a moment: each root holding part of it, largest first."""

    label: int
    root_ids: np.ndarray  # uint64
    voxels: np.ndarray  # int64 voxels of the label in each root
    supervoxels: np.ndarray  # uint64 every supervoxel the label became


class OriginalLabels:
    """Original label → supervoxel indices of one ingested graph."""

    def __init__(self, sv_label: np.ndarray, sv_voxels: np.ndarray) -> None:
        self._order = np.argsort(sv_label, kind="stable")
        self._sorted = sv_label[self._order]
        self._voxels = sv_voxels

    @classmethod
    def load(cls, world_dir: Path) -> "OriginalLabels | None":
        """The graph's labels, or None for a graph not ingested from a segmentation."""
        with np.load(Path(world_dir) / "graph.npz") as graph:
            if "sv_label" not in graph.files:
                return None
            return cls(graph["sv_label"], graph["sv_voxels"].astype(np.int64))

    def supervoxel_indices(self, label: int) -> np.ndarray:
        lo, hi = np.searchsorted(self._sorted, np.uint64(label), side="left"), np.searchsorted(self._sorted, np.uint64(label), side="right")
        return self._order[lo:hi]

    def roots(self, index: GraphIndex, label: int, seq: int) -> LabelRoots:
        """The roots holding ``label`` once ``seq`` operations are applied."""
        found = self.supervoxel_indices(label)
        if found.size == 0:
            raise NotFound(f"Label {label} is not in the segmentation this graph was ingested from.", code="unknown_label")
        root_idx = index.sv_roots_at(seq)[found]
        roots, inverse = np.unique(root_idx, return_inverse=True)
        voxels = np.bincount(inverse, weights=self._voxels[found]).astype(np.int64)
        order = np.lexsort((roots, -voxels))
        return LabelRoots(
            label=int(label),
            root_ids=index.ids_of(roots[order]).astype(np.uint64),
            voxels=voxels[order],
            supervoxels=index.node_id.view()[np.sort(found)],
        )
