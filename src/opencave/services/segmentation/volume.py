"""Read access to a watershed (supervoxel) volume stored as precomputed segmentation."""

from __future__ import annotations

import gzip
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from opencave.services.segmentation.precomputed import (
    GZIP_SUFFIX,
    chunk_bounds,
    chunk_file,
    decode_chunk,
    encode_chunk,
    read_info,
)

_CHUNK_PATH = re.compile(r"^(?P<key>[A-Za-z0-9_.]+)/\d+-\d+_\d+-\d+_\d+-\d+$")


class WatershedVolume:
    """Supervoxel ids by voxel: chunks are decoded on demand and kept in a small LRU cache.

    Coordinates are in voxels of the volume's only scale; arrays are indexed (x, y, z).
    Safe to share between threads.
    """

    def __init__(self, ws_dir: Path, cache_chunks: int = 256) -> None:
        self.directory = Path(ws_dir)
        self.info: dict[str, Any] = read_info(self.directory)
        self._scale = self.info["scales"][0]
        self.resolution = tuple(int(v) for v in self._scale["resolution"])
        self.size = tuple(int(v) for v in self._scale["size"])
        self.voxel_offset = tuple(int(v) for v in self._scale["voxel_offset"])
        self.chunk_size = tuple(int(v) for v in self._scale["chunk_sizes"][0])
        self.grid = tuple(-(-s // c) for s, c in zip(self.size, self.chunk_size))
        self._info_gz = gzip.compress((self.directory / "info").read_bytes(), mtime=0)
        self._cache: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
        self._capacity = cache_chunks
        self._lock = threading.Lock()

    def read_chunk(self, cx: int, cy: int, cz: int) -> np.ndarray:
        """Read-only (x, y, z) uint64 labels of one chunk; zeros where the chunk was omitted."""
        key = (int(cx), int(cy), int(cz))
        if not all(0 <= c < g for c, g in zip(key, self.grid)):
            raise IndexError(f"chunk {key} is outside the volume's {self.grid} chunks")
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        lo, hi = chunk_bounds(self._scale, key)
        shape = tuple(int(v) for v in hi - lo)
        path = self.directory / chunk_file(self._scale, key)
        labels = (
            decode_chunk(path.read_bytes(), shape) if path.exists() else np.zeros(shape, np.uint64)
        )
        labels.flags.writeable = False
        with self._lock:
            self._cache[key] = labels
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return labels

    @staticmethod
    def can_exist(relative_path: str) -> bool:
        """Whether a file of this name could be in any volume (``info`` or a chunk name).

        Other names (cloud-volume also asks for ``provenance``, without credentials) never
        resolve, so they can be answered 404 without a token and without revealing anything.
        """
        return relative_path == "info" or _CHUNK_PATH.match(relative_path) is not None

    def raw_file(self, relative_path: str) -> bytes | None:
        """Gzip bytes of ``info`` or of a chunk (named as precomputed clients request it), else None.

        Serve them as-is with ``Content-Encoding: gzip``. Only those exact names resolve, so
        no path can reach outside the volume's directory.
        """
        if relative_path == "info":
            return self._info_gz
        match = _CHUNK_PATH.match(relative_path)
        if match is None or match["key"] != self._scale["key"]:
            return None
        path = self.directory / (relative_path + GZIP_SUFFIX)
        if path.is_file():
            return path.read_bytes()
        return self._empty_chunk(relative_path)

    def _empty_chunk(self, relative_path: str) -> bytes | None:
        """An all-background chunk for a valid chunk name whose file was omitted (empty)."""
        lo = np.array([int(axis.split("-")[0]) for axis in relative_path.split("/")[1].split("_")])
        chunk = np.array(self.chunk_size)
        coords = (lo - np.array(self.voxel_offset)) // chunk
        if (coords < 0).any() or ((lo - np.array(self.voxel_offset)) % chunk).any():
            return None
        c_lo, c_hi = chunk_bounds(self._scale, coords)
        if (c_lo >= c_hi).any() or chunk_file(self._scale, coords) != relative_path + GZIP_SUFFIX:
            return None
        return encode_chunk(np.zeros(tuple(c_hi - c_lo), dtype=np.uint64))

    def cutout(self, vmin: Any, vmax: Any) -> np.ndarray:
        """Labels of the half-open voxel box [vmin, vmax); 0 outside the volume."""
        vmin = np.asarray(vmin, dtype=np.int64)
        vmax = np.asarray(vmax, dtype=np.int64)
        out = np.zeros(tuple(np.maximum(vmax - vmin, 0)), dtype=np.uint64)
        offset = np.array(self.voxel_offset)
        lo = np.maximum(vmin, offset)
        hi = np.minimum(vmax, offset + np.array(self.size))
        if np.any(hi <= lo):
            return out
        chunk = np.array(self.chunk_size)
        first, last = (lo - offset) // chunk, (hi - 1 - offset) // chunk
        for coords in np.ndindex(*(last - first + 1)):
            c = first + np.array(coords)
            c_lo, c_hi = chunk_bounds(self._scale, c)
            a, b = np.maximum(c_lo, lo), np.minimum(c_hi, hi)
            src = tuple(slice(int(s), int(e)) for s, e in zip(a - c_lo, b - c_lo))
            dst = tuple(slice(int(s), int(e)) for s, e in zip(a - vmin, b - vmin))
            out[dst] = self.read_chunk(*c)[src]
        return out

    def supervoxels_at(self, points_voxels: Any) -> np.ndarray:
        """Supervoxel id at each (n, 3) voxel point (floored); 0 outside the volume."""
        points = np.floor(np.asarray(points_voxels, dtype=np.float64).reshape(-1, 3)).astype(
            np.int64
        )
        local = points - np.array(self.voxel_offset)
        out = np.zeros(len(points), dtype=np.uint64)
        inside = np.all((local >= 0) & (local < np.array(self.size)), axis=1)
        chunk = np.array(self.chunk_size)
        coords = local // chunk
        keys = (
            np.ravel_multi_index(coords[inside].T, self.grid)
            if inside.any()
            else np.zeros(0, np.int64)
        )
        rows = np.flatnonzero(inside)
        for key in np.unique(keys):
            sel = rows[keys == key]
            c = np.unravel_index(key, self.grid)
            within = local[sel] - np.array(c) * chunk
            out[sel] = self.read_chunk(*c)[within[:, 0], within[:, 1], within[:, 2]]
        return out

    def supervoxels_near(self, point_voxels: Any, radius_voxels: Any) -> np.ndarray:
        """Unique nonzero supervoxel ids in the box point ± radius (inclusive), ascending."""
        centre = np.floor(np.asarray(point_voxels, dtype=np.float64)).astype(np.int64)
        radius = np.asarray(radius_voxels, dtype=np.int64)
        ids = np.unique(self.cutout(centre - radius, centre + radius + 1))
        return ids[ids != 0]
