"""Shortest paths through an object's level-2 graph (for ``find_path``)."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import shortest_path

from opencave.errors import BadRequest

from . import queries
from .index import GraphIndex


def level2_path(index: GraphIndex, root_id: int, ends: np.ndarray) -> np.ndarray:
    """L2 ids on a shortest path (fewest L2 steps) from ``ends[0]`` to ``ends[1]``."""
    pairs = queries.level2_graph(index, root_id, None)
    nodes = np.unique(np.concatenate((pairs.ravel(), ends.astype(np.uint64))))
    a, b = np.searchsorted(nodes, pairs[:, 0]), np.searchsorted(nodes, pairs[:, 1])
    graph = coo_matrix((np.ones(a.size), (a, b)), shape=(nodes.size, nodes.size)).tocsr()
    start, stop = np.searchsorted(nodes, ends[0]), np.searchsorted(nodes, ends[1])
    _, predecessors = shortest_path(graph, directed=False, unweighted=True, indices=start, return_predecessors=True)
    if start != stop and predecessors[stop] < 0:
        raise BadRequest("The two points are not connected inside the object.", code="no_path")
    path = [stop]
    while path[-1] != start:
        path.append(predecessors[path[-1]])
    return nodes[np.array(path[::-1])]
