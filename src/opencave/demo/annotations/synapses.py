"""Synapses on the world's contacts: a connectivity model over supervoxel edges, then sites placed
on face-adjacent voxel pairs read from the watershed, chunk by chunk.

How many synapses a contact gets follows a multinomial over the contacts between different cells
(or a cell and an orphan fragment), weighted by contact area times the strength of the cell pair.
Cells have log-normal output and input gains (interneurons have denser local axons, big arbors
receive more), not every
touching pair is connected, and each pair has a dominant direction with occasional reciprocal
sites, so per-cell counts are heavy-tailed like in real data. Each supervoxel edge's contact lies
wholly inside one chunk or on one chunk face, so every edge's sites are placed in a single step
of the scan and only one chunk (plus the pending faces of its lower neighbours) is in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from opencave.demo.world.spec import WorldSpec
from opencave.services.segmentation.volume import WatershedVolume

SYNAPSE_TARGETS: dict[str, int] = {
    "small": 20_000,
    "medium": 1_000_000,
    "large": 10_600_000,
}
CONNECTED = 0.7  # share of touching cell pairs that have synapses at all
RECIPROCAL = 0.35  # share of connected pairs with sites in both directions
ORPHAN_PRESYNAPTIC = 0.75  # orphan fragments are mostly pieces of axon
SIZE_MEDIAN = 380.0  # cleft voxels, as MICrONS' synapse ``size``
SIZE_SIGMA = 0.9
JITTER = (
    0.45,
    0.35,
    0.2,
)  # chance that pre/post sit 0, 1 or 2 voxels back from the cleft
_DEPTH = len(JITTER)


def synapse_target(size: str) -> int:
    """Synapse rows (before deletions) the demo generates for a world size."""
    if size not in SYNAPSE_TARGETS:
        raise ValueError(f"no synapse target for world size {size!r}")
    return SYNAPSE_TARGETS[size]


@dataclass(frozen=True)
class SynapseSites:
    """Synapses in row order: the first ``n_first`` rows are the first detection batch.

    Positions are voxels of the watershed; ``pre``/``post`` are integer voxels inside the
    supervoxels ``pre_sv``/``post_sv``; ``ctr`` is the midpoint of the contact's voxel pair.
    """

    pre: np.ndarray  # (n, 3) int32
    post: np.ndarray  # (n, 3) int32
    ctr: np.ndarray  # (n, 3) float32
    size: np.ndarray  # (n,) float32
    pre_sv: np.ndarray  # (n,) uint64
    post_sv: np.ndarray  # (n,) uint64
    n_first: int


@dataclass(frozen=True)
class _Plan:
    """Site counts per supervoxel edge and, per site, its direction; slots index wanted edges."""

    key: np.ndarray  # (m,) sorted edge keys (sv index a * n_sv + sv index b) of edges with sites
    start: np.ndarray  # (m + 1,) first site of each slot (sites are ordered by slot)
    pre_is_a: np.ndarray  # (n,) bool: the site's presynaptic side is the edge's lower id
    log_size: np.ndarray  # (m,) log-size shift of the slot's cell pair


def _plan(world: WorldSpec, rng: np.random.Generator, target: int) -> _Plan:
    graph = world.graph
    n_sv = len(graph.sv_ids)
    ia = np.searchsorted(graph.sv_ids, graph.edges[:, 0])
    ib = np.searchsorted(graph.sv_ids, graph.edges[:, 1])
    na, nb = graph.sv_neuron[ia].astype(np.int64), graph.sv_neuron[ib].astype(np.int64)
    cand = np.flatnonzero(na != nb)  # different cells, or a cell and an orphan fragment
    na, nb, ia, ib = na[cand], nb[cand], ia[cand], ib[cand]
    area = graph.area[cand].astype(np.float64)

    n = world.n_neurons
    inhibitory = np.array([c["cell_class"] == "inhibitory" for c in world.cells])
    gain_out = np.concatenate([[1.0], rng.lognormal(0.0, 1.0, n) * np.where(inhibitory, 2.0, 1.0)])
    # big arbors are mostly thick dendrite: large cells receive more than they give
    arbor = np.array([c["n_supervoxels"] for c in world.cells], dtype=np.float64)
    arbor = np.sqrt(np.maximum(arbor, 1.0) / max(float(np.median(arbor)), 1.0))
    gain_in = np.concatenate([[1.0], rng.lognormal(0.0, 0.6, n) * arbor])
    inh = np.concatenate([[False], inhibitory])

    # cell pairs: connected or not, strength, dominant direction, reciprocity
    lo, hi = np.minimum(na, nb), np.maximum(na, nb)
    pair_key = lo * (n + 1) + hi
    pairs, pair_of = np.unique(pair_key, return_inverse=True)
    p_lo, p_hi = pairs // (n + 1), pairs % (n + 1)
    n_pairs = len(pairs)
    connected = rng.random(n_pairs) < CONNECTED
    strength = rng.lognormal(0.0, 1.0, n_pairs)
    forward = gain_out[p_lo] * gain_in[p_hi]
    backward = gain_out[p_hi] * gain_in[p_lo]
    lo_is_pre = rng.random(n_pairs) < forward / (forward + backward)
    reverse = np.where(rng.random(n_pairs) < RECIPROCAL, rng.uniform(0.1, 0.5, n_pairs), 0.0)
    pair_pre = np.where(lo_is_pre, p_lo, p_hi)
    weight = connected * strength * np.where(lo_is_pre, forward, backward)
    pair_size = rng.normal(0.0, 0.3, n_pairs) + np.where(inh[pair_pre], np.log(0.6), 0.0)

    # contacts with an orphan fragment: the fragment's role and gain are its own
    orphan_pre = rng.random(n_sv) < ORPHAN_PRESYNAPTIC
    orphan_gain = rng.lognormal(0.0, 0.8, n_sv)
    orphan = (na == 0) | (nb == 0)
    o_sv = np.where(na == 0, ia, ib)
    o_cell = np.where(na == 0, nb, na)
    o_pre = orphan_pre[o_sv]
    edge_weight = np.where(
        orphan,
        orphan_gain[o_sv] * np.where(o_pre, gain_in[o_cell], gain_out[o_cell]),
        weight[pair_of],
    )
    a_is_pre = np.where(orphan, o_pre == (na == 0), pair_pre[pair_of] == na)
    edge_reverse = np.where(orphan, 0.05, reverse[pair_of])
    edge_size = np.where(
        orphan,
        np.where(o_pre, 0.0, np.where(inh[o_cell], np.log(0.6), 0.0)),
        pair_size[pair_of],
    )

    edge_weight = edge_weight * area * rng.lognormal(0.0, 0.5, len(area))
    total = edge_weight.sum()
    if total <= 0 or target <= 0:
        counts = np.zeros(len(area), dtype=np.int64)
    else:
        counts = rng.multinomial(target, edge_weight / total)
    wanted = np.flatnonzero(counts)
    key = ia[wanted].astype(np.int64) * n_sv + ib[wanted]  # edges are sorted, so keys are too
    counts = counts[wanted]
    start = np.concatenate([[0], np.cumsum(counts)])
    slot = np.repeat(np.arange(len(wanted)), counts)
    flip = rng.random(len(slot)) < edge_reverse[wanted][slot]
    return _Plan(key, start, a_is_pre[wanted][slot] ^ flip, edge_size[wanted])


class _Placer:
    """Writes sites into the output arrays as the scan finds their contacts."""

    def __init__(
        self,
        world: WorldSpec,
        plan: _Plan,
        row_of_site: np.ndarray,
        rng: np.random.Generator,
    ) -> None:
        self.sv_ids = world.graph.sv_ids
        self.n_sv = len(self.sv_ids)
        self.plan = plan
        self.row = row_of_site
        self.rng = rng
        n = len(row_of_site)
        self.pre = np.zeros((n, 3), dtype=np.int32)
        self.post = np.zeros((n, 3), dtype=np.int32)
        self.ctr = np.zeros((n, 3), dtype=np.float32)
        self.pre_sv = np.zeros(n, dtype=np.uint64)
        self.post_sv = np.zeros(n, dtype=np.uint64)
        self.placed = np.zeros(len(plan.key), dtype=bool)

    def scan(self, block: np.ndarray, origin: np.ndarray, axes: list[tuple[int, int, int]]) -> None:
        """Place the sites of every wanted edge whose contacts are the pairs (v, v + e_axis) of
        ``block`` with v's index along the axis in [lo, hi), for each (axis, lo, hi)."""
        found: list[tuple[np.ndarray, ...]] = []
        for axis, lo, hi in axes:
            first = [slice(None)] * 3
            second = [slice(None)] * 3
            first[axis], second[axis] = slice(lo, hi), slice(lo + 1, hi + 1)
            a, b = block[tuple(first)], block[tuple(second)]
            mask = a != b
            mask &= a != 0
            mask &= b != 0
            if not mask.any():
                continue
            where = np.nonzero(mask)
            ua = np.searchsorted(self.sv_ids, a[where])
            ub = np.searchsorted(self.sv_ids, b[where])
            key = np.minimum(ua, ub).astype(np.int64) * self.n_sv + np.maximum(ua, ub)
            slot = np.minimum(np.searchsorted(self.plan.key, key), len(self.plan.key) - 1)
            hit = self.plan.key[slot] == key if len(self.plan.key) else np.zeros(len(key), bool)
            if not hit.any():
                continue
            lower = np.stack(where, axis=1)[hit]
            lower[:, axis] += lo
            found.append((slot[hit], lower, np.full(int(hit.sum()), axis), (ua < ub)[hit]))
        if found:
            self._place(block, origin, *(np.concatenate(parts) for parts in zip(*found)))

    def _place(
        self,
        block: np.ndarray,
        origin: np.ndarray,
        slot: np.ndarray,
        lower: np.ndarray,
        axis: np.ndarray,
        lower_is_a: np.ndarray,
    ) -> None:
        # contacts in random order within each edge; site k of an edge takes contact k mod count
        order = np.lexsort((self.rng.random(len(slot)), slot))
        slot, lower, axis, lower_is_a = (
            slot[order],
            lower[order],
            axis[order],
            lower_is_a[order],
        )
        slots, first, count = np.unique(slot, return_index=True, return_counts=True)
        if self.placed[slots].any():
            raise RuntimeError("a contact was found in two places of the watershed")
        self.placed[slots] = True
        n_sites = self.plan.start[slots + 1] - self.plan.start[slots]
        group = np.repeat(np.arange(len(slots)), n_sites)
        k = np.arange(len(group)) - np.repeat(np.cumsum(n_sites) - n_sites, n_sites)
        site = self.plan.start[slots][group] + k
        contact = first[group] + k % count[group]

        v = lower[contact]
        step = np.zeros_like(v)
        step[np.arange(len(v)), axis[contact]] = 1
        pre_lower = self.plan.pre_is_a[site] == lower_is_a[contact]
        pre = np.where(pre_lower[:, None], v, v + step)
        post = np.where(pre_lower[:, None], v + step, v)
        ctr = (v + 0.5 * step) + origin
        pre_label = block[tuple(pre.T)]
        post_label = block[tuple(post.T)]
        pre = self._jitter(block, pre, np.where(pre_lower[:, None], -step, step), pre_label)
        post = self._jitter(block, post, np.where(pre_lower[:, None], step, -step), post_label)

        rows = self.row[site]
        self.pre[rows] = pre + origin
        self.post[rows] = post + origin
        self.ctr[rows] = ctr
        self.pre_sv[rows] = pre_label
        self.post_sv[rows] = post_label

    def _jitter(
        self, block: np.ndarray, voxel: np.ndarray, away: np.ndarray, label: np.ndarray
    ) -> np.ndarray:
        """Move a point 0-2 voxels away from the cleft, where that stays in its supervoxel:
        detectors put pre and post points inside the bouton and spine, not on the membrane."""
        depth = self.rng.choice(_DEPTH, size=len(voxel), p=JITTER)
        moved = voxel + depth[:, None] * away
        inside = np.all((moved >= 0) & (moved < block.shape), axis=1)
        ok = np.zeros(len(voxel), dtype=bool)
        ok[inside] = block[tuple(moved[inside].T)] == label[inside]
        return np.where(ok[:, None], moved, voxel)


def synapse_sites(
    world: WorldSpec,
    rng: np.random.Generator,
    target: int,
    second_batch: float = 0.05,
    progress: Callable[[str], None] | None = None,
) -> SynapseSites:
    """``target`` synapses of ``world``; a random ``second_batch`` share goes last in row order."""
    plan = _plan(world, rng, target)
    n = int(plan.start[-1])
    late = rng.random(n) < second_batch
    order = np.concatenate([np.flatnonzero(~late), np.flatnonzero(late)])
    row_of_site = np.empty(n, dtype=np.int64)
    row_of_site[order] = np.arange(n)
    placer = _Placer(world, plan, row_of_site, rng)

    volume = WatershedVolume(world.ws_dir, cache_chunks=1)
    grid = tuple(volume.grid)
    pending: dict[tuple[tuple[int, int, int], int], np.ndarray] = {}
    chunk = np.array(volume.chunk_size)
    offset = np.array(volume.voxel_offset)
    total = int(np.prod(grid))
    for linear, coords in enumerate(np.ndindex(*grid)):
        labels = volume.read_chunk(*coords)
        origin = offset + np.array(coords) * chunk
        placer.scan(labels, origin, [(axis, 0, labels.shape[axis] - 1) for axis in range(3)])
        for axis in range(3):
            if coords[axis] > 0:
                below = tuple(c - (a == axis) for a, c in enumerate(coords))
                previous = pending.pop((below, axis))
                depth = previous.shape[axis]
                head = np.take(labels, range(min(_DEPTH, labels.shape[axis])), axis=axis)
                slab = np.concatenate([previous, head], axis=axis)
                slab_origin = origin.copy()
                slab_origin[axis] -= depth
                placer.scan(slab, slab_origin, [(axis, depth - 1, depth)])
            if coords[axis] < grid[axis] - 1:
                size = labels.shape[axis]
                pending[(coords, axis)] = np.take(
                    labels, range(max(0, size - _DEPTH), size), axis=axis
                )
        if progress is not None and (linear + 1) % 512 == 0:
            progress(f"synapses: scanned {linear + 1:,} of {total:,} chunks")
    if not placer.placed.all():
        raise RuntimeError(
            f"{int((~placer.placed).sum())} contacts were not found in the watershed"
        )

    size = np.exp(
        rng.normal(np.log(SIZE_MEDIAN), SIZE_SIGMA, n)
        + np.repeat(plan.log_size, np.diff(plan.start))
    ).astype(np.float32)
    return SynapseSites(
        pre=placer.pre,
        post=placer.post,
        ctr=placer.ctr,
        size=size[order],
        pre_sv=placer.pre_sv,
        post_sv=placer.post_sv,
        n_first=int((~late).sum()),
    )
