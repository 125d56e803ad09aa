"""Skeleton service benchmark: cold and cached skeletons of a big neuron, and bulk generation.

Usage: python bench/bench_skeleton.py --data-dir DIR [--database URL] [--root ROOT_ID]
                                      [--datastack NAME] [--repeat 3] [--bulk 100]

``DIR`` is an existing opencave data directory (e.g. one where ``bench/make_big_neuron.py`` grew
a 10,000-L2-node object); without ``--root`` the root with the most L2 nodes is used. The
benchmark deletes the stored skeletons of the roots it measures (so they are cold) and makes
new ones: use a copy of a data directory you care about.

* floor: the same skeletonization in-process, no HTTP (L2 graph + L2 attributes + soma lookup +
  TEASAR + radii), with L2 attributes already in the L2 cache;
* cold: ``GET async/get_skeleton/4/{root}/flatdict`` (what caveclient's ``get_skeleton`` calls)
  on a server that has never seen the root (restarted, index warmed on another root);
* cached: the same URL again, and Neuroglancer's ``precomputed/skeleton/{root}``;
* bulk: ``bulk/get_cached_skeletons`` with ``generate_missing`` for N cold roots, and
  ``bulk/gen_skeletons`` for N others followed by polling ``exists`` → neurons/s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support import loopback_server, opencave_cli, timed  # noqa: E402
from opencave.config import resolve_settings  # noqa: E402
from opencave.runtime import Runtime  # noqa: E402
from opencave.storage.tables import skeletons  # noqa: E402
from opencave.wire import skeletons as wire  # noqa: E402


def roots_by_size(runtime: Runtime, datastack: str) -> tuple[np.ndarray, np.ndarray]:
    """Current roots of a datastack's graph and their L2 counts, largest first."""
    index = runtime.skeletons.graph_of(datastack).index
    l2 = np.flatnonzero(index.node_layer.view() == 2)
    l2 = l2[index.exists_at(l2, index.seq)]
    roots, counts = np.unique(index.roots_at(l2, index.seq), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return index.ids_of(roots[order]).astype(np.int64), counts[order]


def pick(runtime: Runtime, root: int | None, datastack: str | None) -> tuple[str, int, int, np.ndarray]:
    """(datastack, root, its L2 count, other roots by size) for the benchmark."""
    best = None
    for name in [datastack] if datastack else runtime.info.datastack_names():
        try:
            ids, counts = roots_by_size(runtime, name)
        except Exception:  # a datastack without a chunkedgraph
            continue
        if root is not None:
            hit = np.flatnonzero(ids == root)
            if hit.size:
                return name, root, int(counts[hit[0]]), ids[ids != root]
            continue
        if best is None or counts[0] > best[2]:
            best = (name, int(ids[0]), int(counts[0]), ids[1:])
    if best is None:
        raise SystemExit(f"root {root} not found in any datastack" if root else "no datastack with a chunkedgraph")
    return best


def forget(runtime: Runtime, datastack: str, roots: list[int]) -> None:
    with runtime.engine.begin() as conn:
        for start in range(0, len(roots), 500):
            conn.execute(skeletons.delete().where(skeletons.c.datastack == datastack, skeletons.c.root_id.in_(roots[start : start + 500])))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--database", default=None)
    parser.add_argument("--root", type=int, default=None)
    parser.add_argument("--datastack", default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bulk", type=int, default=100)
    args = parser.parse_args()
    storage = ["--data-dir", args.data_dir] + (["--database", args.database] if args.database else [])
    runtime = Runtime.open(resolve_settings(args.data_dir, args.database))
    service = runtime.skeletons
    datastack, root, n_l2, others = pick(runtime, args.root, args.datastack)
    handle = service.graph_of(datastack)
    print(f"datastack {datastack}, root {root}: {n_l2:,} L2 nodes", flush=True)

    # L2 attributes must exist for a fair measurement (an edit's new L2 nodes get them in the
    # background; a freshly grown object may still lack some)
    start = time.perf_counter()
    l2_ids = np.sort(handle.index.ids_of(handle.index.leaf_indices(handle.index.node_index([root]), stop_layer=2)))
    runtime.l2cache.attributes(handle, l2_ids, ["rep_coord_nm", "size_nm3"])
    print(f"L2 attributes present/computed in {time.perf_counter() - start:.2f} s", flush=True)

    floor_times = timed(lambda: service.make(handle, datastack, root), args.repeat + 1)[1:]
    sk = service.make(handle, datastack, root)
    print(f"floor (in-process skeletonization): p50 {1000 * statistics.median(floor_times):.0f} ms; "
          f"{sk.n_vertices} vertices, cable {sk.path_length() / 1000:.0f} µm", flush=True)

    token = opencave_cli("token", "create", "admin@localhost", storage=storage)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    base = f"/skeletoncache/api/v1/{datastack}"
    warm_root = int(others[-1])
    cold, cached, precomputed = [], [], []
    for _ in range(args.repeat):
        forget(runtime, datastack, [root, warm_root])
        with loopback_server(storage) as url:
            assert session.get(f"{url}{base}/async/get_skeleton/4/{warm_root}/flatdict").ok  # loads the graph index
            start = time.perf_counter()
            r = session.get(f"{url}{base}/async/get_skeleton/4/{root}/flatdict")
            cold.append(time.perf_counter() - start)
            assert r.ok, r.text
            assert len(wire.decode_flatdict(r.content)["vertices"]) == sk.n_vertices
            session.get(f"{url}{base}/precomputed/skeleton/{root}")
            cached += timed(lambda url=url: session.get(f"{url}{base}/async/get_skeleton/4/{root}/flatdict").raise_for_status(), 20)
            precomputed += timed(lambda url=url: session.get(f"{url}{base}/precomputed/skeleton/{root}").raise_for_status(), 20)

    # bulk: cold roots (the next largest), through get_cached_skeletons and gen_skeletons
    n = args.bulk
    sync_roots = [int(r) for r in others[:n]]
    async_roots = [int(r) for r in others[n : 2 * n]]
    forget(runtime, datastack, sync_roots + async_roots)
    with loopback_server(storage) as url:
        assert session.get(f"{url}{base}/precomputed/skeleton/info").ok  # loads the graph index
        start = time.perf_counter()
        r = session.post(f"{url}{base}/bulk/get_cached_skeletons/4/flatdict", json={"root_ids": sync_roots, "generate_missing": True, "verbose_level": 0})
        sync_s = time.perf_counter() - start
        assert r.ok and len(r.json()) == len(sync_roots), r.text[:300]
        start = time.perf_counter()
        estimate = session.post(f"{url}{base}/bulk/gen_skeletons", json={"root_ids": async_roots, "skeleton_version": 4}).json()
        while True:
            state = session.post(f"{url}{base}/precomputed/skeleton/exists", json={"root_ids": async_roots, "skeleton_version": 4}).json()
            if all(state.values()):
                break
            time.sleep(0.05)
        async_s = time.perf_counter() - start
    l2_bulk = int(sum(roots_by_size(runtime, datastack)[1][1 : 2 * n + 1]))

    ms = lambda xs: 1000 * statistics.median(xs)  # noqa: E731
    print()
    print("| figure | result | target | floor | ratio to floor |")
    print("|---|---|---|---|---|")
    print(f"| cold skeleton, {n_l2:,} L2 nodes, `async/get_skeleton/4/…/flatdict`, p50 of {len(cold)} | {ms(cold):.0f} ms | < 500 ms | {ms(floor_times):.0f} ms | {statistics.median(cold) / statistics.median(floor_times):.2f} |")
    print(f"| cached, same URL, p50 of {len(cached)} | {ms(cached):.1f} ms | < 20 ms | — | — |")
    print(f"| cached, Neuroglancer `precomputed/skeleton/{{root}}`, p50 of {len(precomputed)} | {ms(precomputed):.1f} ms | < 20 ms | — | — |")
    print(f"| bulk cold, {len(sync_roots)} neurons, `get_cached_skeletons` + generate_missing | {len(sync_roots) / sync_s:.1f} neurons/s ({sync_s:.2f} s) | report | — | — |")
    print(f"| bulk cold, {len(async_roots)} neurons, `gen_skeletons` until `exists` (estimate {estimate} s) | {len(async_roots) / async_s:.1f} neurons/s ({async_s:.2f} s) | report | — | — |")
    print(f"\nbulk roots: {l2_bulk:,} L2 nodes in all; skeleton of the big root: {sk.n_vertices} vertices")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
