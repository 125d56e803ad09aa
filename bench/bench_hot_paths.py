"""Hot paths on the large world, measured side by side in one run.

- One neuron's inputs (``query_table("synapses", filter_equal_dict={"post_pt_root_id": r})``)
  through opencave's client against ``opencave serve`` [p50 < 8 ms, and below the PostgreSQL
  peer], beside:
  - DuckDB in-process on the version's clustered copy (the floor), Arrow → pandas;
  - PostgreSQL with a btree index on ``post_pt_root_id``, queried in-process — the stack CAVE's
    MaterializationEngine uses — through ADBC (Arrow → pandas) and through psycopg (rows →
    pandas). The version's synapse file is loaded into a private PostgreSQL cluster first.
  Each system asks for all the neurons in turn, and the systems take turns round after
  round, so all see the same machine load.
- ``get_leaves`` of the largest root through the client [p50 < 3 ms], beside a ``/health``
  request (what any request costs on this machine) and the in-process index walk.

Usage: python bench/bench_hot_paths.py [--size large] [--data-dir DIR] [--neurons 30] [--rounds 5]
The world is built once per data directory and reused (bench_materialize.py uses the same one).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import adbc_driver_postgresql.dbapi as adbc
import duckdb
import numpy as np
import pandas as pd
import psycopg
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support import demo_store, print_record, served, timed, wait_idle  # noqa: E402
from opencave import CAVEclient  # noqa: E402
from opencave.services.chunkedgraph.service import GraphService  # noqa: E402
from opencave.storage.sql import create_store_engine  # noqa: E402
from tests.support.demo import DemoWorld  # noqa: E402
from tests.support.postgres import create_database, postgres_server  # noqa: E402


def load_postgres(url: str, parquet_file: Path) -> None:
    """The version's synapse table in PostgreSQL with a btree index on post_pt_root_id."""
    with adbc.connect(url) as conn, conn.cursor() as cursor:
        source = pq.ParquetFile(parquet_file)
        cursor.adbc_ingest("synapses", source.iter_batches(batch_size=262_144), mode="create")
        cursor.execute("CREATE INDEX synapses_post ON synapses (post_pt_root_id)")
        cursor.execute("ANALYZE synapses")
        conn.commit()


def p50_ms(values: list[float]) -> float:
    return round(1000 * statistics.median(values), 2)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="large")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--neurons", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    name, storage, token = demo_store(args.size, args.data_dir)
    data_dir = Path(storage[1])
    results: dict[str, object] = {}
    with postgres_server() as admin_url, served(storage, settle=True) as (url, server_pid):
        client = CAVEclient(name, server_address=url, auth_token=token)
        mat = client.materialize
        version = mat.most_recent_version()
        files = data_dir / "versions" / name / f"v{version}"
        by_post = files / "synapses.by_post_pt_root_id.parquet"
        database = create_database(admin_url)
        start = time.perf_counter()
        load_postgres(database, files / "synapses.parquet")
        results["postgres_load_s"] = round(time.perf_counter() - start, 1)
        print(f"PostgreSQL peer loaded in {results['postgres_load_s']} s", flush=True)

        proofread = mat.query_table("proofreading_status").pt_root_id.unique()
        sample = [int(r) for r in np.random.default_rng(0).choice(proofread, min(args.neurons, len(proofread)), replace=False)]
        duck = duckdb.connect()
        duck.execute("SET GLOBAL parquet_metadata_cache = true")
        duck_sql = f"SELECT * FROM read_parquet('{by_post}') WHERE post_pt_root_id = {{root}} ORDER BY id"
        pg_adbc = adbc.connect(database)
        pg_rows = psycopg.connect(database, autocommit=True)

        def by_client(root: int) -> int:
            return len(mat.query_table("synapses", filter_equal_dict={"post_pt_root_id": root}))

        def by_client_split(root: int) -> int:
            return len(mat.query_table("synapses", filter_equal_dict={"post_pt_root_id": root}, split_positions=True))

        def by_duckdb(root: int) -> int:
            return len(duck.sql(duck_sql.format(root=int(root))).to_arrow_table().to_pandas())

        def by_adbc(root: int) -> int:
            with pg_adbc.cursor() as cursor:
                cursor.execute("SELECT * FROM synapses WHERE post_pt_root_id = $1", (root,))
                return len(cursor.fetch_arrow_table().to_pandas())

        def by_psycopg(root: int) -> int:
            with pg_rows.cursor() as cursor:
                cursor.execute("SELECT * FROM synapses WHERE post_pt_root_id = %s", (root,))
                return len(pd.DataFrame(cursor.fetchall(), columns=[c.name for c in cursor.description]))

        systems = {
            "opencave_client": by_client,
            "opencave_client_split_positions": by_client_split,
            "duckdb_in_process": by_duckdb,
            "postgres_adbc_in_process": by_adbc,
            "postgres_psycopg_in_process": by_psycopg,
        }
        times: dict[str, list[float]] = {label: [] for label in systems}
        sizes = []
        wait_idle(server_pid)
        for root in sample:  # a first round warms every cache and checks the systems agree
            counts = {fn(root) for fn in systems.values()}
            assert len(counts) == 1, f"the systems disagree on neuron {root}: {counts}"
            sizes.append(counts.pop())
        for round_number in range(args.rounds):
            # each system asks for every neuron in turn, as a session would; the systems take
            # turns round after round, so all see the same machine load
            for label, fn in systems.items():
                for root in sample:
                    start = time.perf_counter()
                    fn(root)
                    times[label].append(time.perf_counter() - start)
        floor = statistics.median(times["duckdb_in_process"])
        inputs = {label: {"p50_ms": p50_ms(t), "p90_ms": round(1000 * float(np.percentile(t, 90)), 2)} for label, t in times.items()}
        for label in systems:
            inputs[label]["ratio_to_duckdb_floor"] = round(statistics.median(times[label]) / floor, 2)
        results["neuron_inputs"] = {"neurons": len(sample), "rounds": args.rounds, "median_rows": int(statistics.median(sizes)), **inputs}
        print(json.dumps(results["neuron_inputs"], indent=1), flush=True)

        # -- get_leaves of the largest root ------------------------------------------------------
        cg = client.chunkedgraph
        roots = cg.get_roots(DemoWorld(data_dir / "worlds" / name).graph.sv_ids)
        values, counts = np.unique(roots, return_counts=True)
        big = int(values[counts.argmax()])
        leaves = cg.get_leaves(big)
        index = GraphService(create_store_engine(f"sqlite:///{data_dir / 'opencave.db'}")).graph(name).index
        big_index = index.node_index([big])
        wait_idle(server_pid)
        floor_t = timed(lambda: index.ids_of(index.leaf_indices(big_index)), 100)
        client_t = timed(lambda: cg.get_leaves(big), 100)
        health_t = timed(lambda: cg.session.get(url + "/health").content, 100)
        results["get_leaves"] = {
            "supervoxels": int(leaves.size),
            "p50_ms": p50_ms(client_t),
            "health_request_p50_ms": p50_ms(health_t),
            "floor_p50_ms": round(1000 * statistics.median(floor_t), 3),
            "ratio_to_floor": round(statistics.median(client_t) / statistics.median(floor_t), 1),
        }
        print(json.dumps(results["get_leaves"]), flush=True)
        pg_adbc.close()
        pg_rows.close()
    print_record(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
