"""The initial agglomeration, with realistic errors, and the proofreading history that fixes them.

Errors are false merges (two touching cells joined through one low-affinity contact) and
split-off fragments (a neurite subtree cut from its cell). The history fixes each with the
operation a proofreader would use, interleaved with a few mistakes that are undone, so that
replaying it ends at the true cells. Split points sit a few supervoxels from the false contact
and close to it, so a min-cut in a box around them cuts exactly that contact.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components

from opencave.demo.world.neurons import Neuron
from opencave.demo.world.watershed import Oversegmentation

SPLIT_PADDING = np.array([40, 40, 6])  # voxels around the split points searched by the min-cut
MIN_FRAGMENT = 20  # supervoxels
HISTORY_WEEKS = 8
WORKDAY_SECONDS = 9 * 3600  # the epoch is a Monday 09:00; days run 09:00-18:00, Monday to Friday
USER_IDS = (1, 2, 3)


@dataclass(frozen=True)
class Proofreading:
    initially_active: np.ndarray  # (E,) bool
    history: list[dict[str, Any]]
    false_merges: np.ndarray  # edge indices
    fragments: list[np.ndarray]  # sv indices of each detached subtree


@dataclass(frozen=True)
class _Graph:
    """Supervoxel contacts with the truth, as the error planning needs them."""

    seg: Oversegmentation
    sv_neuron: np.ndarray

    @property
    def a(self) -> np.ndarray:
        return self.seg.edges[:, 0]

    @property
    def b(self) -> np.ndarray:
        return self.seg.edges[:, 1]

    def same(self) -> np.ndarray:
        na, nb = self.sv_neuron[self.a], self.sv_neuron[self.b]
        return (na == nb) & (na > 0)

    def adjacency(self, active: np.ndarray) -> csr_matrix:
        n = len(self.sv_neuron)
        a, b = self.a[active], self.b[active]
        ones = np.ones(2 * len(a), dtype=np.int8)
        return coo_matrix(
            (ones, (np.concatenate([a, b]), np.concatenate([b, a]))), shape=(n, n)
        ).tocsr()

    def point(self, sv: int) -> list[int]:
        return [int(self.seg.sv_ids[sv]), *(int(v) for v in self.seg.sv_point[sv])]


def _connected(adjacency: csr_matrix, members: np.ndarray) -> bool:
    if len(members) == 0:
        return False
    return connected_components(adjacency[members][:, members], directed=False)[0] == 1


def _detach_fragments(
    rng: np.random.Generator,
    graph: _Graph,
    neurons: list[Neuron],
    piece_start: np.ndarray,
    active: np.ndarray,
) -> list[tuple[np.ndarray, int]]:
    """Cut one subtree (>= MIN_FRAGMENT svs, at most half the cell) off about half of the cells.

    Returns (fragment svs, the cut edge a proofreader merges back) and clears the cut edges in
    ``active``. A subtree qualifies only if it and the rest of its cell each stay connected.
    """
    same = graph.same()
    adjacency = graph.adjacency(active)
    target = round(len(neurons) / 2)
    chosen: list[tuple[np.ndarray, int]] = []
    for index in rng.permutation(len(neurons)):
        if len(chosen) == target:
            break
        neuron = neurons[index]
        cell = np.flatnonzero(graph.sv_neuron == neuron.neuron_id)
        local_piece = graph.seg.sv_piece[cell] - piece_start[index]
        for piece in rng.permutation(np.arange(1, len(neuron.pieces))):
            inside = np.isin(local_piece, neuron.subtree(int(piece)))
            fragment, rest = cell[inside], cell[~inside]
            if not MIN_FRAGMENT <= len(fragment) <= len(cell) // 2:
                continue
            if not (_connected(adjacency, fragment) and _connected(adjacency, rest)):
                continue
            in_fragment = np.zeros(len(graph.sv_neuron), dtype=bool)
            in_fragment[fragment] = True
            cut = np.flatnonzero(same & (in_fragment[graph.a] != in_fragment[graph.b]))
            active[cut] = False
            largest = cut[np.argmax(graph.seg.area[cut])]
            chosen.append((fragment, int(largest)))
            break
    return chosen


def _neighbourhood(
    adjacency: csr_matrix, start: int, cell: np.ndarray, max_depth: int
) -> dict[int, tuple[int, int]]:
    """sv -> (depth, parent) for svs of the same cell within ``max_depth`` active edges of ``start``."""
    seen = {start: (0, -1)}
    queue = deque([start])
    while queue:
        current = queue.popleft()
        depth = seen[current][0]
        if depth == max_depth:
            continue
        for other in adjacency.indices[
            adjacency.indptr[current] : adjacency.indptr[current + 1]
        ].tolist():
            if other not in seen and cell[other]:
                seen[other] = (depth + 1, current)
                queue.append(other)
    return seen


def _path(tree: dict[int, tuple[int, int]], sv: int) -> list[int]:
    path = [sv]
    while tree[path[-1]][1] >= 0:
        path.append(tree[path[-1]][1])
    return path


def _split_points(
    rng: np.random.Generator, graph: _Graph, adjacency: csr_matrix, edge: int
) -> tuple[list[int], list[int]] | None:
    """Sources near the false contact on one side, sinks on the other, or None if none fit.

    Prefers supervoxels two or three contacts away; every supervoxel on the way to the contact
    must lie inside the min-cut box so the cut can find the contact.
    """
    seg = graph.seg
    ends = (int(graph.a[edge]), int(graph.b[edge]))
    contact = seg.sv_point[list(ends)].mean(axis=0)
    trees = [
        _neighbourhood(adjacency, end, graph.sv_neuron == graph.sv_neuron[end], 3) for end in ends
    ]

    def candidates(tree: dict[int, tuple[int, int]], depths: tuple[int, ...]) -> list[int]:
        out = []
        for sv, (depth, _) in tree.items():
            offset = np.abs(seg.sv_point[sv] - contact)
            if depth in depths and offset[0] <= 40 and offset[1] <= 40 and offset[2] <= 6:
                out.append(sv)
        return sorted(out)

    for depths in ((2, 3), (1, 2, 3), (0,)):
        pools = [candidates(tree, depths) for tree in trees]
        if not all(pools):
            continue
        for _ in range(20):
            picks = [
                list(rng.choice(pool, size=min(len(pool), int(rng.integers(1, 3))), replace=False))
                for pool in pools
            ]
            points = seg.sv_point[picks[0] + picks[1]]
            lo, hi = points.min(axis=0) - SPLIT_PADDING, points.max(axis=0) + SPLIT_PADDING
            needed = [
                sv for tree, pick in zip(trees, picks) for p in pick for sv in _path(tree, int(p))
            ]
            if np.all(seg.sv_bbox_min[needed] >= lo) and np.all(seg.sv_bbox_max[needed] <= hi):
                return [int(v) for v in picks[0]], [int(v) for v in picks[1]]
    return None


def _false_merges(
    rng: np.random.Generator, graph: _Graph, active: np.ndarray, n_neurons: int
) -> list[tuple[int, list[int], list[int]]]:
    """A matching of touching cells, each pair joined through its largest contact.

    Returns (edge, sources, sinks) per false merge and sets those edges in ``active``.
    """
    na, nb = graph.sv_neuron[graph.a], graph.sv_neuron[graph.b]
    cross = np.flatnonzero((na != nb) & (na > 0) & (nb > 0))
    pair = np.stack([np.minimum(na, nb)[cross], np.maximum(na, nb)[cross]], axis=1)
    order = np.lexsort((cross, -graph.seg.area[cross], pair[:, 1], pair[:, 0]))
    pairs, first = np.unique(pair[order], axis=0, return_index=True)
    largest = cross[order][first]
    adjacency = graph.adjacency(active)
    used: set[int] = set()
    merges = []
    for index in rng.permutation(len(pairs)):
        if len(merges) == round(n_neurons / 3):
            break
        a, b = (int(v) for v in pairs[index])
        if a in used or b in used:
            continue
        points = _split_points(rng, graph, adjacency, int(largest[index]))
        if points is None:
            continue
        used.update((a, b))
        merges.append((int(largest[index]), *points))
    for edge, _, _ in merges:
        active[edge] = True
    return merges


def _wrong_merges(
    rng: np.random.Generator, graph: _Graph, false_edges: list[int], count: int
) -> list[int]:
    """Contacts between different cells (not a falsely merged pair) that a proofreader merges by mistake."""
    na, nb = graph.sv_neuron[graph.a], graph.sv_neuron[graph.b]
    pairs = {(min(na[e], nb[e]), max(na[e], nb[e])) for e in false_edges}
    cross = [
        int(e)
        for e in np.flatnonzero((na != nb) & (na > 0) & (nb > 0))
        if (min(na[e], nb[e]), max(na[e], nb[e])) not in pairs
    ]
    return [int(e) for e in rng.choice(cross, size=min(count, len(cross)), replace=False)]


def _timestamps(rng: np.random.Generator, epoch: datetime, count: int) -> list[str]:
    """Distinct, increasing times within working hours of the weeks after the epoch."""
    seconds = np.sort(rng.choice(HISTORY_WEEKS * 5 * WORKDAY_SECONDS, size=count, replace=False))
    out = []
    for s in seconds.tolist():
        day, second = divmod(s, WORKDAY_SECONDS)
        week, weekday = divmod(day, 5)
        moment = epoch + timedelta(days=7 * week + weekday, seconds=second)
        out.append(moment.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return out


def plan_proofreading(
    rng: np.random.Generator,
    seg: Oversegmentation,
    sv_neuron: np.ndarray,
    neurons: list[Neuron],
    piece_start: np.ndarray,
    epoch: datetime,
) -> Proofreading:
    """Initial edge activity and the history; ``piece_start[i]`` is the global piece id of cell i's soma."""
    graph = _Graph(seg, sv_neuron)
    active = graph.same()
    fragments = _detach_fragments(rng, graph, neurons, piece_start, active)
    false_merges = _false_merges(rng, graph, active, len(neurons))
    false_edges = [edge for edge, _, _ in false_merges]
    wrong = _wrong_merges(
        rng, graph, false_edges, max(1, round(0.05 * (len(fragments) + len(false_merges))))
    )

    def merge(edge: int) -> dict[str, Any]:
        return {
            "kind": "merge",
            "points": [graph.point(int(graph.a[edge])), graph.point(int(graph.b[edge]))],
        }

    blocks: list[list[dict[str, Any]]] = [[merge(edge)] for _, edge in fragments]
    for index, (_, sources, sinks) in enumerate(false_merges):
        split = {
            "kind": "split",
            "sources": [graph.point(s) for s in sources],
            "sinks": [graph.point(s) for s in sinks],
        }
        # the first fix is also undone and redone, which leaves it in place
        blocks.append([split, {"kind": "undo"}, {"kind": "redo"}] if index == 0 else [split])
    blocks.extend([merge(edge), {"kind": "undo"}] for edge in wrong)
    history: list[dict[str, Any]] = []
    for block in (blocks[i] for i in rng.permutation(len(blocks))):
        user = int(rng.choice(USER_IDS))
        start = len(history)
        for offset, op in enumerate(block):
            if op["kind"] in ("undo", "redo"):
                op["target"] = start + offset - 1
            op["user_id"] = user
            history.append(op)
    for op, timestamp in zip(history, _timestamps(rng, epoch, len(history))):
        op["timestamp"] = timestamp
    return Proofreading(
        initially_active=active,
        history=[_ordered(op) for op in history],
        false_merges=np.array(false_edges, dtype=np.int64),
        fragments=[fragment for fragment, _ in fragments],
    )


def _ordered(op: dict[str, Any]) -> dict[str, Any]:
    keys = ("kind", "points", "sources", "sinks", "target", "timestamp", "user_id")
    return {key: op[key] for key in keys if key in op}
