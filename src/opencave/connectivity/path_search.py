"""Directed simple paths of a few hops between two sets of roots.

Two exact searches give the same answer:

* the breadth-first one grows every partial path one hop at a time, all at once with numpy,
  and keeps a partial path only while its last root can still reach a target in the hops left;
  the distance to the nearest target comes from one breadth-first search from the targets on
  the reversed graph (``scipy.sparse.csgraph.dijkstra``, unweighted, ``min_only``). Paths come
  out level by level in n_hops order, so it stops once ``max_paths`` are found and it is known
  whether more exist.
* when the partial paths would exceed ``FRONTIER_LIMIT`` (hubs make their number explode), an
  ordered depth-first search takes over. It lists paths in lexicographic order over the
  connections >= w, pruned by "reaches a target in exactly the hops left" (sparse
  matrix-vector products), never more than ``max_paths`` + 1 at a time, and binary-searches
  the weight w that separates the paths of the answer from the rest. Its work is bounded by
  the answer's size (times the log of the number of distinct weights), not by the number of
  paths in the graph.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse as sp
from scipy.sparse import csgraph

from opencave.connectivity.frames import (
    POST,
    PRE,
    answer_attrs,
    as_roots,
    check_min_synapses,
    check_synapses,
    connections,
    distinct,
)

MAX_HOPS = 5


def _check_count(value, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {bounds}, got {value!r}")
    return int(value)


def _empty() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "path": pd.Series(dtype=object),
            "n_hops": pd.Series(dtype="int64"),
            "weights": pd.Series(dtype=object),
            "bottleneck": pd.Series(dtype="int64"),
        }
    )


FRONTIER_LIMIT = 2_000_000


def _graph(conns: pd.DataFrame) -> tuple[np.ndarray, sp.csr_array]:
    """(root ids ascending, CSR matrix of n_synapses over their positions): position order is
    root order, so walking neighbours in CSR order walks paths in lexicographic order."""
    nodes, codes = np.unique(np.concatenate([conns[PRE].to_numpy(), conns[POST].to_numpy()]), return_inverse=True)
    n_conns, n_nodes = len(conns), len(nodes)
    graph = sp.csr_array(
        (conns["n_synapses"].to_numpy(), (codes[:n_conns], codes[n_conns:])), shape=(n_nodes, n_nodes), dtype=np.int64
    )
    graph.sort_indices()
    return nodes, graph


def _breadth_first(
    graph: sp.csr_array, starts: np.ndarray, is_target: np.ndarray, max_hops: int, max_paths: int
) -> tuple[list[tuple[np.ndarray, np.ndarray]], bool] | None:
    """Paths per level as (walks, weights) matrices and whether more exist; None past the limit."""
    to_target = csgraph.dijkstra(
        graph.T, directed=True, indices=np.flatnonzero(is_target), unweighted=True, limit=max_hops, min_only=True
    )
    walks = starts[to_target[starts] <= max_hops][:, None]
    weights = np.zeros((len(walks), 0), dtype=np.int64)
    found: list[tuple[np.ndarray, np.ndarray]] = []
    n_found = 0
    for hop in range(1, max_hops + 1):
        last = walks[:, -1]
        first_edge = graph.indptr[last]
        n_out = graph.indptr[last + 1] - first_edge
        if n_out.sum() > FRONTIER_LIMIT:
            return None
        parent = np.repeat(np.arange(len(walks)), n_out)
        edge = first_edge[parent] + np.arange(parent.size) - np.repeat(np.cumsum(n_out) - n_out, n_out)
        step = graph.indices[edge]
        keep = (to_target[step] <= max_hops - hop) & (walks[parent] != step[:, None]).all(axis=1)
        parent, step = parent[keep], step[keep]
        walks = np.column_stack([walks[parent], step])
        weights = np.column_stack([weights[parent], graph.data[edge[keep]]])
        arrived = is_target[step]
        if arrived.any():
            if n_found >= max_paths:
                return found, True
            found.append(_in_order(walks[arrived], weights[arrived]))
            n_found += int(arrived.sum())
        if n_found > max_paths:
            return found, True
        if len(walks) == 0:
            break
    return found, False


def _in_order(walks: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One level's paths by bottleneck descending, then path ascending."""
    keys = tuple(walks[:, c] for c in range(walks.shape[1] - 1, -1, -1)) + (-weights.min(axis=1),)
    order = np.lexsort(keys)
    return walks[order], weights[order]


class _Enough(Exception):
    """The walk has listed as many paths as it was asked for."""


def _as_arrays(paths: list[list[int]], weights: list[list[int]], hops: int) -> tuple[np.ndarray, np.ndarray]:
    return np.array(paths, dtype=np.int64).reshape(-1, hops + 1), np.array(weights, dtype=np.int64).reshape(-1, hops)


def _depth_first(
    graph: sp.csr_array, starts: np.ndarray, is_target: np.ndarray, max_hops: int, max_paths: int
) -> tuple[list[tuple[np.ndarray, np.ndarray]], bool]:
    """The same answer as ``_breadth_first``, with work bounded by max_paths.

    For each number of hops, a binary search over the weights finds the largest w such that at
    least ``needed`` paths have bottleneck >= w (each probe lists at most ``needed`` paths);
    the answer is then every path with bottleneck above w, ordered, followed by the first paths
    with bottleneck w in lexicographic order.
    """
    rows = np.repeat(np.arange(graph.shape[0]), np.diff(graph.indptr))
    reach_cache: dict[int, list[np.ndarray]] = {}

    def reach(w: int) -> list[np.ndarray]:
        """reach(w)[j][v]: v reaches a target in exactly j hops over connections >= w."""
        if w not in reach_cache:
            strong = graph.data >= w
            sub = sp.csr_array((np.ones(int(strong.sum())), (rows[strong], graph.indices[strong])), shape=graph.shape)
            levels, current = [is_target], is_target.astype(np.float64)
            for _ in range(max_hops):
                current = (sub @ current > 0).astype(np.float64)
                levels.append(current > 0)
            reach_cache[w] = levels
        return reach_cache[w]

    ordered_starts = np.sort(starts)

    def walk(hops: int, w: int, exact: bool, limit: int) -> tuple[list[list[int]], list[list[int]]]:
        """Up to ``limit`` paths of ``hops`` hops over connections >= w (with bottleneck w when
        ``exact``), in lexicographic order: starts and CSR neighbours are visited in root order."""
        levels = reach(w)
        paths: list[list[int]] = []
        weights: list[list[int]] = []

        def extend(path: list[int], hop_weights: list[int]) -> None:
            u = path[-1]
            left = hops - len(hop_weights) - 1
            lo, hi = graph.indptr[u], graph.indptr[u + 1]
            near, strength = graph.indices[lo:hi], graph.data[lo:hi]
            ok = (strength >= w) & levels[left][near]
            for v, x in zip(near[ok].tolist(), strength[ok].tolist()):
                if v in path:
                    continue
                if left > 0:
                    extend(path + [v], hop_weights + [x])
                elif not exact or x == w or min(hop_weights, default=x) == w:
                    paths.append(path + [v])
                    weights.append(hop_weights + [x])
                    if len(paths) >= limit:
                        raise _Enough

        try:
            for start in ordered_starts[levels[hops][ordered_starts]].tolist():
                extend([start], [])
        except _Enough:
            pass
        return paths, weights

    strengths = np.unique(graph.data)[::-1].tolist()
    found: list[tuple[np.ndarray, np.ndarray]] = []
    total = 0
    for hops in range(1, max_hops + 1):
        needed = max_paths + 1 - total  # one more than fits tells that the answer is truncated
        listed: dict[int, tuple[list[list[int]], list[list[int]]]] = {}

        def at_least(i: int) -> tuple[list[list[int]], list[list[int]]]:
            """Up to ``needed`` paths with bottleneck >= strengths[i]."""
            if i not in listed:
                listed[i] = walk(hops, strengths[i], False, needed)
            return listed[i]

        last = len(strengths) - 1
        if len(at_least(last)[0]) < needed:  # every path of this length fits
            paths, weights = at_least(last)
            if paths:
                found.append(_in_order(*_as_arrays(paths, weights, hops)))
                total += len(paths)
            continue
        lo, hi = 0, last
        while lo < hi:
            mid = (lo + hi) // 2
            if len(at_least(mid)[0]) >= needed:
                hi = mid
            else:
                lo = mid + 1
        above = at_least(lo - 1) if lo > 0 else ([], [])
        tied = walk(hops, strengths[lo], True, needed - len(above[0]))
        above_walks, above_weights = _in_order(*_as_arrays(*above, hops))
        tied_walks, tied_weights = _as_arrays(*tied, hops)
        found.append((np.concatenate([above_walks, tied_walks]), np.concatenate([above_weights, tied_weights])))
        return found, True
    return found, False


def paths(
    synapses: pd.DataFrame,
    sources,
    targets,
    max_hops: int = 3,
    min_synapses: int = 1,
    max_paths: int = 1000,
) -> pd.DataFrame:
    """Directed paths of 1..max_hops connections from a root in ``sources`` to one in ``targets``.

    No root repeats on a path; every connection has at least ``min_synapses`` synapses.
    Columns ``path`` (roots, source first), ``n_hops``, ``weights`` (n_synapses of each hop),
    ``bottleneck`` (their minimum); ordered by n_hops ascending, bottleneck descending, path
    ascending; the first ``max_paths`` only, with ``attrs["truncated"]`` True when more exist.
    """
    check_synapses(synapses)
    min_synapses = check_min_synapses(min_synapses)
    max_hops = _check_count(max_hops, "max_hops", 1, MAX_HOPS)
    max_paths = _check_count(max_paths, "max_paths", 1)
    sources = distinct(as_roots(sources, "sources"))
    targets = distinct(as_roots(targets, "targets"))
    nodes, graph = _graph(connections(synapses, min_synapses))
    node_index = pd.Index(nodes)
    starts = node_index.get_indexer(sources)
    ends = node_index.get_indexer(targets)
    starts, ends = starts[starts >= 0], ends[ends >= 0]
    found: list[tuple[np.ndarray, np.ndarray]] = []
    truncated = False
    if len(starts) and len(ends):
        is_target = np.zeros(len(nodes), dtype=bool)
        is_target[ends] = True
        answer = _breadth_first(graph, starts, is_target, max_hops, max_paths)
        found, truncated = answer if answer is not None else _depth_first(graph, starts, is_target, max_hops, max_paths)
    if not found:
        result = _empty()
    else:
        paths_list = [row for walks, _ in found for row in nodes[walks].tolist()][:max_paths]
        weights_list = [row for _, weights in found for row in weights.tolist()][:max_paths]
        result = pd.DataFrame(
            {
                "path": pd.Series(paths_list, dtype=object),
                "n_hops": np.array([len(w) for w in weights_list], dtype=np.int64),
                "weights": pd.Series(weights_list, dtype=object),
                "bottleneck": np.array([min(w) for w in weights_list], dtype=np.int64),
            }
        )
    result.attrs = answer_attrs(synapses, min_synapses, truncated)
    return result
