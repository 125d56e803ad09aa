"""The soma of a root: the one row of the datastack's soma table on that root at its moment.

CAVE's skeleton service runs a live query of the soma table at the root's time (for an expired
root, the last moment it was the latest) filtered on ``pt_root_id``. Live queries derive a row's
root from its supervoxel at that time; while a root is the latest its supervoxels are exactly
its leaves, so the same rows are the soma-table rows alive then whose ``pt_supervoxel_id`` lies
under the root. That is what is computed here, straight from the live store: no version
lookup or root remapping, so it costs the same however many edits followed the last version.
A root with no soma row, or with several, is rooted at a far tip instead.

The soma is collapsed into the root vertex within a radius: pcg_skel's 7500 nm suits the
somas of real datasets but would swallow whole cells of a smaller volume, so when the row
gives a nucleus volume (``volume`` in µm³, as ``nucleus_detection`` does) the radius is twice
the nucleus radius, capped by the invalidation distance.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc

from opencave.errors import OpencaveError
from opencave.services.annotation import AnnotationService

log = logging.getLogger("opencave.skeleton")
POSITION = ("pt_position_x", "pt_position_y", "pt_position_z")


@dataclass(frozen=True)
class Soma:
    position_nm: np.ndarray
    nucleus_radius_nm: float | None  # from the row's nucleus volume, when it has one

    def collapse_radius(self, invalidation_d: float) -> float:
        """How far from the soma point L2 vertices are collapsed into the root vertex."""
        if self.nucleus_radius_nm is None:
            return invalidation_d
        return min(invalidation_d, 2.0 * self.nucleus_radius_nm)


def find_soma(
    annotations: AnnotationService, aligned_volume: str, table: str, supervoxels: np.ndarray, moment: float
) -> Soma | None:
    """The only soma row alive at ``moment`` on one of ``supervoxels``: position (nm) and size."""
    try:
        meta = annotations.table_metadata(aligned_volume, table)
        rows = annotations.read_rows(aligned_volume, table, alive_at=moment)
    except OpencaveError as exc:  # no such table: no soma
        log.warning("soma table %s/%s unreadable: %s", aligned_volume, table, exc.message)
        return None
    if "pt_supervoxel_id" not in rows.column_names or not all(n in rows.column_names for n in POSITION):
        return None
    svs = rows.column("pt_supervoxel_id").to_numpy(zero_copy_only=False).astype(np.uint64)
    hits = np.flatnonzero(np.isin(svs, supervoxels))
    if hits.size != 1:
        return None
    row = rows.take(pc.cast(np.array(hits), "int64"))
    point = np.array([float(row.column(n)[0].as_py()) for n in POSITION])
    resolution = np.array([float(meta[f"voxel_resolution_{a}"]) for a in "xyz"])
    radius = None
    if "volume" in rows.column_names:
        volume_um3 = row.column("volume")[0].as_py()
        if volume_um3 is not None and volume_um3 > 0 and math.isfinite(volume_um3):
            radius = 1000.0 * (3.0 * float(volume_um3) / (4.0 * math.pi)) ** (1.0 / 3.0)
    return Soma(point * resolution, radius)
