"""Neuroglancer precomputed segmentation on disk: the ``info`` file and compressed chunks.

Chunks are compressed_segmentation (x fastest) then gzip, stored as ``<chunk name>.gz``: the
suffix is how cloud-volume's ``file://`` backend knows to gunzip, and the bytes can be served
over HTTP unchanged with ``Content-Encoding: gzip``. Gzip runs with a zero timestamp, so equal
labels always give equal files.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import compressed_segmentation
import numpy as np

BLOCK_SIZE = (8, 8, 8)
GZIP_SUFFIX = ".gz"


def chunk_name(bbox_min: Any, bbox_max: Any) -> str:
    """``x0-x1_y0-y1_z0-z1`` for a half-open voxel box."""
    return "_".join(f"{int(lo)}-{int(hi)}" for lo, hi in zip(bbox_min, bbox_max))


def encode_chunk(labels: np.ndarray) -> bytes:
    data = compressed_segmentation.compress(
        np.asfortranarray(labels, dtype=np.uint64), block_size=BLOCK_SIZE, order="F"
    )
    return gzip.compress(data, compresslevel=6, mtime=0)


def decode_chunk(data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    """(x, y, z) uint64 labels from the stored (gzipped) bytes."""
    raw = compressed_segmentation.decompress(
        gzip.decompress(data), tuple(shape), np.uint64, BLOCK_SIZE, order="F"
    )
    return np.asarray(raw).reshape(shape, order="F")


def segmentation_info(
    size: tuple[int, int, int],
    resolution: tuple[int, int, int],
    chunk_size: tuple[int, int, int],
    voxel_offset: tuple[int, int, int] = (0, 0, 0),
) -> dict[str, Any]:
    """A single-scale uint64 segmentation info."""
    return {
        "type": "segmentation",
        "data_type": "uint64",
        "num_channels": 1,
        "scales": [
            {
                "key": "_".join(str(v) for v in resolution),
                "resolution": list(resolution),
                "size": list(size),
                "voxel_offset": list(voxel_offset),
                "chunk_sizes": [list(chunk_size)],
                "encoding": "compressed_segmentation",
                "compressed_segmentation_block_size": list(BLOCK_SIZE),
            }
        ],
    }


def write_info(directory: Path, info: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "info").write_text(json.dumps(info, indent=2) + "\n")


def read_info(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "info").read_text())


def chunk_bounds(scale: dict[str, Any], coords: Any) -> tuple[np.ndarray, np.ndarray]:
    """Half-open voxel box of chunk ``coords``, clipped at the volume's upper edge."""
    offset = np.asarray(scale["voxel_offset"], dtype=np.int64)
    chunk = np.asarray(scale["chunk_sizes"][0], dtype=np.int64)
    lo = offset + np.asarray(coords, dtype=np.int64) * chunk
    return lo, np.minimum(lo + chunk, offset + np.asarray(scale["size"], dtype=np.int64))


def chunk_file(scale: dict[str, Any], coords: Any) -> str:
    """Path of a chunk's stored file, relative to the segmentation directory."""
    lo, hi = chunk_bounds(scale, coords)
    return f"{scale['key']}/{chunk_name(lo, hi)}{GZIP_SUFFIX}"
