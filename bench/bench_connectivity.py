"""Connectivity on the large demo world (10 M synapses) through opencave's client over loopback.

Targets (issue 16): adjacency among 2,000 proofread neurons < 150 ms; cell-type × cell-type
aggregate of all synapses < 500 ms; one neuron's partners < 20 ms; a cached frozen-version
one-neuron answer < 10 ms. Floor: DuckDB in-process on the same files — the version's
connections file the server reads (``synapses.connections.parquet``), and, for reference, the
synapse table's own frozen file (what an in-process analysis without it would scan). Also timed:
today's way, ``query_table`` of the synapses among the neurons and a pandas pivot.

Each figure is the median of ``--repeat`` calls after one warm-up (the first call of a version
makes its connections file; that time is reported too).

Usage: python bench/bench_connectivity.py [--size large] [--data-dir DIR] [--repeat 20]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support import demo_store, loopback_server, timed  # noqa: E402
from opencave import CAVEclient  # noqa: E402

NEURONS = 2000


def ms(times: list[float]) -> float:
    return round(1000 * statistics.median(times), 2)


def floors(version_dir: Path, roots: list[int], root: int, repeat: int) -> dict[str, float]:
    """DuckDB in-process: the same questions on the connections file and on the synapse file."""
    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.register("r", __import__("pyarrow").table({"root": np.array(roots, np.int64)}))
    connections = f"read_parquet('{version_dir / 'synapses.connections.parquet'}')"
    synapses = f"read_parquet('{version_dir / 'synapses.parquet'}')"
    cell_types = (
        f"(SELECT n.pt_root_id AS root, min(c.cell_type) AS t FROM read_parquet('{version_dir / 'cell_types.parquet'}') c "
        f"JOIN read_parquet('{version_dir / 'nucleus_detection.parquet'}') n ON c.target_id = n.id "
        "WHERE n.pt_root_id <> 0 GROUP BY 1 HAVING count(DISTINCT c.cell_type) = 1)"
    )
    queries = {
        "adjacency": "SELECT * FROM {e} WHERE pre_pt_root_id IN (SELECT root FROM r) AND post_pt_root_id IN (SELECT root FROM r)",
        "cell_type_matrix": (
            "SELECT a.t, b.t, sum(n_synapses) FROM {e} e JOIN " + cell_types + " a ON e.pre_pt_root_id = a.root JOIN "
            + cell_types + " b ON e.post_pt_root_id = b.root GROUP BY 1, 2"
        ),
        "partners_one_neuron": f"SELECT pre_pt_root_id, n_synapses FROM {{e}} WHERE post_pt_root_id = {root}",
    }
    raw = {
        "adjacency": "SELECT pre_pt_root_id, post_pt_root_id, count(*) FROM {e} WHERE pre_pt_root_id IN (SELECT root FROM r) "
        "AND post_pt_root_id IN (SELECT root FROM r) GROUP BY 1, 2",
        "cell_type_matrix": "SELECT a.t, b.t, count(*) FROM {e} s JOIN " + cell_types + " a ON s.pre_pt_root_id = a.root JOIN "
        + cell_types + " b ON s.post_pt_root_id = b.root GROUP BY 1, 2",
        "partners_one_neuron": f"SELECT pre_pt_root_id, count(*) FROM read_parquet('{version_dir / 'synapses.by_post_pt_root_id.parquet'}') "
        f"WHERE post_pt_root_id = {root} GROUP BY 1",
    }
    out = {}
    for name, sql in queries.items():
        run = lambda: con.sql(sql.format(e=connections)).to_arrow_table()  # noqa: E731
        run()
        out[f"{name}_connections_file"] = ms(timed(run, repeat))
        run_raw = lambda: con.sql(raw[name].format(e=synapses)).to_arrow_table()  # noqa: E731
        run_raw()
        out[f"{name}_synapse_file"] = ms(timed(run_raw, max(3, repeat // 4)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="large")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    name, storage, token = demo_store(args.size, args.data_dir)
    data_dir = Path(storage[storage.index("--data-dir") + 1])
    with loopback_server(storage) as url, tempfile.TemporaryDirectory() as cache_dir:
        client = CAVEclient(name, server_address=url, auth_token=token, write_server_cache=False)
        mat, conn = client.materialize, client.connectivity
        version = mat.most_recent_version()
        version_dir = data_dir / "versions" / name / f"v{version}"
        made = version_dir / "synapses.connections.parquet"
        for stale in version_dir.glob("synapses.connections*.parquet"):
            stale.unlink()  # time the first call, which makes them
        proofread = mat.query_table("proofreading_status", materialization_version=version)
        neurons = mat.query_table("nucleus_detection", materialization_version=version)
        roots = list(dict.fromkeys(proofread["pt_root_id"].tolist() + neurons["pt_root_id"].tolist()))
        roots = [int(r) for r in roots if r != 0][:NEURONS]
        client.chunkedgraph.is_latest_roots(roots[:1])  # the graph's index is loaded once per server, not by connectivity
        start = time.perf_counter()
        first = conn.partners(roots[0], version=version)
        first_call_s = round(time.perf_counter() - start, 2)
        partners = conn.partners(roots, version=version)
        counts = partners.groupby("root_id")["n_synapses"].sum()
        typical = int(counts.sort_values().index[len(counts) // 2])

        figures = {
            "adjacency_2000": ms(timed(lambda: conn.adjacency(roots, version=version), args.repeat)),
            "adjacency_2000_sparse": ms(timed(lambda: conn.adjacency(roots, sparse=True, version=version), args.repeat)),
            "cell_type_matrix": ms(timed(lambda: conn.cell_type_matrix("cell_types", version=version), args.repeat)),
            "partners_one_neuron": ms(timed(lambda: conn.partners(typical, version=version), args.repeat)),
            "partners_one_neuron_output": ms(timed(lambda: conn.partners(typical, "output", version=version), args.repeat)),
            "edges_all": ms(timed(lambda: conn.edges(version=version), max(3, args.repeat // 4))),
        }
        conn.adjacency(roots, version=version)
        dense = conn.adjacency(roots, version=version)

        def query_and_pivot():
            rows = mat.query_table(
                "synapses",
                filter_in_dict={"pre_pt_root_id": roots, "post_pt_root_id": roots},
                select_columns=["pre_pt_root_id", "post_pt_root_id"],
                materialization_version=version,
            )
            return rows.pivot_table(index="pre_pt_root_id", columns="post_pt_root_id", aggfunc="size", fill_value=0)

        pivot = query_and_pivot()
        figures["query_and_pivot_2000"] = ms(timed(query_and_pivot, max(3, args.repeat // 4)))
        assert int(pivot.to_numpy().sum()) == int(dense.to_numpy().sum()), "the adjacency must count every synapse among the neurons"

        cached = CAVEclient(name, server_address=url, auth_token=token, write_server_cache=False, cache=cache_dir).connectivity
        cached.partners(typical, version=version)
        figures["partners_one_neuron_cached"] = ms(timed(lambda: cached.partners(typical, version=version), args.repeat))

        typical_partners = len(conn.partners(typical, version=version))
        floor = floors(version_dir, roots, typical, args.repeat)
    ratios = {
        "adjacency_2000": round(figures["adjacency_2000"] / floor["adjacency_connections_file"], 1),
        "cell_type_matrix": round(figures["cell_type_matrix"] / floor["cell_type_matrix_connections_file"], 1),
        "partners_one_neuron": round(figures["partners_one_neuron"] / floor["partners_one_neuron_connections_file"], 1),
    }
    print(json.dumps({
        "size": args.size,
        "version": version,
        "neurons": len(roots),
        "adjacency_nonzero": int((dense.to_numpy() > 0).sum()),
        "typical_neuron_partners": typical_partners,
        "first_call_makes_connections_file_s": first_call_s,
        "first_answer_rows": len(first),
        "connections_file_rows": duckdb.sql(f"SELECT count(*) FROM read_parquet('{made}')").fetchall()[0][0],
        "machine": platform.machine(),
        "client_ms": figures,
        "floor_duckdb_ms": floor,
        "ratio_to_connections_file_floor": ratios,
    }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
