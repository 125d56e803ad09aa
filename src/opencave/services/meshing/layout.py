"""Where L2 meshes live and how they are named, as the graphene mesh source reads them.

Fragments are unsharded files ``{data_dir}/{MESH_DIR}/{fragment name}``; a fragment's name is
``{l2_id}:0:{x0}-{x1}_{y0}-{y1}_{z0}-{z1}``, the L2 chunk's voxel box exactly as cloud-volume's
``compute_filename`` derives it (chunk position × chunk size, not offset, not clipped). Vertices
are quantized by Draco to one global grid (``draco_grid_size``) on which every chunk boundary
lies, so the copies of a boundary vertex made by the two chunks that share it decode to the
same position and clients can merge them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from opencave.errors import NotFound
from opencave.services.chunkedgraph.index import Geometry
from opencave.wire.node_ids import chunk_coordinates, get_layer

MESH_DIR = "graphene_meshes"
UNSHARDED_MESH_DIR = "dynamic"  # reported for clients that expect the key; fragments are not under it
MESHED_LAYER = 2
_NAME = re.compile(r"^(?:~\d+:)?(?P<l2>\d+):0:(?P<box>\d+-\d+_\d+-\d+_\d+-\d+)$")


@dataclass(frozen=True)
class MeshLayout:
    """The mesh geometry of one graph: chunk boxes in voxels and nm, and the Draco grid."""

    geometry: Geometry

    @property
    def resolution(self) -> np.ndarray:
        return np.asarray(self.geometry.resolution, dtype=np.float64)

    @property
    def chunk_size(self) -> np.ndarray:
        return np.asarray(self.geometry.chunk_size, dtype=np.int64)

    @property
    def voxel_offset(self) -> np.ndarray:
        return np.asarray(self.geometry.voxel_offset, dtype=np.int64)

    @property
    def draco_grid_size(self) -> float:
        """Half the finest voxel side when every chunk boundary (nm) is a multiple of it, else
        the largest grid that divides all boundaries (half-voxel vertices then round to it)."""
        boundaries = np.concatenate((self.chunk_size * self.resolution, self.voxel_offset * self.resolution))
        candidate = float(self.resolution.min()) / 2
        if _divides(candidate, boundaries):
            return candidate
        integral = [int(round(v)) for v in boundaries if round(v) != 0]
        if all(abs(v - round(v)) < 1e-9 for v in boundaries) and integral:
            return float(math.gcd(*integral))
        return 1.0

    def chunk_box(self, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Absolute voxel box [lo, hi) of an L2 chunk, clipped to the volume."""
        start = self.voxel_offset + np.asarray(coords, dtype=np.int64) * self.chunk_size
        end = np.minimum(start + self.chunk_size, self.voxel_offset + np.asarray(self.geometry.volume_size, dtype=np.int64))
        return start, end

    def fragment_name(self, l2_id: int) -> str:
        coords = chunk_coordinates(self.geometry.layout, [l2_id])[0]
        lo = coords * self.chunk_size
        hi = lo + self.chunk_size
        box = "_".join(f"{int(a)}-{int(b)}" for a, b in zip(lo, hi))
        return f"{int(l2_id)}:0:{box}"

    @staticmethod
    def check_fragment_name(name: str) -> re.Match[str]:
        """The parts of a fragment name; NotFound for names no graph's fragment can have."""
        match = _NAME.match(name)
        if match is None:
            raise NotFound(
                f"{name!r} is not a mesh fragment name; fragments are named "
                "'<l2_id>:0:<x0>-<x1>_<y0>-<y1>_<z0>-<z1>' as the manifest lists them.",
                code="no_such_fragment",
            )
        return match

    def parse_fragment_name(self, name: str) -> int:
        """The L2 id a fragment name refers to; NotFound when it names no fragment of ours."""
        match = self.check_fragment_name(name)
        l2_id = int(match["l2"])
        if not 0 < l2_id < 2**64 or get_layer(l2_id) != MESHED_LAYER:
            raise NotFound(f"No mesh fragment {name!r}: {l2_id} is not an L2 node id.", code="no_such_fragment")
        if self.fragment_name(l2_id) != f"{l2_id}:0:{match['box']}":
            raise NotFound(
                f"Fragment {name!r} does not name an L2 chunk's box; use the names the manifest lists.",
                code="no_such_fragment",
            )
        return l2_id

    def info(self) -> dict[str, Any]:
        """The keys the graph's info JSON carries for mesh clients."""
        return {
            "mesh": MESH_DIR,
            "mesh_metadata": {
                "uniform_draco_grid_size": self.draco_grid_size,
                "unsharded_mesh_dir": UNSHARDED_MESH_DIR,
                "max_meshed_layer": MESHED_LAYER,
            },
        }


def _divides(step: float, values: np.ndarray) -> bool:
    if step <= 0:
        return False
    ratio = np.asarray(values, dtype=np.float64) / step
    return bool(np.all(np.abs(ratio - np.round(ratio)) < 1e-9))
