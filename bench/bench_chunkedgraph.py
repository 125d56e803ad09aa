"""Chunkedgraph benchmarks through opencave's client against ``opencave serve`` over loopback.

Figures (issue targets in brackets), each with the in-process floor it is compared to:
- get_roots of 1,000,000 supervoxel ids, now and at a past timestamp [>= 2,000,000 ids/s];
  floor: numpy lookup of the same ids in sorted (supervoxel, root) arrays.
- merge and split p50 latency [< 100 ms]; floor: the same edit planned and committed
  in-process (GraphService.commit on the same store).
- edits/s with 4 concurrent editors on different objects.
- get_leaves of a root with >= 10,000 supervoxels [< 3 ms]; floor: the in-memory index walk.
  opencave's client gets raw ids; the JSON answer caveclient gets is timed beside it.
- merge and split p50 [< 50 ms] and p90, with the server's post-edit work (L2 attributes,
  meshes) running as it does for users; the floors are measured once the server is idle.
- at scale (``chunkedgraph_scale.py``), for every demo size up to ``--size``: bytes per
  supervoxel of the in-process index and of the store (SQLite, and PostgreSQL for the sizes in
  ``--postgres-sizes``), the store's growth per edit, index load time and in-process
  merge/split latency.

Usage: python bench/bench_chunkedgraph.py [--size large] [--data-dir DIR] [--database URL]
           [--scale-sizes small,medium] [--postgres-sizes small,medium]
The world is built once per data directory (large: 10-15 minutes) and reused; the smaller
worlds of the scale figures are built once in /tmp/opencave-bench-scale-<size>.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opencave import CAVEclient  # noqa: E402
from opencave.services.chunkedgraph import edits  # noqa: E402
from opencave.services.chunkedgraph.service import GraphService  # noqa: E402
from opencave.storage.sql import create_store_engine  # noqa: E402
from tests.support.demo import DemoWorld, _neuron_pairs  # noqa: E402
from bench.support import get_roots_figures, opencave_cli, served, timed, wait_idle  # noqa: E402
from bench import chunkedgraph_scale  # noqa: E402
from tests.support.postgres import create_database, postgres_server  # noqa: E402




def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="large")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--database", default=None)
    parser.add_argument("--edits", type=int, default=40)
    parser.add_argument("--scale-sizes", default="small,medium", help="smaller demo sizes measured at scale (comma-separated; empty: none)")
    parser.add_argument("--postgres-sizes", default="small,medium", help="demo sizes also measured on a private PostgreSQL")
    parser.add_argument("--scale-edits", type=int, default=10, help="merge + split pairs per size at scale")
    parser.add_argument("--scale-only", action="store_true", help="only the figures at scale of --scale-sizes")
    args = parser.parse_args()
    name = f"opencave_{args.size}"
    data_dir = Path(args.data_dir or f"/tmp/opencave-bench-{args.size}")
    storage = ["--data-dir", str(data_dir)] + (["--database", args.database] if args.database else [])
    database_url = args.database or f"sqlite:///{data_dir / 'opencave.db'}"
    world_dir = data_dir / "worlds" / name

    if args.scale_only:
        record = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "command": " ".join(sys.argv)}
        record["scale"] = scale_figures(args, name, data_dir, database_url, world_dir, include_main=False)
        print(json.dumps(record, indent=2))
        return 0
    load_at_start = os.getloadavg()[0]
    start = time.perf_counter()
    if not (world_dir / "history.json").exists() or "opencave_" not in opencave_cli("datastack", "list", storage=storage):
        print(f"building the {args.size} world …", flush=True)
    opencave_cli("demo", "create", name, "--size", args.size, storage=storage)
    print(f"world ready ({time.perf_counter() - start:.1f} s)", flush=True)
    token = opencave_cli("token", "create", "admin@localhost", storage=storage)
    results: dict[str, object] = {}
    with served(storage) as (url, server_pid):
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
        wait_idle(server_pid)
        floor = timed(lambda: index.ids_of(index.leaf_indices(big_idx)), 50)
        client_times = timed(lambda: cg.get_leaves(big), 50)
        leaves_url = cg._url("leaves_from_root", root_id=big)
        as_json = timed(lambda: np.int64(cg.session.get(leaves_url).json()["leaf_ids"]), 50)  # what caveclient does
        health = timed(lambda: cg.session.get(url + "/health").content, 50)
        results["get_leaves"] = {
            "supervoxels": int(leaves.size),
            "p50_ms": round(1000 * statistics.median(client_times), 2),
            "json_p50_ms": round(1000 * statistics.median(as_json), 2),
            "health_request_p50_ms": round(1000 * statistics.median(health), 2),
            "floor_p50_ms": round(1000 * statistics.median(floor), 3),
            "ratio_to_floor": round(statistics.median(client_times) / statistics.median(floor), 1),
        }
        print(f"get_leaves of a root with {leaves.size:,} supervoxels: {results['get_leaves']}", flush=True)

        # -- merge / split latency -----------------------------------------------------------
        pairs = _neuron_pairs(world, 2 * args.edits + 8)
        http_pairs, local_pairs, concurrent_pairs = pairs[: args.edits], pairs[args.edits : args.edits + 4], pairs[args.edits + 4 :]
        merge_t, split_t = [], []
        server = psutil.Process(server_pid)
        server_cpu = sum(server.cpu_times()[:2])
        for a, b in http_pairs:
            nm_a, nm_b = world.nm_point(a), world.nm_point(b)
            start = time.perf_counter()
            result = cg.do_merge([a, b], [[x / r for x, r in zip(nm_a, (4, 4, 40))], [x / r for x, r in zip(nm_b, (4, 4, 40))]])
            merge_t.append(time.perf_counter() - start)
            merged = result["new_root_ids"][0]
            start = time.perf_counter()
            cg.execute_split([nm_a], [nm_b], merged, [a], [b])
            split_t.append(time.perf_counter() - start)
        wait_idle(server_pid)
        server_cpu_per_edit = (sum(server.cpu_times()[:2]) - server_cpu) / (2 * len(http_pairs))  # post-edit work included  # the floors are measured without the server's post-edit work
        local_merge, local_split, local_cpu = [], [], []
        for a, b in local_pairs * 3:
            cpu = time.thread_time()
            start = time.perf_counter()
            op = graphs.commit(handle, lambda ix, a=a, b=b: edits.plan_merge(ix, a, b, {}), "1")
            local_merge.append(time.perf_counter() - start)
            local_cpu.append(time.thread_time() - cpu)
            pa, pb = world.voxel_of(a), world.voxel_of(b)
            start = time.perf_counter()
            graphs.commit(
                handle,
                lambda ix, a=a, b=b: edits.plan_split(ix, edits.find_split(ix, np.array([a], np.uint64), np.array([b], np.uint64), pa[None], pb[None]), {}),
                "1",
            )
            local_split.append(time.perf_counter() - start)
            local_cpu.append(time.thread_time() - cpu - local_cpu[-1])
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
        results["edit_cpu"] = {
            "server_cpu_ms_per_edit": round(1000 * server_cpu_per_edit, 1),
            "floor_thread_cpu_p50_ms": round(1000 * statistics.median(local_cpu), 1),
        }
        print(f"edit CPU: {results['edit_cpu']}", flush=True)

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

    results["scale"] = scale_figures(args, name, data_dir, database_url, world_dir)

    record = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
        "load_average_1min": [round(load_at_start, 1), round(os.getloadavg()[0], 1)],  # start, end: others' work shares the cores
        "command": " ".join(sys.argv),
        "world": {"size": args.size, "supervoxels": int(world.spec.n_supervoxels), "history_ops": len(world.history)},
        "results": results,
    }
    print(json.dumps(record, indent=2))
    return 0


def scale_figures(
    args: argparse.Namespace, name: str, data_dir: Path, database_url: str, world_dir: Path, include_main: bool = True
) -> list[dict]:
    """Index and store bytes per supervoxel and in-process edit latency for each demo size (the
    benchmark's own world last, measured once its server has stopped), on SQLite and, for
    ``--postgres-sizes``, on a private PostgreSQL."""
    figures = []
    sizes = [s for s in args.scale_sizes.split(",") if s and s != args.size]
    pg_sizes = {s for s in args.postgres_sizes.split(",") if s}

    def run(size: str, url: str, table: str, world: Path) -> None:
        start = time.perf_counter()
        row = {"size": size, **chunkedgraph_scale.measure(url, table, world, args.scale_edits)}
        figures.append(row)
        print(f"scale {size} on {row['store']} ({time.perf_counter() - start:.0f} s): {json.dumps(row)}", flush=True)

    for size in sizes:
        scale_dir = Path(f"/tmp/opencave-bench-scale-{size}")
        table = f"opencave_{size}"
        scale_storage = ["--data-dir", str(scale_dir)]
        if not (scale_dir / "worlds" / table / "history.json").exists():
            print(f"building the {size} world for the scale figures …", flush=True)
            opencave_cli("demo", "create", table, "--size", size, "--no-annotations", storage=scale_storage)
        run(size, f"sqlite:///{scale_dir / 'opencave.db'}", table, scale_dir / "worlds" / table)
    if include_main:
        run(args.size, database_url, name, world_dir)
    wanted = [s for s in sizes + ([args.size] if include_main else []) if s in pg_sizes]
    if wanted:
        with postgres_server() as admin:
            for size in wanted:
                url = create_database(admin)
                table = f"opencave_{size}"
                with tempfile.TemporaryDirectory(prefix=f"opencave-bench-pg-{size}-") as pg_dir:
                    pg_storage = ["--data-dir", pg_dir, "--database", url]
                    opencave_cli("demo", "create", table, "--size", size, "--no-annotations", storage=pg_storage)
                    run(size, url, table, Path(pg_dir) / "worlds" / table)
    return figures


if __name__ == "__main__":
    raise SystemExit(main())
