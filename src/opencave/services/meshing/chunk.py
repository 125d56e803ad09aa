"""Meshing one relabelled watershed chunk: zmesh surfaces, simplified, Draco-encoded.

The cutout covers the chunk plus one voxel into each upper neighbour, and zmesh leaves a surface
open where it meets the cutout's edge. So a chunk's surfaces end exactly on the sample plane its
upper neighbour's surfaces start from, and both copies of such a vertex quantize to the same
grid point: the client merges them and the object's surface is closed across chunks. The
simplifier keeps those open-edge vertices in place, which is what makes this work after
simplification too.
"""

from __future__ import annotations

import math

import DracoPy
import numpy as np
import zmesh

# Simplification: collapse edges while a vertex moves at most MAX_ERROR_VOXELS of the finest
# voxel side, aiming at REDUCTION_FACTOR × fewer triangles (the error bound usually stops it).
REDUCTION_FACTOR = 100
MAX_ERROR_VOXELS = 2.0
DRACO_COMPRESSION_LEVEL = 5


Surface = tuple[np.ndarray, np.ndarray]  # vertices (nm, float64), faces (uint32)


def surfaces(labels: np.ndarray, origin_nm: np.ndarray, resolution: np.ndarray) -> dict[int, Surface]:
    """Simplified surface of every nonzero label of ``labels`` (x, y, z), vertices in global nm.

    ``origin_nm`` is the position of voxel (0, 0, 0) of the cutout. Labels without triangles
    are left out.
    """
    resolution = np.asarray(resolution, dtype=np.float64)
    mesher = zmesh.Mesher(tuple(float(r) for r in resolution))
    mesher.mesh(np.asfortranarray(labels))
    max_error = MAX_ERROR_VOXELS * float(resolution.min())
    found: dict[int, Surface] = {}
    for label in mesher.ids():
        mesh = mesher.get(int(label), normals=False, reduction_factor=REDUCTION_FACTOR, max_error=max_error)
        mesher.erase(int(label))
        if len(mesh.faces):
            vertices = mesh.vertices.astype(np.float64) + np.asarray(origin_nm, dtype=np.float64)
            found[int(label)] = (vertices, np.asarray(mesh.faces, dtype=np.uint32))
    mesher.clear()
    return found


def weld(parts: list[Surface], grid: float) -> Surface:
    """One surface from pieces meshed separately: vertices snapped to the grid, shared ones
    merged, triangles that collapsed dropped."""
    vertices = np.concatenate([p[0] for p in parts])
    offsets = np.cumsum([0] + [len(p[0]) for p in parts[:-1]])
    faces = np.concatenate([p[1].astype(np.int64) + o for p, o in zip(parts, offsets)])
    snapped = np.round(vertices / grid) * grid
    unique, inverse = np.unique(snapped, axis=0, return_inverse=True)
    faces = inverse.ravel()[faces]
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    return unique, faces[keep].astype(np.uint32)


def encode_draco(vertices: np.ndarray, faces: np.ndarray, grid: float) -> bytes:
    """Draco bytes whose positions are quantized to multiples of ``grid`` (nm).

    Draco maps positions to ``origin + q · range / (2^bits − 1)``; with a grid-aligned origin
    and ``range = grid · (2^bits − 1)`` every decoded position is a grid multiple, the same one
    whichever fragment a shared boundary vertex comes from.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    origin = np.floor(vertices.min(axis=0) / grid) * grid
    steps = float(np.max(vertices.max(axis=0) - origin)) / grid
    bits = max(2, math.ceil(math.log2(steps + 2)))
    if bits > 30:
        raise ValueError(f"a fragment spans {steps:.0f} grid steps; too many to quantize")
    levels = (1 << bits) - 1
    return DracoPy.encode(
        vertices.astype(np.float32),
        np.asarray(faces, dtype=np.uint32),
        quantization_bits=bits,
        quantization_range=grid * levels,
        quantization_origin=[float(v) for v in origin],
        compression_level=DRACO_COMPRESSION_LEVEL,
    )
