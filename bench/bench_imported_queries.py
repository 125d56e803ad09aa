"""Queries on an imported version against the same queries on the version opencave materialized.

The demo's latest version is exported (``opencave export --format cave-csv``, the CAVE static
export layout) and imported as a version of another datastack (``opencave import version``);
then the materialization benchmark's queries run on both, interleaved, through opencave's
client over loopback: one neuron's inputs (p50), the MICrONS workload (synapses among proofread
neurons and their adjacency matrix), the whole synapse table. The figure is the ratio
imported / materialized (target <= 1.2); the floor is DuckDB on the materialized files.

    python bench/bench_imported_queries.py [--size medium] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import duckdb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support import loopback_server, opencave_cli  # noqa: E402
from opencave import CAVEclient  # noqa: E402


def median_ms(fn, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return 1000 * statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="medium")
    parser.add_argument("--data-dir")
    parser.add_argument("--neurons", type=int, default=30)
    parser.add_argument("--proofread", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    name = f"opencave_{args.size}"
    data_dir = Path(args.data_dir or f"/tmp/opencave-bench-{args.size}")
    storage = ["--data-dir", str(data_dir)]
    if name not in opencave_cli("datastack", "list", storage=storage):
        opencave_cli("demo", "create", name, "--size", args.size, storage=storage)
    versions = opencave_cli("materialize", "list", name, storage=storage)
    version = max(int(line.split()[0]) for line in versions.splitlines()[1:] if line.split() and line.split()[0].isdigit())
    copy = f"{name}_imported"
    export = data_dir / "bench-export"
    if copy not in opencave_cli("datastack", "list", storage=storage):
        shutil.rmtree(export, ignore_errors=True)
        start = time.perf_counter()
        opencave_cli("export", name, "--version", str(version), "--format", "cave-csv", str(export), storage=storage)
        exported = time.perf_counter() - start
        start = time.perf_counter()
        opencave_cli("import", "version", copy, str(export), storage=storage)
        print(f"exported version {version} in {exported:.1f} s, imported it in {time.perf_counter() - start:.1f} s", flush=True)
        shutil.rmtree(export, ignore_errors=True)
    token = opencave_cli("token", "create", "admin@localhost", storage=storage)
    with loopback_server(storage) as url:
        made = CAVEclient(name, server_address=url, auth_token=token).materialize
        imported = CAVEclient(copy, server_address=url, auth_token=token).materialize
        files = data_dir / "versions" / name / f"v{version}"
        floor = duckdb.connect()
        floor.execute("SET GLOBAL parquet_metadata_cache = true")
        proofread = made.query_table("proofreading_status", materialization_version=version).pt_root_id.unique()
        sample = np.random.default_rng(0).choice(proofread, min(args.neurons, len(proofread)), replace=False)
        for mat, v in ((made, version), (imported, version)):
            mat.query_table("synapses", filter_equal_dict={"post_pt_root_id": int(sample[0])}, materialization_version=v)
        times: dict[str, list[float]] = {"made": [], "imported": [], "floor": []}
        for root in sample:  # interleaved, so both see the same machine
            for label, mat in (("made", made), ("imported", imported)):
                start = time.perf_counter()
                mat.query_table("synapses", filter_equal_dict={"post_pt_root_id": int(root)}, materialization_version=version)
                times[label].append(time.perf_counter() - start)
            start = time.perf_counter()
            floor.sql(f"SELECT * FROM read_parquet('{files / 'synapses.by_post_pt_root_id.parquet'}') WHERE post_pt_root_id = {int(root)} ORDER BY id").to_arrow_table().to_pandas()
            times["floor"].append(time.perf_counter() - start)
        p50 = {k: 1000 * statistics.median(v) for k, v in times.items()}
        print(
            f"one neuron's inputs, p50 of {len(sample)}: materialized {p50['made']:.1f} ms, imported {p50['imported']:.1f} ms, "
            f"floor {p50['floor']:.1f} ms; imported/materialized {p50['imported'] / p50['made']:.2f}",
            flush=True,
        )
        ids = [int(v) for v in proofread[: args.proofread]]
        among = {"pre_pt_root_id": ids, "post_pt_root_id": ids}
        workload = {}
        for label, mat in (("made", made), ("imported", imported), ("made", made), ("imported", imported)):
            ms = median_ms(lambda: mat.query_table("synapses", filter_in_dict=among, split_positions=True, materialization_version=version), args.repeat)
            workload.setdefault(label, []).append(ms)
        w = {k: min(v) for k, v in workload.items()}
        print(f"MICrONS workload query: materialized {w['made']:.0f} ms, imported {w['imported']:.0f} ms; imported/materialized {w['imported'] / w['made']:.2f}", flush=True)
        whole = {}
        for label, mat in (("made", made), ("imported", imported), ("made", made), ("imported", imported)):
            ms = median_ms(lambda: mat.query_table("synapses", split_positions=True, materialization_version=version), args.repeat)
            whole.setdefault(label, []).append(ms)
        h = {k: min(v) for k, v in whole.items()}
        print(f"whole synapse table: materialized {h['made'] / 1000:.2f} s, imported {h['imported'] / 1000:.2f} s; imported/materialized {h['imported'] / h['made']:.2f}", flush=True)


if __name__ == "__main__":
    main()
