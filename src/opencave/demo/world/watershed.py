"""Rasterise neurons chunk by chunk, oversegment them into supervoxels and find their contacts.

A supervoxel is a connected piece of (one morphology piece ∧ one Voronoi cell of a global seed
grid) inside one chunk, so supervoxels never cross chunk or branch boundaries, like the
watershed fragments a chunkedgraph is built on; slivers join a neighbour of the same piece.
Each voxel's piece and cell depend only on its global position, so chunks can be computed
independently and still agree at their faces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import cc3d
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from opencave.demo.world.neurons import NM_PER_VOXEL, Neuron, Piece
from opencave.demo.world.sizes import CHUNK_SIZE, WorldSize
from opencave.wire.node_ids import NodeIdLayout

SEED_SPACING = np.array([12.0, 12.0, 3.0])  # voxels; Voronoi cells of ~430 voxels
MIN_VOXELS = 40  # smaller fragments join a neighbour of the same piece
_PAD = np.array([8, 8, 2])  # capsule boxes are padded to these multiples and batched by size
_BATCH = 2_000_000  # voxels evaluated at once


@dataclass(frozen=True)
class Capsules:
    """Tapered cylinders (and soma ellipsoids, as zero-length ones) in painting order.

    Distances are measured with z stretched by ``zscale`` so a neurite of x/y radius r is
    max(r/5, 1) voxels thick in z: r/5 from the anisotropy, at least one voxel to stay connected.
    """

    p0: np.ndarray  # (n, 3) voxels
    p1: np.ndarray
    r0: np.ndarray  # (n,) x/y radius, voxels
    r1: np.ndarray
    zscale: np.ndarray
    piece: np.ndarray  # (n,) global piece id, 1-based
    lo: np.ndarray  # (n, 3) voxel bbox, half-open
    hi: np.ndarray
    axis: np.ndarray  # (n, 3) p1 - p0 with z stretched by zscale
    axis_sq: np.ndarray  # (n,) its squared length

    @classmethod
    def from_neurons(
        cls,
        neurons: list[Neuron],
        volume: tuple[int, int, int],
        strays: Sequence[Piece] = (),
    ) -> Capsules:
        """Pieces numbered in order: each neuron's (soma first), then the stray neurites."""
        p0, p1, r0, r1, zscale, piece = [], [], [], [], [], []
        next_piece = 1
        parts = [
            (neuron if index == 0 else None, part)
            for neuron in neurons
            for index, part in enumerate(neuron.pieces)
        ]
        parts += [(None, part) for part in strays]
        for soma_of, part in parts:
            if soma_of is not None:
                p0.append(part.points)
                p1.append(part.points)
                r0.append(part.radii)
                r1.append(part.radii)
                zscale.append([soma_of.soma_radius / soma_of.soma_z_radius])
            else:
                p0.append(part.points[:-1])
                p1.append(part.points[1:])
                r0.append(part.radii[:-1])
                r1.append(part.radii[1:])
                zscale.append(np.minimum(5.0, np.minimum(part.radii[:-1], part.radii[1:])))
            piece.append(np.full(len(p0[-1]), next_piece))
            next_piece += 1
        a, b = np.concatenate(p0), np.concatenate(p1)
        ra, rb, s = np.concatenate(r0), np.concatenate(r1), np.concatenate(zscale)
        reach = np.maximum(ra, rb)[:, None] / np.stack(
            [np.ones_like(s), np.ones_like(s), s], axis=1
        )
        lo = np.clip(np.floor(np.minimum(a, b) - reach), 0, volume).astype(np.int64)
        hi = np.clip(np.ceil(np.maximum(a, b) + reach) + 1, 0, volume).astype(np.int64)
        axis = (b - a) * np.stack([np.ones_like(s), np.ones_like(s), s], axis=1)
        axis_sq = np.array([float(v @ v) for v in axis])  # one dot per capsule, as painted
        return cls(a, b, ra, rb, s, np.concatenate(piece).astype(np.int32), lo, hi, axis, axis_sq)

    def per_chunk(self, chunks_per_axis: tuple[int, int, int]) -> list[np.ndarray]:
        """Capsule indices (painting order) touching each chunk; chunks in C order of (x, y, z)."""
        size = np.array(CHUNK_SIZE)
        grid = np.array(chunks_per_axis)
        first = self.lo // size
        span = (self.hi - 1) // size - first + 1
        counts = np.where((self.hi > self.lo).all(axis=1), span.prod(axis=1), 0)
        owner = np.repeat(np.arange(len(counts)), counts)
        local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        sy, sz = span[owner, 1], span[owner, 2]
        coords = first[owner] + np.stack(
            [local // (sy * sz), (local // sz) % sy, local % sz], axis=1
        )
        chunk = np.ravel_multi_index(coords.T, grid)
        order = np.lexsort((owner, chunk))
        bounds = np.searchsorted(chunk[order], np.arange(grid.prod() + 1))
        return [owner[order[bounds[i] : bounds[i + 1]]] for i in range(grid.prod())]


class SeedGrid:
    """Jittered grid of Voronoi seeds covering the volume; one seed per grid cell."""

    def __init__(self, rng: np.random.Generator, volume: tuple[int, int, int]) -> None:
        self.shape = tuple(int(np.ceil(v / s)) + 1 for v, s in zip(volume, SEED_SPACING))
        index = np.stack(np.meshgrid(*[np.arange(n) for n in self.shape], indexing="ij"), axis=-1)
        jitter = rng.uniform(0, 1, size=index.shape)
        self.positions = ((index + jitter) * SEED_SPACING).reshape(-1, 3)
        self._axes: list[np.ndarray] | None = None  # positions per axis, made on first use

    def nearest(self, points: np.ndarray) -> np.ndarray:
        """Seed of each point: the physically nearest among the 27 surrounding grid cells.

        Candidates are tried in ``itertools.product((-1, 0, 1), repeat=3)`` order and only a
        strictly closer one wins; the squared distance is summed x + y + z, exactly as
        ``(((seed - point) * nm) ** 2).sum(axis=1)`` (worlds must not change with the code).
        """
        if self._axes is None:
            self._axes = [np.ascontiguousarray(self.positions[:, k]) for k in range(3)]
        cell = np.floor(points / SEED_SPACING).astype(np.int64)
        best = np.full(len(points), -1, dtype=np.int64)
        best_d2 = np.full(len(points), np.inf)
        strides = (self.shape[1] * self.shape[2], self.shape[2], 1)
        # per axis: the clipped grid index of each of the three offsets, times the axis stride
        index = [
            [np.clip(cell[:, k] + o, 0, self.shape[k] - 1) * strides[k] for o in (-1, 0, 1)]
            for k in range(3)
        ]
        coords = [np.ascontiguousarray(points[:, k]) for k in range(3)]
        nm = [float(v) for v in NM_PER_VOXEL]
        for ix in index[0]:
            for iy in index[1]:
                ixy = ix + iy
                for iz in index[2]:
                    seed = ixy + iz
                    d2 = None
                    for k in range(3):
                        d = self._axes[k][seed]
                        d -= coords[k]
                        d *= nm[k]
                        d *= d
                        d2 = d if d2 is None else np.add(d2, d, out=d2)
                    closer = d2 < best_d2
                    best[closer], best_d2[closer] = seed[closer], d2[closer]
        return best


@dataclass(frozen=True)
class ChunkSupervoxels:
    """The supervoxels of one chunk; local labels are 1..n (the id's segment)."""

    labels: np.ndarray  # (x, y, z) uint32 local labels, 0 = background
    piece: np.ndarray  # (n,) global piece id
    voxels: np.ndarray  # (n,)
    bbox_min: np.ndarray  # (n, 3) global voxels, inclusive
    bbox_max: np.ndarray  # (n, 3) inclusive
    point: np.ndarray  # (n, 3) a voxel of the supervoxel, nearest its centroid
    edges: np.ndarray  # (e, 2) local labels, a < b
    area: np.ndarray  # (e,) shared voxel faces


def _rasterise(
    origin: np.ndarray, shape: tuple[int, ...], caps: Capsules, indices: np.ndarray
) -> np.ndarray:
    """Global piece id of each voxel; the earlier capsule keeps a voxel claimed twice.

    Capsules are evaluated in batches of equal (padded) box size, each voxel of a box against
    the capsule's axis; the arithmetic per voxel is that of painting one capsule at a time, and
    of all capsules containing a voxel the first in ``indices`` order wins.
    """
    pieces = np.zeros(shape, dtype=np.int32)
    end = origin + np.array(shape)
    lo = np.maximum(caps.lo[indices], origin)
    dims = np.minimum(caps.hi[indices], end) - lo
    keep = np.flatnonzero((dims > 0).all(axis=1))
    if len(keep) == 0:
        return pieces
    lo, dims = lo[keep], dims[keep]
    padded = -(-dims // _PAD) * _PAD
    bucket = np.ravel_multi_index(padded.T, (65, 65, 65), mode="clip")
    order = np.argsort(bucket, kind="stable")
    bounds = np.flatnonzero(np.diff(bucket[order])) + 1
    voxels, ranks = [], []
    for group in np.split(order, bounds):
        px, py, pz = (int(v) for v in padded[group[0]])
        step = max(1, _BATCH // (px * py * pz))
        for first in range(0, len(group), step):
            rank = group[first : first + step]
            capsule = indices[keep[rank]]
            found = _inside(caps, capsule, lo[rank], dims[rank], (px, py, pz))
            g, i, j, k = found
            local = lo[rank][g] - origin
            voxels.append(
                ((local[:, 0] + i) * shape[1] + (local[:, 1] + j)) * shape[2] + (local[:, 2] + k)
            )
            ranks.append(rank[g])
    voxel = np.concatenate(voxels)
    rank = np.concatenate(ranks)
    by_rank = np.argsort(rank, kind="stable")
    painted, winner = np.unique(voxel[by_rank], return_index=True)
    pieces.reshape(-1)[painted] = caps.piece[indices[keep[rank[by_rank][winner]]]]
    return pieces


def _inside(
    caps: Capsules,
    capsule: np.ndarray,
    lo: np.ndarray,
    dims: np.ndarray,
    padded: tuple[int, int, int],
) -> tuple[np.ndarray, ...]:
    """(capsule, x, y, z) box offsets of the voxels inside each of ``capsule``'s capsules."""
    px, py, pz = padded
    a = caps.p0[capsule]
    s = caps.zscale[capsule][:, None, None, None]
    x = (lo[:, 0, None] + np.arange(px)[None, :] - a[:, 0, None])[:, :, None, None]
    y = (lo[:, 1, None] + np.arange(py)[None, :] - a[:, 1, None])[:, None, :, None]
    z = (lo[:, 2, None] + np.arange(pz)[None, :] - a[:, 2, None])[:, None, None, :] * s
    v = caps.axis[capsule]
    vv = caps.axis_sq[capsule]
    v0, v1, v2 = (v[:, k, None, None, None] for k in range(3))
    along = vv > 0
    t = x * v0 + y * v1
    t = t + z * v2
    t /= np.where(along, vv, 1.0)[:, None, None, None]
    np.clip(t, 0, 1, out=t)
    if not along.all():
        t *= along[:, None, None, None]  # somas (zero-length axis): t = 0
    r0 = caps.r0[capsule][:, None, None, None]
    radius = r0 + t * (caps.r1[capsule][:, None, None, None] - r0)
    d = x - t * v0
    d *= d
    e = y - t * v1
    e *= e
    d += e
    e = z - t * v2
    e *= e
    d += e
    g, i, j, k = np.nonzero(d <= radius * radius)
    within = (i < dims[g, 0]) & (j < dims[g, 1]) & (k < dims[g, 2])  # not in the padding
    return g[within], i[within], j[within], k[within]


def _contacts(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of labels sharing voxel faces inside ``labels``, with the number of shared faces."""
    keys = []
    for axis in range(3):
        a = np.delete(labels, -1, axis=axis)
        b = np.delete(labels, 0, axis=axis)
        touching = (a != b) & (a > 0) & (b > 0)
        lo = np.minimum(a[touching], b[touching]).astype(np.int64)
        hi = np.maximum(a[touching], b[touching]).astype(np.int64)
        keys.append(lo * (n + 1) + hi)
    unique, counts = np.unique(np.concatenate(keys), return_counts=True)
    return np.stack([unique // (n + 1), unique % (n + 1)], axis=1), counts


def _absorb_slivers(labels: np.ndarray, pieces: np.ndarray) -> np.ndarray:
    """Merge fragments under ``MIN_VOXELS`` into their most-touching neighbour of the same piece.

    Voronoi boundaries shave thin slivers off neurites; a real watershed would not emit them.
    Each small fragment points at its neighbour with the largest contact (ties: lower label);
    along such pointers contacts only grow, so the only cycles are mutual pairs.
    """
    n = int(labels.max())
    size = np.bincount(labels.ravel(), minlength=n + 1)
    piece = np.zeros(n + 1, dtype=np.int64)
    piece[labels.ravel()] = pieces.ravel()
    pairs, area = _contacts(labels, n)
    a, b = pairs[:, 0], pairs[:, 1]
    keep = piece[a] == piece[b]
    small, other = np.concatenate([a[keep], b[keep]]), np.concatenate([b[keep], a[keep]])
    contact = np.concatenate([area[keep], area[keep]])
    wanted = size[small] < MIN_VOXELS
    small, other, contact = small[wanted], other[wanted], contact[wanted]
    order = np.lexsort((other, -contact, small))
    first = np.unique(small[order], return_index=True)[1]
    parent = np.arange(n + 1)
    parent[small[order][first]] = other[order][first]
    mutual = parent[parent] == np.arange(n + 1)
    parent[mutual] = np.minimum(parent, np.arange(n + 1))[mutual]
    while not np.array_equal(parent[parent], parent):
        parent = parent[parent]
    roots = np.unique(parent[1:])
    remap = np.zeros(n + 1, dtype=np.uint32)
    remap[1:] = np.searchsorted(roots, parent[1:]) + 1
    return remap[labels]


def oversegment_chunk(
    origin: np.ndarray, shape: tuple[int, ...], caps: Capsules, indices: np.ndarray, seeds: SeedGrid
) -> ChunkSupervoxels:
    pieces = _rasterise(origin, shape, caps, indices)
    where = np.nonzero(pieces)
    coords = np.stack(where, axis=1) + origin
    keys = np.zeros(shape, dtype=np.uint64)
    cell = seeds.nearest(coords.astype(np.float64))
    keys[where] = (
        pieces[where].astype(np.uint64) * np.uint64(len(seeds.positions))
        + cell.astype(np.uint64)
        + np.uint64(1)
    )
    labels = _absorb_slivers(
        cc3d.connected_components(keys, connectivity=6, out_dtype=np.uint32), pieces
    )
    n = int(labels.max())
    label = labels[where].astype(np.int64)
    order = np.argsort(label, kind="stable")
    starts = np.searchsorted(label[order], np.arange(1, n + 1))
    voxels = np.diff(np.append(starts, len(order)))
    sorted_coords = coords[order]
    centroid = (
        np.add.reduceat(sorted_coords, starts, axis=0) / voxels[:, None] if n else np.zeros((0, 3))
    )
    d2 = (((coords - centroid[label - 1]) * NM_PER_VOXEL) ** 2).sum(axis=1)
    nearest = np.lexsort((d2, label))[starts]
    edges, area = _contacts(labels, n)
    return ChunkSupervoxels(
        labels=labels,
        piece=pieces[where][order][starts] if n else np.zeros(0, np.int32),
        voxels=voxels,
        bbox_min=np.minimum.reduceat(sorted_coords, starts, axis=0)
        if n
        else np.zeros((0, 3), np.int64),
        bbox_max=np.maximum.reduceat(sorted_coords, starts, axis=0)
        if n
        else np.zeros((0, 3), np.int64),
        point=coords[nearest],
        edges=edges,
        area=area,
    )


@dataclass(frozen=True)
class Oversegmentation:
    """All supervoxels in canonical order (chunks in C order of (x, y, z), then segment) and their contacts."""

    chunk_sv_counts: np.ndarray  # (nx, ny, nz) int32
    sv_ids: np.ndarray  # uint64, ascending
    sv_piece: np.ndarray  # int32
    sv_voxels: np.ndarray  # int32
    sv_bbox_min: np.ndarray  # (n, 3) int32, inclusive
    sv_bbox_max: np.ndarray  # (n, 3) int32, inclusive
    sv_point: np.ndarray  # (n, 3) int32
    edges: np.ndarray  # (e, 2) int64 sv indices, a < b, sorted
    area: np.ndarray  # (e,) int32


def _face(labels: np.ndarray, axis: int, side: int, offset: int) -> np.ndarray:
    plane = np.take(labels, side, axis=axis).astype(np.int64)
    return np.where(plane > 0, plane + offset - 1, -1)


def _face_contacts(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    both = (low >= 0) & (high >= 0)
    pairs = np.unique(np.stack([high[both], low[both]], axis=1), axis=0, return_counts=True)
    return pairs[0].reshape(-1, 2), pairs[1]


def chunk_origins(
    size: WorldSize,
) -> Iterator[tuple[tuple[int, int, int], np.ndarray, tuple[int, int, int]]]:
    """(chunk coordinates, voxel origin, clipped shape) of every chunk, in C order of (x, y, z)."""
    volume, chunk = np.array(size.volume_size), np.array(CHUNK_SIZE)
    for coords in np.ndindex(*size.chunks_per_axis):
        origin = np.array(coords) * chunk
        yield coords, origin, tuple(int(v) for v in np.minimum(chunk, volume - origin))


def oversegment(
    size: WorldSize,
    layout: NodeIdLayout,
    caps: Capsules,
    seeds: SeedGrid,
    emit: Callable[[tuple[int, int, int], np.ndarray, np.ndarray], None],
    advance: Callable[[], object],
) -> Oversegmentation:
    """Oversegment every chunk; ``emit(coords, origin, ids)`` receives each chunk's uint64 id volume.

    Chunk faces are matched against the lower neighbours already processed, so only one chunk's
    labels and the pending upper faces are held at a time.
    """
    grid = size.chunks_per_axis
    per_chunk = caps.per_chunk(grid)
    counts = np.zeros(grid, dtype=np.int32)
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("piece", "voxels", "lo", "hi", "point", "edges", "area", "ids")
    }
    pending: dict[tuple[tuple[int, int, int], int], np.ndarray] = {}
    offset = 0
    for linear, (coords, origin, shape) in enumerate(chunk_origins(size)):
        result = oversegment_chunk(origin, shape, caps, per_chunk[linear], seeds)
        n = len(result.piece)
        counts[coords] = n
        segments = np.arange(1, n + 1)
        ids = np.zeros(result.labels.shape, dtype=np.uint64)
        foreground = result.labels > 0
        ids[foreground] = layout.node_id(1, *coords, result.labels[foreground])
        emit(coords, origin, ids)
        parts["ids"].append(
            np.asarray(layout.node_id(1, *coords, segments), dtype=np.uint64).reshape(-1)
        )
        parts["piece"].append(result.piece)
        parts["voxels"].append(result.voxels)
        parts["lo"].append(result.bbox_min)
        parts["hi"].append(result.bbox_max)
        parts["point"].append(result.point)
        parts["edges"].append(result.edges + offset - 1)
        parts["area"].append(result.area)
        for axis in range(3):
            below = tuple(c - (a == axis) for a, c in enumerate(coords))
            if coords[axis] > 0:
                pairs, area = _face_contacts(
                    _face(result.labels, axis, 0, offset), pending.pop((below, axis))
                )
                parts["edges"].append(pairs)
                parts["area"].append(area)
            if coords[axis] < grid[axis] - 1:
                pending[(coords, axis)] = _face(result.labels, axis, -1, offset)
        offset += n
        advance()
    edges = np.concatenate(parts["edges"]).astype(np.int64)
    order = np.lexsort((edges[:, 1], edges[:, 0]))
    return Oversegmentation(
        chunk_sv_counts=counts,
        sv_ids=np.concatenate(parts["ids"]),
        sv_piece=np.concatenate(parts["piece"]).astype(np.int32),
        sv_voxels=np.concatenate(parts["voxels"]).astype(np.int32),
        sv_bbox_min=np.concatenate(parts["lo"]).astype(np.int32),
        sv_bbox_max=np.concatenate(parts["hi"]).astype(np.int32),
        sv_point=np.concatenate(parts["point"]).astype(np.int32),
        edges=edges[order],
        area=np.concatenate(parts["area"]).astype(np.int32)[order],
    )


def assign_neurons(
    seg: Oversegmentation, piece_neuron: np.ndarray, soma_sv: np.ndarray
) -> np.ndarray:
    """True neuron of each supervoxel: 0 for supervoxels cut off their soma by other cells."""
    owner = piece_neuron[seg.sv_piece]
    a, b = seg.edges[:, 0], seg.edges[:, 1]
    same = owner[a] == owner[b]
    n = len(owner)
    graph = coo_matrix((np.ones(int(same.sum())), (a[same], b[same])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    soma_component = np.concatenate([[-1], component[soma_sv]])
    return np.where(component == soma_component[owner], owner, 0).astype(np.int32)


def affinities(
    rng: np.random.Generator, seg: Oversegmentation, sv_neuron: np.ndarray
) -> np.ndarray:
    """High (0.6-1, growing with contact area) inside a neuron, low (0.01-0.4) between cells."""
    a, b = sv_neuron[seg.edges[:, 0]], sv_neuron[seg.edges[:, 1]]
    same = (a == b) & (a > 0)
    area = seg.area.astype(np.float64)
    noise = rng.uniform(0, 1, size=len(area))
    inside = 0.6 + 0.3 * area / (area + 8) + 0.1 * noise
    between = 0.01 + 0.25 * noise + 0.14 * area / (area + 30)
    return np.where(same, inside, between).astype(np.float32)
