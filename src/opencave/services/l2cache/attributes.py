"""Per-L2 attributes of one atomic chunk, as the L2 cache serves them.

Every L2 node of a chunk is computed in one pass: the chunk is relabelled to
contiguous L2 indices, one multi-label EDT runs over it, and all statistics are
per-label reductions over the voxels sorted by label. Semantics follow the
reference worker:

* The chunk is zero-padded to its nominal size, so the volume edge behaves like
  background (it bounds the EDT, adds surface area, and is never an upper
  chunk face), while interior chunk faces do neither (``black_border=False``).
* Area counts voxel faces between different labels inside the chunk; background
  and supervoxels outside the mapping count as "different".
* EDT values are truncated to whole nanometres before max/mean/rep-coord. A
  component filling its whole chunk has no boundary, so its distances saturate
  at 65504 nm (the largest value both max_dt and mean_dt columns hold)
  rather than being infinite.
* PCA uses exact second moments of all voxels; singular values are rescaled to
  the at most 10,000 sampled points the reference fits, which keeps them
  comparable while making the result deterministic.
* Values are rounded to their storage dtypes (``ATTRIBUTE_METADATA``) so they
  read back as the cache would return them; out-of-range counts saturate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import edt
import fastremap
import numpy as np

ATTRIBUTE_METADATA: dict[str, str] = {
    "size_nm3": "uint32",
    "area_nm2": "uint32",
    "max_dt_nm": "uint16",
    "mean_dt_nm": "float16",
    "rep_coord_nm": "uint16",
    "chunk_intersect_count": "uint16",
    "pca": "float16",
    "pca_val": "float32",
}
ATTRIBUTE_NAMES: tuple[str, ...] = tuple(ATTRIBUTE_METADATA)

PCA_MIN_VOLUME_UM3 = 0.01  # smaller components get no pca/pca_val
PCA_MAX_POINTS = 10_000  # point count the reference fits its PCA on
# 65504, the largest distance both the uint16 max_dt and float16 mean_dt columns hold
DT_CEILING_NM = float(np.finfo(np.float16).max)

SvToL2 = Mapping[int, int] | tuple[np.ndarray, np.ndarray]


def _mapping_arrays(sv_to_l2: SvToL2) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(sv_to_l2, Mapping):
        svs, l2s = list(sv_to_l2.keys()), list(sv_to_l2.values())
    else:
        svs, l2s = sv_to_l2
    svs = np.asarray(svs, dtype=np.uint64).ravel()
    l2s = np.asarray(l2s, dtype=np.uint64).ravel()
    if svs.shape != l2s.shape:
        raise ValueError("sv_to_l2 arrays differ in length")
    keep = (svs != 0) & (l2s != 0)
    return svs[keep], l2s[keep]


def _contiguous(labels: np.ndarray, sv_to_l2: SvToL2) -> tuple[np.ndarray, np.ndarray]:
    """Relabel to 1..k (0 = background or unmapped); return it and the k L2 ids.

    Only L2s with a voxel in the chunk get an index, so no label is empty. The
    narrowest dtype is used because every later pass streams this volume.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3 or labels.dtype.kind not in "ui":
        raise ValueError("labels must be a 3-d integer array")
    svs, l2s = _mapping_arrays(sv_to_l2)
    present = fastremap.unique(labels)
    present = present[present != 0].astype(np.uint64)
    hit = np.isin(svs, present)
    svs, l2s = svs[hit], l2s[hit]
    l2_ids, index = np.unique(l2s, return_inverse=True)
    table = dict.fromkeys(present.tolist(), 0)
    table.update(zip(svs.tolist(), (index + 1).tolist()))
    table[0] = 0
    vol = fastremap.remap(labels.astype(np.uint64, copy=False), table)
    return vol.astype(np.uint16 if len(l2_ids) < 2**16 else np.uint32), l2_ids


def relabel_to_l2(labels: np.ndarray, sv_to_l2: SvToL2) -> np.ndarray:
    """Supervoxel volume -> L2 volume (uint64); unmapped supervoxels become 0."""
    vol, l2_ids = _contiguous(labels, sv_to_l2)
    return np.concatenate([np.zeros(1, np.uint64), l2_ids])[vol]


def _pad_to_chunk(vol: np.ndarray, chunk_size: np.ndarray) -> np.ndarray:
    """Zero-fill a clipped edge chunk, as the reference reads it (unbounded volume)."""
    short = chunk_size - np.array(vol.shape)
    if (short < 0).any():
        raise ValueError(f"labels {vol.shape} exceed chunk_size {tuple(chunk_size)}")
    if not short.any():
        return np.ascontiguousarray(vol)
    return np.pad(vol, [(0, int(s)) for s in short])


def _surface_area(vol: np.ndarray, k: int, resolution: np.ndarray) -> np.ndarray:
    """Faces between different labels per label, weighted by that axis's face area."""
    face_area = np.prod(resolution) / resolution
    area = np.zeros(k + 1)
    for axis in range(3):
        lo = vol[(slice(None),) * axis + (slice(None, -1),)]
        hi = vol[(slice(None),) * axis + (slice(1, None),)]
        diff = lo != hi
        counts = np.bincount(lo[diff], minlength=k + 1) + np.bincount(
            hi[diff], minlength=k + 1
        )
        area += counts * face_area[axis]
    return area[1:]


def _chunk_face_counts(vol: np.ndarray, k: int) -> np.ndarray:
    """(k, 2, 3) voxels on the lower / upper chunk face per axis."""
    counts = np.empty((k, 2, 3), dtype=np.int64)
    for axis in range(3):
        for side, index in enumerate((0, -1)):
            face = vol.take(index, axis=axis).ravel()
            counts[:, side, axis] = np.bincount(face, minlength=k + 1)[1:]
    return counts


def _grouped_voxels(vol: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the labelled voxels grouped by label, and each group's size.

    A stable sort keeps flat order within a group, which matches the reference's
    tie-breaking for the representative point.
    """
    flat = vol.ravel()
    order = np.argsort(flat, kind="stable")
    sizes = np.bincount(flat, minlength=k + 1)
    return order[sizes[0] :], sizes[1:]


def _unravel(vox: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
    """Flat index -> per-axis voxel coordinates (int32 arithmetic is much faster)."""
    nx, ny, nz = shape
    dtype = np.int32 if nx * ny * nz < 2**31 else np.int64
    rest = vox.astype(dtype)
    x = rest // dtype(ny * nz)
    rest -= x * dtype(ny * nz)
    y = rest // dtype(nz)
    rest -= y * dtype(nz)
    return [x, y, rest]


def _representative(
    coords: list[np.ndarray],
    dts: np.ndarray,
    starts: np.ndarray,
    sizes: np.ndarray,
    res: np.ndarray,
) -> np.ndarray:
    """Per label, the first voxel maximising ``dt * (1 - r / r_max)`` (r = distance
    to the label's centroid in nm): deep inside, yet central.

    Works in place on two voxel-sized buffers: fresh temporaries cost more than
    the arithmetic.
    """
    lab = np.repeat(np.arange(len(sizes)), sizes)
    radius = np.empty(len(dts))
    term = np.empty(len(dts))
    for axis, (c, r) in enumerate(zip(coords, res)):
        centre = np.add.reduceat(c, starts, dtype=np.int64) / sizes
        out = radius if axis == 0 else term
        np.take(centre, lab, out=out, mode="clip")  # "clip": unbuffered
        np.subtract(c, out, out=out)
        out *= r
        np.square(out, out=out)
        if axis:
            radius += term
    np.sqrt(radius, out=radius)
    max_radius = np.maximum.reduceat(radius, starts)
    score = np.take(
        np.where(max_radius > 0, max_radius, np.inf), lab, out=term, mode="clip"
    )
    np.divide(radius, score, out=score)
    np.subtract(1, score, out=score)
    score *= dts
    first = [b + int(np.argmax(score[b : b + n])) for b, n in zip(starts, sizes)]
    return np.stack([c[first] for c in coords], axis=1)


def _pca(
    coords: list[np.ndarray], starts: np.ndarray, sizes: np.ndarray, res: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Principal axes (rows) and singular values per label, like sklearn's PCA(3)
    on voxel coordinates in nm.

    The scatter matrix comes from exact integer moments of all voxels. Singular
    values are those of the point set the reference fits: at most PCA_MAX_POINTS
    sampled points (the expected scatter scales by (m-1)/(n-1)), and fewer than
    3 points tripled.
    """
    sums = [
        np.add.reduceat(c, starts, dtype=np.int64).astype(np.float64) for c in coords
    ]
    scatter = np.empty((len(sizes), 3, 3))
    product = np.empty(len(coords[0]), dtype=np.int64)
    for i, j in zip(*np.triu_indices(3)):
        np.multiply(coords[i], coords[j], out=product, dtype=np.int64)
        moment = np.add.reduceat(product, starts) - sums[i] * sums[j] / sizes
        scatter[:, i, j] = scatter[:, j, i] = moment * res[i] * res[j]
    eigvals, eigvecs = np.linalg.eigh(scatter)
    eigvals = np.clip(eigvals[:, ::-1], 0, None)
    axes = np.swapaxes(eigvecs[:, :, ::-1], 1, 2)
    factor = np.where(
        sizes > PCA_MAX_POINTS, (PCA_MAX_POINTS - 1) / np.maximum(sizes - 1, 1), 1.0
    )
    factor = np.where(sizes < 3, 3.0, factor)
    values = np.sqrt(eigvals * factor[:, None])
    # Deterministic signs (sklearn's svd_flip on Vt): largest |entry| of each axis positive.
    biggest = np.take_along_axis(axes, np.abs(axes).argmax(axis=2)[:, :, None], axis=2)
    axes *= np.where(biggest < 0, -1.0, 1.0)
    return axes, values


def _saturate(values: np.ndarray, dtype: str) -> np.ndarray:
    return np.minimum(values, np.iinfo(dtype).max).astype(np.int64)


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def compute_chunk_attributes(
    labels: np.ndarray,
    sv_to_l2: SvToL2,
    chunk_origin: Sequence[int],
    resolution: Sequence[float],
    chunk_size: Sequence[int],
) -> dict[int, dict[str, object]]:
    """All L2 cache attributes for the L2s of one atomic chunk.

    ``labels`` is the (x, y, z) supervoxel volume of the chunk starting at voxel
    ``chunk_origin`` (volume offset included); supervoxels absent from
    ``sv_to_l2`` are treated as background. Returns ``{l2_id: {attr: value}}``
    with JSON-ready values in global nanometres.
    """
    res = np.asarray(resolution, dtype=np.float64)
    origin = np.asarray(chunk_origin, dtype=np.float64)
    vol, l2_ids = _contiguous(labels, sv_to_l2)
    vol = _pad_to_chunk(vol, np.asarray(chunk_size, dtype=np.int64))
    k = len(l2_ids)
    if k == 0:
        return {}
    dist = edt.edt(vol, anisotropy=tuple(res), black_border=False, parallel=1)
    # A label filling the whole chunk has no boundary: infinite distances saturate.
    np.minimum(dist, DT_CEILING_NM, out=dist)

    vox, sizes = _grouped_voxels(vol, k)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    dts = dist.ravel()[vox].astype(np.float64)
    np.floor(dts, out=dts)  # whole nm, as the reference stores them
    max_dt = np.maximum.reduceat(dts, starts)
    mean_dt = np.add.reduceat(dts, starts) / sizes
    coords = _unravel(vox, vol.shape)
    rep_nm = (_representative(coords, dts, starts, sizes, res) + origin) * res

    intersect = _chunk_face_counts(vol, k)
    area = _surface_area(vol, k, res)

    voxel_nm3 = float(np.prod(res))
    with_pca = sizes * voxel_nm3 / 1e9 >= PCA_MIN_VOLUME_UM3
    axes, values = _pca(coords, starts, sizes, res)

    size_counts = _saturate(sizes, "uint32")
    area_nm2 = _saturate(np.floor(area), "uint32")
    max_dt_nm = _saturate(max_dt, "uint16")
    intersect = _saturate(intersect, "uint16")
    result: dict[int, dict[str, object]] = {}
    for i, l2_id in enumerate(l2_ids.tolist()):
        attrs: dict[str, object] = {
            "size_nm3": _number(size_counts[i] * voxel_nm3),
            "area_nm2": int(area_nm2[i]),
            "max_dt_nm": int(max_dt_nm[i]),
            "mean_dt_nm": float(np.float16(mean_dt[i])),
            "rep_coord_nm": [_number(v) for v in rep_nm[i]],
            "chunk_intersect_count": intersect[i].tolist(),
        }
        if with_pca[i]:
            attrs["pca"] = axes[i].astype(np.float16).astype(float).tolist()
            attrs["pca_val"] = values[i].astype(np.float32).astype(float).tolist()
        result[l2_id] = attrs
    return result
