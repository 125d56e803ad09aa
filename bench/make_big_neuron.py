"""Grow one object of at least N L2 nodes by merging touching neurons into the largest one.

The demo worlds' largest cells have about a thousand L2 nodes; the skeleton benchmark needs an
object of 10,000. This merges, in-process on an existing data directory, the object with the
most L2 nodes with the neighbours it touches (largest first) until it is big enough, as
proofreading a very large cell would. It changes that data directory's graph: use a copy.

Usage: python bench/make_big_neuron.py --data-dir DIR --table opencave_large [--l2 10000]
Prints the final root id and its L2 count.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opencave.services.chunkedgraph import edits  # noqa: E402
from opencave.services.chunkedgraph.service import GraphService  # noqa: E402
from opencave.storage.sql import create_store_engine  # noqa: E402


def l2_counts(index) -> dict[int, int]:
    """L2 nodes alive now per root node index."""
    l2 = np.flatnonzero(index.node_layer.view() == 2)
    l2 = l2[index.exists_at(l2, index.seq)]
    roots, counts = np.unique(index.roots_at(l2, index.seq), return_counts=True)
    return dict(zip(roots.tolist(), counts.tolist()))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--database", default=None)
    parser.add_argument("--table", default="opencave_large")
    parser.add_argument("--l2", type=int, default=10_000)
    args = parser.parse_args()
    url = args.database or f"sqlite:///{Path(args.data_dir) / 'opencave.db'}"
    graphs = GraphService(create_store_engine(url))
    handle = graphs.graph(args.table)
    index = handle.index
    counts = l2_counts(index)
    target = max(counts, key=counts.get)
    size = counts[target]
    with np.load(handle.world_dir / "graph.npz") as graph:
        edges = graph["edges"]
    edge_idx = index.sv_index(edges.ravel()).reshape(-1, 2)
    merges = 0
    start = time.perf_counter()
    while size < args.l2:
        roots = index.root_now[edge_idx]
        touching = (roots[:, 0] == target) ^ (roots[:, 1] == target)
        if not touching.any():
            print(f"no more neighbours at {size} L2 nodes", file=sys.stderr)
            return 1
        others = np.where(roots[touching, 0] == target, roots[touching, 1], roots[touching, 0])
        sizes = np.array([counts.get(int(o), 1) for o in others])
        pick = int(np.argmax(sizes))
        a, b = (int(x) for x in edges[np.flatnonzero(touching)[pick]])
        graphs.commit(handle, lambda ix, a=a, b=b: edits.plan_merge(ix, a, b, {}), "bench")
        merges += 1
        index = handle.index
        new_target = int(index.root_now[index.sv_index(np.array([a], np.uint64))[0]])
        leaves = index.leaf_indices(np.array([new_target]), stop_layer=2)
        size = int(leaves.size)
        counts[new_target] = size
        target = new_target
        if merges % 20 == 0:
            print(f"{merges} merges: {size} L2 nodes ({time.perf_counter() - start:.0f} s)", flush=True)
    root_id = int(index.ids_of(np.array([target]))[0])
    print(f"root {root_id}: {size} L2 nodes after {merges} merges")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
