"""Materialization benchmarks through opencave's client against ``opencave serve`` over loopback.

Figures (issue targets in brackets); the floor of each is DuckDB reading the same frozen
Parquet files in-process (the same files the server reads):
- one neuron's input synapses (filter on post_pt_root_id), p50 over many neurons [< 20 ms];
- the MICrONS tutorial workload: all synapses among the proofread neurons, then their
  neuron x neuron adjacency matrix [< 2 s in total];
- the whole synapse table into a DataFrame [>= 5,000,000 rows/s];
- a live-live query at a timestamp >= 1,000 edits after the latest version, against the same
  query on that version [within 3x].

Usage: python bench/bench_materialize.py [--size large] [--data-dir DIR]
Uses the data directory of bench_chunkedgraph.py (the demo world is built and filled once).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

import duckdb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opencave import CAVEclient  # noqa: E402
from tests.support.demo import DemoWorld, _neuron_pairs  # noqa: E402
from bench.support import loopback_server, opencave_cli, print_record  # noqa: E402




def adjacency(frame):
    """The neuron x neuron synapse-count matrix of a synapse frame."""
    counts = frame.groupby(["pre_pt_root_id", "post_pt_root_id"]).size()
    return counts.unstack(fill_value=0)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="large")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--neurons", type=int, default=30, help="neurons for the input-synapse latency")
    parser.add_argument("--proofread", type=int, default=2000, help="proofread neurons in the MICrONS workload")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each whole-table figure (median reported)")
    parser.add_argument("--edits", type=int, default=1000, help="edits after the latest version for the live query")
    args = parser.parse_args()
    name = f"opencave_{args.size}"
    data_dir = Path(args.data_dir or f"/tmp/opencave-bench-{args.size}")
    storage = ["--data-dir", str(data_dir)]
    world_dir = data_dir / "worlds" / name
    start = time.perf_counter()
    opencave_cli("demo", "create", name, "--size", args.size, storage=storage)
    print(f"datastack ready ({time.perf_counter() - start:.1f} s)", flush=True)
    token = opencave_cli("token", "create", "admin@localhost", storage=storage)
    results: dict[str, object] = {}
    with loopback_server(storage) as url:
        client = CAVEclient(name, server_address=url, auth_token=token)
        mat = client.materialize
        version = mat.most_recent_version()
        files = Path(data_dir / "versions" / name / f"v{version}")
        main_file = str(files / "synapses.parquet")
        by_post = str(files / "synapses.by_post_pt_root_id.parquet")
        floor_db = duckdb.connect()
        floor_db.execute("SET GLOBAL parquet_metadata_cache = true")  # as the server runs DuckDB
        n_rows = mat.get_annotation_count("synapses")
        results["table"] = {"synapse_rows": n_rows, "version": version}
        print(f"version {version}: {n_rows:,} synapses", flush=True)

        # -- one neuron's inputs -------------------------------------------------------------------
        status = mat.query_table("proofreading_status")
        proofread = status.pt_root_id.unique()
        rng = np.random.default_rng(0)
        sample = rng.choice(proofread, min(args.neurons, len(proofread)), replace=False)
        mat.query_table("synapses", filter_equal_dict={"post_pt_root_id": int(sample[0])})  # warm caches
        client_t, split_t, floor_t, sizes = [], [], [], []
        for root in sample:
            start = time.perf_counter()
            frame = mat.query_table("synapses", filter_equal_dict={"post_pt_root_id": int(root)})
            client_t.append(time.perf_counter() - start)
            sizes.append(len(frame))
            start = time.perf_counter()
            mat.query_table("synapses", filter_equal_dict={"post_pt_root_id": int(root)}, split_positions=True)
            split_t.append(time.perf_counter() - start)
            start = time.perf_counter()
            floor_db.sql(f"SELECT * FROM read_parquet('{by_post}') WHERE post_pt_root_id = {int(root)} ORDER BY id").to_arrow_table().to_pandas(split_blocks=True)
            floor_t.append(time.perf_counter() - start)
        p50, split_p50, floor_p50 = statistics.median(client_t), statistics.median(split_t), statistics.median(floor_t)
        results["neuron_inputs"] = {
            "neurons": len(sample),
            "median_rows": int(statistics.median(sizes)),
            "p50_ms": round(1000 * p50, 1),
            "p90_ms": round(1000 * float(np.percentile(client_t, 90)), 1),
            "split_positions_p50_ms": round(1000 * split_p50, 1),
            "floor_p50_ms": round(1000 * floor_p50, 1),
            "ratio_to_floor": round(p50 / floor_p50, 2),
            "split_ratio_to_floor": round(split_p50 / floor_p50, 2),
        }
        print(f"one neuron's inputs: {results['neuron_inputs']}", flush=True)

        # -- the MICrONS workload --------------------------------------------------------------------
        ids = [int(v) for v in proofread[: args.proofread]]
        start = time.perf_counter()
        among = mat.query_table("synapses", filter_in_dict={"pre_pt_root_id": ids, "post_pt_root_id": ids}, split_positions=True)
        query_s = time.perf_counter() - start
        start = time.perf_counter()
        matrix = adjacency(among)
        pivot_s = time.perf_counter() - start
        id_list = ", ".join(map(str, ids))
        start = time.perf_counter()
        floor_frame = floor_db.sql(
            f"SELECT * FROM read_parquet('{main_file}') WHERE pre_pt_root_id IN ({id_list}) AND post_pt_root_id IN ({id_list})"
        ).to_arrow_table().to_pandas(split_blocks=True)
        adjacency(floor_frame)
        floor_s = time.perf_counter() - start
        assert len(floor_frame) == len(among)
        results["microns_workload"] = {
            "proofread_neurons": len(ids),
            "synapses": len(among),
            "query_s": round(query_s, 3),
            "adjacency_s": round(pivot_s, 3),
            "total_s": round(query_s + pivot_s, 3),
            "matrix_shape": list(matrix.shape),
            "floor_s": round(floor_s, 3),
            "ratio_to_floor": round((query_s + pivot_s) / floor_s, 2),
        }
        print(f"MICrONS workload: {results['microns_workload']}", flush=True)

        # -- the whole table ------------------------------------------------------------------------
        # The first run of a process touches ~1 GB of fresh memory, which a VM backs slowly and
        # erratically: it is reported apart ("cold_s"); the figure is the median of --repeat runs after it.
        whole = {}
        for label, split in (("split_positions", True), ("position_arrays", False)):
            runs = []
            for _ in range(1 + (args.repeat if split else 0)):
                start = time.perf_counter()
                frame = mat.query_table("synapses", split_positions=split)
                runs.append(time.perf_counter() - start)
                assert len(frame) == n_rows
                del frame
            seconds = statistics.median(runs[1:] or runs)
            whole[label] = {"s": round(seconds, 2), "cold_s": round(runs[0], 2), "runs_s": [round(r, 2) for r in runs[1:]], "rows_per_s": round(n_rows / seconds)}
        floor_runs = []
        for _ in range(1 + args.repeat):
            start = time.perf_counter()
            floor_db.sql(f"SELECT * FROM read_parquet('{main_file}')").to_arrow_table().to_pandas(split_blocks=True, self_destruct=True)
            floor_runs.append(time.perf_counter() - start)
        floor_s = statistics.median(floor_runs[1:])
        whole["floor_rows_per_s"] = round(n_rows / floor_s)
        whole["ratio_to_floor"] = round(whole["split_positions"]["rows_per_s"] / whole["floor_rows_per_s"], 2)
        results["whole_table"] = whole
        print(f"whole table: {whole}", flush=True)

        # -- live-live after >= 1,000 edits -------------------------------------------------------------
        cg = client.chunkedgraph
        world = DemoWorld(world_dir)
        pairs = _neuron_pairs(world, args.edits // 2 + 8)
        edits = 0
        start = time.perf_counter()
        for a, b in pairs:
            if edits >= args.edits:
                break
            nm_a, nm_b = world.nm_point(a), world.nm_point(b)
            merged = cg.do_merge([a, b], [[x / r for x, r in zip(nm_a, (4, 4, 40))], [x / r for x, r in zip(nm_b, (4, 4, 40))]])["new_root_ids"][0]
            cg.execute_split([nm_a], [nm_b], merged, [a], [b])
            edits += 2
        print(f"{edits} edits in {time.perf_counter() - start:.0f} s", flush=True)
        now = dt.datetime.now(dt.timezone.utc)
        live_t, versioned_t = [], []
        for root in sample[:10]:
            root_now = int(cg.get_latest_roots(int(root))[-1])
            root_then = int(root)
            start = time.perf_counter()
            live = mat.live_live_query("synapses", now, filter_equal_dict={"synapses": {"post_pt_root_id": root_now}})
            live_t.append(time.perf_counter() - start)
            start = time.perf_counter()
            frozen = mat.query_table("synapses", filter_equal_dict={"post_pt_root_id": root_then}, materialization_version=version)
            versioned_t.append(time.perf_counter() - start)
            del live, frozen
        ratio = statistics.median(live_t) / statistics.median(versioned_t)
        results["live_live"] = {
            "edits_after_version": edits,  # at least: earlier benchmark edits may add more
            "live_p50_ms": round(1000 * statistics.median(live_t), 1),
            "versioned_p50_ms": round(1000 * statistics.median(versioned_t), 1),
            "ratio_live_to_versioned": round(ratio, 2),
            "floor_p50_ms": results["neuron_inputs"]["floor_p50_ms"],
        }
        print(f"live-live: {results['live_live']}", flush=True)

    print_record(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
