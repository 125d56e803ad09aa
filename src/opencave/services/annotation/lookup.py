"""Positions (in a table's voxels) -> supervoxel ids of the aligned volume's watershed.

Supervoxels never change, so each bound point's supervoxel is looked up once, when the row is
written; root ids follow from them and the chunkedgraph at any time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from opencave.services.segmentation.volume import WatershedVolume


class PointLookup:
    """Vectorised lookups for one table: its voxel resolution against one watershed (or none)."""

    def __init__(self, volume: WatershedVolume | None, table_resolution: Sequence[float]):
        self.volume = volume
        if volume is not None:
            self.scale = np.asarray(table_resolution, dtype=np.float64) / np.asarray(volume.resolution, dtype=np.float64)
            self.low = np.asarray(volume.voxel_offset, dtype=np.int64)
            self.high = self.low + np.asarray(volume.size, dtype=np.int64)

    def describe_bounds(self) -> str:
        """The volume's extent in the table's voxels, for error messages."""
        if self.volume is None:
            return "unbounded"
        low = self.low / self.scale
        high = self.high / self.scale
        return f"[{', '.join(f'{v:g}' for v in low)}] to [{', '.join(f'{v:g}' for v in high)}) (exclusive)"

    def supervoxels(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(supervoxel ids int64, outside-the-volume mask) of (n, 3) positions in table voxels.

        Background gives 0; without a watershed every id is 0 and nothing is outside.
        """
        positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        n = positions.shape[0]
        if self.volume is None or n == 0:
            return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
        voxels = np.floor(positions * self.scale)
        outside = np.any((voxels < self.low) | (voxels >= self.high), axis=1)
        ids = np.zeros(n, dtype=np.int64)
        inside = np.flatnonzero(~outside)
        if inside.size:
            ids[inside] = self.volume.supervoxels_at(voxels[inside]).astype(np.int64)
        return ids, outside
