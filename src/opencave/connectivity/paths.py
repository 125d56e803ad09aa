"""Directed simple paths of a few hops between two sets of roots.

The search grows every partial path one hop at a time, all at once with numpy, and keeps a
partial path only while its last root can still reach a target in the hops left: the distance
to the nearest target comes from one breadth-first search from the targets on the reversed graph
(``scipy.sparse.csgraph.dijkstra``, unweighted, ``min_only``). Paths come out level by level in
n_hops order, so the search stops as soon as ``max_paths`` are found and it is known whether
more exist.
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


def _level_order(walks: np.ndarray, bottleneck: np.ndarray) -> np.ndarray:
    """Bottleneck descending, then the path (root ids) lexicographically ascending."""
    keys = tuple(walks[:, c] for c in range(walks.shape[1] - 1, -1, -1)) + (-bottleneck,)
    return np.lexsort(keys)


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
    conns = connections(synapses, min_synapses)
    codes, nodes = pd.factorize(np.concatenate([conns[PRE].to_numpy(), conns[POST].to_numpy()]))
    n_conns, n_nodes = len(conns), len(nodes)
    graph = sp.csr_array(
        (conns["n_synapses"].to_numpy(), (codes[:n_conns], codes[n_conns:])), shape=(n_nodes, n_nodes), dtype=np.int64
    )
    graph.sort_indices()
    node_index = pd.Index(nodes)
    starts = node_index.get_indexer(sources)
    ends = node_index.get_indexer(targets)
    starts, ends = starts[starts >= 0], ends[ends >= 0]
    found: list[tuple[np.ndarray, np.ndarray]] = []
    n_found, truncated = 0, False
    if len(starts) and len(ends):
        is_target = np.zeros(n_nodes, dtype=bool)
        is_target[ends] = True
        to_target = csgraph.dijkstra(graph.T, directed=True, indices=ends, unweighted=True, limit=max_hops, min_only=True)
        walks = starts[to_target[starts] <= max_hops][:, None]
        weights = np.zeros((len(walks), 0), dtype=np.int64)
        for hop in range(1, max_hops + 1):
            last = walks[:, -1]
            first_edge = graph.indptr[last]
            n_out = graph.indptr[last + 1] - first_edge
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
                    truncated = True
                    break
                found.append((walks[arrived], weights[arrived]))
                n_found += int(arrived.sum())
            if n_found > max_paths:
                truncated = True
                break
            if len(walks) == 0:
                break
    if not found:
        result = _empty()
    else:
        path_rows, weight_rows = [], []
        for level_walks, level_weights in found:
            roots = nodes[level_walks].astype(np.int64)
            order = _level_order(roots, level_weights.min(axis=1))[:max_paths]
            path_rows.append(roots[order])
            weight_rows.append(level_weights[order])
        paths_list = [row for level in path_rows for row in level.tolist()][:max_paths]
        weights_list = [row for level in weight_rows for row in level.tolist()][:max_paths]
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
