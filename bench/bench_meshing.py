"""Meshing benchmark: from an acknowledged edit to the new root's whole mesh in the client.

For each edit (a merge of two neurons' touching supervoxels, then the split that separates them
again) the clock starts when the edit's answer arrives and stops when cloud-volume's graphene
source has fetched the new root's manifest (verified) and downloaded and decoded every fragment
[target < 5 s]. Before each merge the two neurons' meshes are fetched once, as a proofreader
looking at them would have; the figures after that are the "warm" case. The "cold" case is the
first mesh of a neuron nobody looked at (every L2 node meshed on request).

Usage: python bench/bench_meshing.py [--size medium] [--data-dir DIR] [--database URL] [--edits 10]
The world is built once per data directory and reused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support import loopback_server, opencave_cli  # noqa: E402
from tests.support.demo import DemoWorld, _neuron_pairs  # noqa: E402
from tests.support.volumes import graphene_volume  # noqa: E402


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_s": round(statistics.median(ordered), 3),
        "p90_s": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 3),
        "max_s": round(ordered[-1], 3),
        "n": len(ordered),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="medium")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--database", default=None)
    parser.add_argument("--edits", type=int, default=10)
    args = parser.parse_args()
    name = f"opencave_{args.size}"
    data_dir = Path(args.data_dir or f"/tmp/opencave-bench-{args.size}")
    storage = ["--data-dir", str(data_dir)] + (["--database", args.database] if args.database else [])
    world_dir = data_dir / "worlds" / name
    opencave_cli("demo", "create", name, "--size", args.size, storage=storage)
    token = opencave_cli("token", "create", "admin@localhost", storage=storage)
    world = DemoWorld(world_dir)
    table = f"/segmentation/api/v1/table/{name}"
    results: dict[str, object] = {}
    with loopback_server(storage) as url:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        volume = graphene_volume(url, name, token)

        def root_of(sv: int) -> int:
            r = session.post(url + table + "/roots_binary", data=np.array([sv], dtype="<u8").tobytes())
            r.raise_for_status()
            return int(np.frombuffer(r.content, dtype="<u8")[0])

        def l2_count(node: int) -> int:
            r = session.get(f"{url}{table}/node/{node}/leaves", params={"stop_layer": 2})
            return len(r.json()["leaf_ids"])

        def full_mesh(root: int):
            # cloud-volume merges boundary vertices only for L2 ids; a root's fragments arrive as is
            return volume.mesh.get(root, deduplicate_chunk_boundaries=False)[root]

        pairs = []
        for a, b in _neuron_pairs(world, 400, skip=30):
            roots = (root_of(a), root_of(b))
            if roots[0] != roots[1] and not {r for p in pairs for r in p[2]} & set(roots):
                pairs.append((a, b, roots))
            if len(pairs) == args.edits:
                break

        # cold: first mesh of neurons nobody looked at yet
        cold, cold_sizes = [], []
        for a, _, roots in pairs[: max(1, len(pairs) // 2)]:
            start = time.perf_counter()
            mesh = full_mesh(roots[0])
            cold.append(time.perf_counter() - start)
            cold_sizes.append((l2_count(roots[0]), len(mesh.vertices)))
        results["cold_first_mesh_of_a_neuron"] = _summary(cold)
        print(f"cold first mesh: {results['cold_first_mesh_of_a_neuron']}", flush=True)

        merge_times, split_times, sizes = [], [], []
        for a, b, roots in pairs:
            for root in roots:  # the proofreader has looked at both
                full_mesh(root)
            r = session.post(url + table + "/merge", json=[[a, *world.nm_point(a)], [b, *world.nm_point(b)]])
            assert r.status_code == 200, r.text
            acknowledged = time.perf_counter()
            merged = r.json()["new_root_ids"][0]
            mesh = full_mesh(merged)
            merge_times.append(time.perf_counter() - acknowledged)
            sizes.append((l2_count(merged), len(mesh.vertices)))
            r = session.post(url + table + "/split", json={"sources": [[a, *world.nm_point(a)]], "sinks": [[b, *world.nm_point(b)]]})
            assert r.status_code == 200, r.text
            acknowledged = time.perf_counter()
            for half in r.json()["new_root_ids"]:
                full_mesh(half)
            split_times.append(time.perf_counter() - acknowledged)
            print(f"merge → mesh {merge_times[-1]:.2f} s ({sizes[-1][0]} L2 nodes, {sizes[-1][1]} vertices); split → both meshes {split_times[-1]:.2f} s", flush=True)
        results["merge_to_full_mesh"] = _summary(merge_times)
        results["split_to_both_meshes"] = _summary(split_times)
        results["merged_neuron_l2_nodes_median"] = int(statistics.median(s[0] for s in sizes))
        results["merged_neuron_vertices_median"] = int(statistics.median(s[1] for s in sizes))
        results["cold_neuron_l2_nodes_median"] = int(statistics.median(s[0] for s in cold_sizes))

    record = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
        "command": " ".join(sys.argv),
        "world": {"size": args.size, "supervoxels": int(world.spec.n_supervoxels)},
        "results": results,
    }
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
