"""Chunkedgraph benchmarks through opencave's client against ``opencave serve`` over loopback.

Figures (issue targets in brackets), each with the in-process floor it is compared to:
- get_roots of 1,000,000 supervoxel ids, now and at a past timestamp [>= 2,000,000 ids/s];
  floor: numpy lookup of the same ids in sorted (supervoxel, root) arrays.
- merge and split p50 latency [< 100 ms]; floor: the same edit planned and committed
  in-process (GraphService.commit on the same store).
- edits/s with 4 concurrent editors on different objects.
- get_leaves of a root with >= 10,000 supervoxels [< 50 ms]; floor: the in-memory index walk.

Usage: python bench/bench_chunkedgraph.py [--size large] [--data-dir DIR] [--database URL]
The world is built once per data directory (large: a few minutes) and reused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opencave import CAVEclient  # noqa: E402
from opencave.services.chunkedgraph import edits  # noqa: E402
from opencave.services.chunkedgraph.service import GraphService  # noqa: E402
from opencave.storage.sql import create_store_engine  # noqa: E402
from tests.support.demo import DemoWorld, _neuron_pairs  # noqa: E402
from bench.support import get_roots_figures, loopback_server, opencave_cli, timed  # noqa: E402




def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="large")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--database", default=None)
    parser.add_argument("--edits", type=int, default=40)
    args = parser.parse_args()
    name = f"opencave_{args.size}"
    data_dir = Path(args.data_dir or f"/tmp/opencave-bench-{args.size}")
    storage = ["--data-dir", str(data_dir)] + (["--database", args.database] if args.database else [])
    database_url = args.database or f"sqlite:///{data_dir / 'opencave.db'}"
    world_dir = data_dir / "worlds" / name

    start = time.perf_counter()
    if not (world_dir / "history.json").exists() or "opencave_" not in opencave_cli("datastack", "list", storage=storage):
        print(f"building the {args.size} world …", flush=True)
    opencave_cli("demo", "create", name, "--size", args.size, storage=storage)
    print(f"world ready ({time.perf_counter() - start:.1f} s)", flush=True)
    token = opencave_cli("token", "create", "admin@localhost", storage=storage)
    results: dict[str, object] = {}
    with loopback_server(storage) as url:
        client = CAVEclient(name, server_address=url, auth_token=token)
        cg = client.chunkedgraph
        world = DemoWorld(world_dir)
        sv_ids = world.graph.sv_ids
        rng = np.random.default_rng(0)
        query = rng.choice(sv_ids, 1_000_000)
        past = world.op_times[len(world.op_times) // 2] + dt.timedelta(seconds=1)
        cg.get_roots(query[:1000])  # warm the index

        # -- get_roots ---------------------------------------------------------------------
        for label, ts in (("now", None), ("past", past)):
            figures = results[f"get_roots_{label}"] = get_roots_figures(cg, sv_ids, query, ts)
            print(f"get_roots 1M ({label}): {figures['ids_per_s']:,} ids/s (floor {figures['floor_ids_per_s']:,} ids/s, ratio {figures['ratio_to_floor']:.3f})", flush=True)

        # -- get_leaves of a big root --------------------------------------------------------
        roots_now = cg.get_roots(sv_ids)
        values, counts = np.unique(roots_now, return_counts=True)
        big = int(values[counts.argmax()])
        leaves = cg.get_leaves(big)
        graphs = GraphService(create_store_engine(database_url))
        handle = graphs.graph(name)
        index = handle.index
        big_idx = index.node_index([big])
        floor = timed(lambda: index.ids_of(index.leaf_indices(big_idx)), 20)
        client_times = timed(lambda: cg.get_leaves(big), 20)
        results["get_leaves"] = {
            "supervoxels": int(leaves.size),
            "p50_ms": round(1000 * statistics.median(client_times), 2),
            "floor_p50_ms": round(1000 * statistics.median(floor), 3),
            "ratio_to_floor": round(statistics.median(client_times) / statistics.median(floor), 1),
        }
        print(f"get_leaves of a root with {leaves.size:,} supervoxels: {results['get_leaves']}", flush=True)

        # -- merge / split latency -----------------------------------------------------------
        pairs = _neuron_pairs(world, 2 * args.edits + 8)
        http_pairs, local_pairs, concurrent_pairs = pairs[: args.edits], pairs[args.edits : args.edits + 4], pairs[args.edits + 4 :]
        merge_t, split_t = [], []
        for a, b in http_pairs:
            nm_a, nm_b = world.nm_point(a), world.nm_point(b)
            start = time.perf_counter()
            result = cg.do_merge([a, b], [[x / r for x, r in zip(nm_a, (4, 4, 40))], [x / r for x, r in zip(nm_b, (4, 4, 40))]])
            merge_t.append(time.perf_counter() - start)
            merged = result["new_root_ids"][0]
            start = time.perf_counter()
            cg.execute_split([nm_a], [nm_b], merged, [a], [b])
            split_t.append(time.perf_counter() - start)
        local_merge, local_split = [], []
        for a, b in local_pairs * 3:
            start = time.perf_counter()
            op = graphs.commit(handle, lambda ix, a=a, b=b: edits.plan_merge(ix, a, b, {}), "1")
            local_merge.append(time.perf_counter() - start)
            pa, pb = world.voxel_of(a), world.voxel_of(b)
            start = time.perf_counter()
            graphs.commit(
                handle,
                lambda ix, a=a, b=b: edits.plan_split(ix, edits.find_split(ix, np.array([a], np.uint64), np.array([b], np.uint64), pa[None], pb[None]), {}),
                "1",
            )
            local_split.append(time.perf_counter() - start)
            del op
        for key, times, floor in (("merge", merge_t, local_merge), ("split", split_t, local_split)):
            p50 = statistics.median(times)
            results[f"{key}_latency"] = {
                "p50_ms": round(1000 * p50, 1),
                "p90_ms": round(1000 * float(np.percentile(times, 90)), 1),
                "n": len(times),
                "floor_p50_ms": round(1000 * statistics.median(floor), 1),
                "ratio_to_floor": round(p50 / statistics.median(floor), 2),
            }
            print(f"{key}: {results[f'{key}_latency']}", flush=True)

        # -- concurrent editors ------------------------------------------------------------------
        done = [0]
        lock = threading.Lock()
        stop_at = time.time() + 15

        def editor(a: int, b: int) -> None:
            own = CAVEclient(name, server_address=url, auth_token=token).chunkedgraph
            while time.time() < stop_at:
                op = own.do_merge([a, b], [[0, 0, 0], [0, 0, 0]])["operation_id"]
                own.undo_operation(op)
                with lock:
                    done[0] += 2

        threads = [threading.Thread(target=editor, args=pair) for pair in concurrent_pairs[:4]]
        begin = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rate = done[0] / (time.time() - begin)
        results["concurrent_edits"] = {"editors": len(threads), "edits_per_s": round(rate, 1)}
        print(f"4 concurrent editors: {rate:.1f} edits/s", flush=True)

    record = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
        "command": " ".join(sys.argv),
        "world": {"size": args.size, "supervoxels": int(world.spec.n_supervoxels), "history_ops": len(world.history)},
        "results": results,
    }
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
