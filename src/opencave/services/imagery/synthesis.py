"""Synthetic electron-microscopy intensities rendered from a label volume.

Every random value is a hash of (seed, absolute voxel position or object id), so any slab of
the volume renders the same wherever it is cut: the volume is built slab by slab in bounded
memory and gives identical bytes on every run. Arrays are indexed (x, y, z).

The look, from the labels outward: cells are pale with a smooth per-cell texture; a dark
membrane a few voxels wide lines every boundary between objects (seen in x/y, as in sections);
nuclei are darker, with a dark envelope and heterochromatin mottle; dark vesicle-like speckle
clusters in the cytoplasm; everything gets fine grain noise. Where the segmentation has no
object the space is filled with unlabelled neuropil: small profiles (a Voronoi partition whose
seeds drift slowly through z) lined by membranes like the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

NEUROPIL_CELL = 22  # x/y voxels between the seeds of unlabelled neuropil profiles
NEUROPIL_FLAG = np.uint64(0xFF << 56)  # object ids of neuropil profiles (no supervoxel has this layer)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: well-spread uint64 hashes of uint64 inputs (wrapping arithmetic)."""
    z = values.astype(np.uint64, copy=True)
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def hash_uniform(seed: int, stream: int, *keys: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) float32 values determined by (seed, stream, keys...), broadcast over keys.

    Keys are mixed in one at a time, so with open grids only the last mix is full-size."""
    out = np.asarray((seed * 0x9E3779B97F4A7C15 + stream * 0xD1B54A32D192ED03) & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)
    for key in keys:
        key = np.asarray(key)
        bits = key.astype(np.uint64) if key.dtype == np.uint64 else key.astype(np.int64).astype(np.uint64)
        out = _mix(out ^ bits)
    return ((out >> np.uint64(40)).astype(np.float32)) / np.float32(1 << 24)


def _grid(lo: tuple[int, int, int], shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open (broadcastable) absolute voxel coordinates of the box starting at ``lo``."""
    return tuple(  # type: ignore[return-value]
        (np.arange(n, dtype=np.int64) + o).reshape([-1 if a == axis else 1 for a in range(3)])
        for axis, (o, n) in enumerate(zip(lo, shape))
    )


@dataclass(frozen=True)
class Nucleus:
    """A cell's nucleus: its owner's object id, centre (voxels) and radius (nm)."""

    object_id: int
    centre: tuple[int, int, int]
    radius_nm: float


def neuropil(lo: tuple[int, int, int], shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Object ids of unlabelled neuropil profiles in the box: each voxel takes the nearest seed in
    its own section among the 3 × 3 lattice cells around it; seeds sit one per lattice cell,
    jittered, drifting smoothly through z (always within their own cell)."""
    cell = NEUROPIL_CELL
    x0, y0, z0 = lo
    nx, ny, nz = shape
    i0, j0 = x0 // cell - 1, y0 // cell - 1
    i = np.arange(i0, (x0 + nx - 1) // cell + 2)[:, None, None]
    j = np.arange(j0, (y0 + ny - 1) // cell + 2)[None, :, None]
    angle = 2 * np.pi * np.arange(z0, z0 + nz)[None, None, :] / (12 + 24 * hash_uniform(seed, 2, i, j))
    angle = angle + 2 * np.pi * hash_uniform(seed, 1, i, j)
    seed_x = (i + 0.5 + 0.5 * hash_uniform(seed, 3, i, j) - 0.25 + 0.2 * np.sin(angle)) * cell
    seed_y = (j + 0.5 + 0.5 * hash_uniform(seed, 4, i, j) - 0.25 + 0.2 * np.cos(angle)) * cell
    seed_x, seed_y = seed_x.astype(np.float32), seed_y.astype(np.float32)
    x = np.arange(x0, x0 + nx)
    y = np.arange(y0, y0 + ny)
    ci, cj = x // cell - i0, y // cell - j0
    fx, fy = x.astype(np.float32)[:, None, None], y.astype(np.float32)[None, :, None]
    distance = np.stack(
        [
            (fx - seed_x.take(ci + di, axis=0).take(cj + dj, axis=1)) ** 2
            + (fy - seed_y.take(ci + di, axis=0).take(cj + dj, axis=1)) ** 2
            for di in (-1, 0, 1)
            for dj in (-1, 0, 1)
        ]
    )
    nearest = distance.argmin(axis=0)
    best_i = (ci + i0)[:, None, None] + nearest // 3 - 1
    best_j = (cj + j0)[None, :, None] + nearest % 3 - 1
    offset = np.int64(1 << 23)
    return NEUROPIL_FLAG | ((best_i + offset).astype(np.uint64) << np.uint64(24)) | (best_j + offset).astype(np.uint64)


def _membranes(objects: np.ndarray) -> np.ndarray:
    """Soft membrane strength in [0, 1]: voxels whose x or y neighbour is another object, widened
    and blurred in each section."""
    edge = np.zeros(objects.shape, dtype=bool)
    dx = objects[1:] != objects[:-1]
    edge[1:] |= dx
    edge[:-1] |= dx
    dy = objects[:, 1:] != objects[:, :-1]
    edge[:, 1:] |= dy
    edge[:, :-1] |= dy
    soft = ndimage.gaussian_filter(edge.astype(np.float32), sigma=(0.7, 0.7, 0))
    return np.clip(soft * 1.5, 0, 1)


def _smooth_noise(seed: int, stream: int, lo: tuple[int, int, int], shape: tuple[int, int, int], sigma: tuple[float, float, float]) -> np.ndarray:
    """Zero-mean, unit-ish smooth noise; computed with a halo so slabs join seamlessly."""
    halo = tuple(int(np.ceil(4 * s)) for s in sigma)
    wide_lo = tuple(o - h for o, h in zip(lo, halo))
    wide = tuple(n + 2 * h for n, h in zip(shape, halo))
    white = hash_uniform(seed, stream, *_grid(wide_lo, wide)) - np.float32(0.5)  # type: ignore[arg-type]
    smooth = ndimage.gaussian_filter(white, sigma=sigma)
    spread = np.prod([2 * np.sqrt(np.pi) * s for s in sigma if s > 0])  # variance shrinks by this
    smooth *= np.float32(np.sqrt(spread) / 0.2887)
    return smooth[tuple(slice(h, h + n) for h, n in zip(halo, shape))]


def render(
    labels: np.ndarray,
    lo: tuple[int, int, int],
    seed: int,
    resolution: tuple[int, int, int],
    nuclei: list[Nucleus],
) -> np.ndarray:
    """uint8 EM-like intensities of the box at ``lo`` whose object ids are ``labels`` (0 = no
    object, filled with neuropil). ``nuclei`` may include ones outside the box."""
    shape = labels.shape
    objects = np.where(labels == 0, neuropil(lo, shape, seed), labels)  # type: ignore[arg-type]
    flat, inverse = np.unique(objects, return_inverse=True)
    inverse = inverse.reshape(shape)
    base = (150 + 55 * hash_uniform(seed, 10, flat))[inverse]
    grain = (0.6 + 0.8 * hash_uniform(seed, 11, flat))[inverse]
    texture = _smooth_noise(seed, 12, lo, shape, (2.5, 2.5, 0.5))
    image = base + 9 * grain * texture

    x, y, z = _grid(lo, shape)
    mottle = _smooth_noise(seed, 13, lo, shape, (1.2, 1.2, 0.4))
    for nucleus in nuclei:
        cx, cy, cz = nucleus.centre
        r = nucleus.radius_nm
        reach = [int(np.ceil(r / res)) + 2 for res in resolution]
        box = tuple(
            slice(max(c - k - o, 0), max(min(c + k + 1 - o, n), 0))
            for c, k, o, n in zip((cx, cy, cz), reach, lo, shape)
        )
        if any(s.start >= s.stop for s in box):
            continue
        d = np.sqrt(
            ((x[box[0], :, :] - cx) * resolution[0]) ** 2
            + ((y[:, box[1], :] - cy) * resolution[1]) ** 2
            + ((z[:, :, box[2]] - cz) * resolution[2]) ** 2
        ).astype(np.float32)
        own = objects[box] == nucleus.object_id
        inside = np.clip((r - d) / 12.0 + 0.5, 0, 1) * own
        envelope = np.exp(-(((d - r) / 14.0) ** 2)) * own
        region = image[box]
        region *= 1 - 0.28 * inside - 0.25 * envelope
        region += 14 * inside * mottle[box]

    membrane = _membranes(objects)
    speckle_field = _smooth_noise(seed, 14, lo, shape, (4.0, 4.0, 1.0))
    dots = hash_uniform(seed, 15, x, y, z) < np.clip(0.02 * (speckle_field - 0.2), 0, 0.03)
    vesicles = np.clip(ndimage.gaussian_filter(dots.astype(np.float32), sigma=(1.0, 1.0, 0)) * 4.0, 0, 1)
    image *= 1 - 0.45 * vesicles * (1 - membrane)
    image *= 1 - 0.7 * membrane
    image += 14 * (hash_uniform(seed, 16, x, y, z) + hash_uniform(seed, 17, x, y, z) - 1)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
