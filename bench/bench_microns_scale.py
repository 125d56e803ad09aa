"""Queries on a MICrONS-scale version (>= 300 million synapses) through opencave's client against
``opencave serve``, with DuckDB in-process on the same files as the floor.

Figures (targets in brackets):
- one neuron's inputs (``filter_equal_dict={"post_pt_root_id": r}``), p50/p90 over a random
  sample of neurons [p50 < 50 ms]; floors: DuckDB on the post-root copy, and pyarrow reading the
  copy's row groups that a footer index (parsed once, as the server keeps it) locates;
- the MICrONS workload: all synapses among the 2,000 proofread neurons (``filter_in_dict`` on
  both root columns, positions split) and their adjacency matrix [< 3 s]; floor: DuckDB on the
  id-sorted file and on the pre-root copy (the faster counts);
- the server's peak resident memory over the run (VmHWM of the process) [< 8 GiB].

The version is written first by ``bench/make_microns_version.py`` into the same data directory.

Usage: python bench/bench_microns_scale.py [--data-dir /tmp/opencave-microns] [--neurons 30]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import psutil
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_materialize import adjacency  # noqa: E402
from bench.support import opencave_cli, print_record, served  # noqa: E402
from opencave import CAVEclient  # noqa: E402

GIB = 1 << 30


def peak_rss(pid: int) -> int:
    """Peak resident bytes (VmHWM) of process ``pid`` and its children, summed."""
    total = 0
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def timed_once(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


class FooterIndex:
    """A copy's row groups located by their root-id range (min/max statistics of the footer)."""

    def __init__(self, path: str, column: str) -> None:
        self.path, self.column = path, column
        self.metadata = pq.ParquetFile(path).metadata
        position = self.metadata.schema.names.index(column)
        stats = [self.metadata.row_group(g).column(position).statistics for g in range(self.metadata.num_row_groups)]
        self.lows = np.array([s.min for s in stats], dtype=np.int64)
        self.highs = np.array([s.max for s in stats], dtype=np.int64)

    def rows(self, root: int):
        groups = list(range(np.searchsorted(self.highs, root, "left"), np.searchsorted(self.lows, root, "right")))
        table = pq.ParquetFile(self.path, metadata=self.metadata).read_row_groups(groups, use_threads=False)
        return table.filter(pc.equal(table[self.column], root)).to_pandas(split_blocks=True)


def neuron_inputs(mat, floor_db, by_post: str, sample: list[int]) -> dict:
    """One neuron's inputs through the client, with DuckDB on the post-root copy and with pyarrow
    reading the copy's row groups found by a footer index."""
    start = time.perf_counter()
    index = FooterIndex(by_post, "post_pt_root_id")
    index_s = time.perf_counter() - start
    first_s, _ = timed_once(lambda: mat.query_table("synapses", filter_equal_dict={"post_pt_root_id": sample[0]}))
    client_t, floor_t, direct_t, sizes = [], [], [], []
    for root in sample:
        seconds, frame = timed_once(lambda: mat.query_table("synapses", filter_equal_dict={"post_pt_root_id": root}))
        client_t.append(seconds)
        sizes.append(len(frame))
        seconds, floor = timed_once(
            lambda: floor_db.sql(f"SELECT * FROM read_parquet('{by_post}') WHERE post_pt_root_id = {root} ORDER BY id")
            .to_arrow_table()
            .to_pandas(split_blocks=True)
        )
        floor_t.append(seconds)
        assert len(floor) == len(frame), (root, len(floor), len(frame))
        seconds, direct = timed_once(lambda: index.rows(root))
        direct_t.append(seconds)
        assert len(direct) == len(frame)
    p50, floor_p50, direct_p50 = statistics.median(client_t), statistics.median(floor_t), statistics.median(direct_t)
    return {
        "neurons": len(sample),
        "median_rows": int(statistics.median(sizes)),
        "rows_range": [min(sizes), max(sizes)],
        "first_query_ms": round(1000 * first_s, 1),
        "p50_ms": round(1000 * p50, 1),
        "p90_ms": round(1000 * float(np.percentile(client_t, 90)), 1),
        "floor_p50_ms": round(1000 * floor_p50, 1),
        "floor_p90_ms": round(1000 * float(np.percentile(floor_t, 90)), 1),
        "ratio_to_floor": round(p50 / floor_p50, 2),
        "direct_floor_p50_ms": round(1000 * direct_p50, 1),
        "direct_floor_p90_ms": round(1000 * float(np.percentile(direct_t, 90)), 1),
        "direct_floor_index_s": round(index_s, 2),
        "ratio_to_direct_floor": round(p50 / direct_p50, 2),
        "target_p50_ms": 50,
        "met": p50 < 0.050,
    }


def cpu_s(pid: int | None = None) -> float:
    """CPU seconds used so far by process ``pid`` (its threads included), or by this process."""
    if pid is not None:
        times = psutil.Process(pid).cpu_times()
        return times.user + times.system
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def workload(mat, floor_db, files: dict[str, str], ids: list[int], runs: int, pid: int) -> dict:
    """The synapses among ``ids`` and their adjacency matrix, through the client and the floor.

    Wall time depends on what else the machine runs; the CPU seconds of the server (and of this
    process for the in-process floor) compare the work done whatever the load."""
    client_runs, server_cpu = [], []
    for _ in range(runs):
        before = cpu_s(pid)
        query_s, among = timed_once(
            lambda: mat.query_table("synapses", filter_in_dict={"pre_pt_root_id": ids, "post_pt_root_id": ids}, split_positions=True)
        )
        server_cpu.append(cpu_s(pid) - before)
        pivot_s, matrix = timed_once(lambda: adjacency(among))
        client_runs.append((query_s, pivot_s))
        print(f"  workload run: query {query_s:.2f} s, adjacency {pivot_s:.3f} s, {len(among):,} synapses", flush=True)
    id_list = ", ".join(map(str, ids))
    floors, floor_cpu = {}, {}
    for label, path in files.items():
        seconds, cpu = [], []
        for _ in range(runs):
            before = cpu_s()
            total_s, frame = timed_once(
                lambda: adjacency(
                    floor_db.sql(f"SELECT * FROM read_parquet('{path}') WHERE pre_pt_root_id IN ({id_list}) AND post_pt_root_id IN ({id_list})")
                    .to_arrow_table()
                    .to_pandas(split_blocks=True)
                )
            )
            seconds.append(total_s)
            cpu.append(cpu_s() - before)
        floors[label] = round(min(seconds), 3)
        floor_cpu[label] = round(min(cpu), 2)
        print(f"  floor on {label}: {seconds}", flush=True)
    best_query, best_pivot = min(client_runs, key=sum)
    total = best_query + best_pivot
    floor = min(floors.values())
    return {
        "proofread_neurons": len(ids),
        "synapses": len(among),
        "matrix_shape": list(matrix.shape),
        "runs_s": [round(sum(r), 3) for r in client_runs],
        "query_s": round(best_query, 3),
        "adjacency_s": round(best_pivot, 3),
        "total_s": round(total, 3),
        "floor_s": floors,
        "ratio_to_floor": round(total / floor, 2),
        "server_query_cpu_s": [round(c, 2) for c in server_cpu],
        "floor_cpu_s": floor_cpu,
        "cpu_ratio_to_floor": round(min(server_cpu) / min(floor_cpu.values()), 2),
        "target_s": 3,
        "met": total < 3,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="/tmp/opencave-microns")
    parser.add_argument("--datastack", default="microns_synthetic")
    parser.add_argument("--neurons", type=int, default=30, help="neurons for the input-synapse latency")
    parser.add_argument("--proofread", type=int, default=2000, help="neurons in the MICrONS workload")
    parser.add_argument("--runs", type=int, default=3, help="runs of the workload (the best is the figure; all are printed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-workload", action="store_true")
    args = parser.parse_args()
    storage = ["--data-dir", args.data_dir]
    token = opencave_cli("token", "create", "admin@localhost", storage=storage)
    results: dict[str, object] = {}
    with served(storage, settle=True) as (url, pid):
        results["server_rss_at_start_mib"] = round(psutil.Process(pid).memory_info().rss / 2**20)
        client = CAVEclient(args.datastack, server_address=url, auth_token=token)
        mat = client.materialize
        version = mat.most_recent_version()
        directory = Path(args.data_dir) / "versions" / args.datastack / f"v{version}"
        main_file = str(directory / "synapses.parquet")
        by_post = str(directory / "synapses.by_post_pt_root_id.parquet")
        by_pre = str(directory / "synapses.by_pre_pt_root_id.parquet")
        floor_db = duckdb.connect()
        floor_db.execute("SET GLOBAL parquet_metadata_cache = true")  # as the server runs DuckDB
        n_rows = mat.get_annotation_count("synapses")
        results["table"] = {"synapse_rows": n_rows, "version": version, "bytes": sum(os.stat(p).st_size for p in (main_file, by_pre))}
        print(f"version {version}: {n_rows:,} synapses", flush=True)

        neurons = mat.query_table("nucleus_detection", select_columns=["pt_root_id"]).pt_root_id.to_numpy()
        rng = np.random.default_rng(args.seed)
        sample = [int(r) for r in rng.choice(neurons, min(args.neurons, len(neurons)), replace=False)]
        results["neuron_inputs"] = neuron_inputs(mat, floor_db, by_post, sample)
        print(f"one neuron's inputs: {results['neuron_inputs']}", flush=True)
        results["server_peak_rss_after_inputs_mib"] = round(peak_rss(pid) / 2**20)

        if not args.skip_workload:
            proofread = mat.query_table("proofreading_status").pt_root_id.unique()
            ids = [int(v) for v in proofread[: args.proofread]]
            results["microns_workload"] = workload(mat, floor_db, {"main file": main_file, "pre-root copy": by_pre}, ids, args.runs, pid)
            print(f"MICrONS workload: {results['microns_workload']}", flush=True)
        peak = peak_rss(pid)
        results["server_peak_rss"] = {"mib": round(peak / 2**20), "target_gib": 8, "met": peak < 8 * GIB}
    print_record(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
