"""Materialize views pages: p50 time of each page on loopback [target < 200 ms on the large world].

Each page is asked for ``--repeat`` times by one client over loopback with an admin token (after
one warm-up request); the time is the whole request, so it bounds the server's time from above.
Pages: the datastack index, a datastack's versions, a version's tables and views, the first and a
deep page of the synapse table, one neuron's input synapses (filtered page), and that neuron's
inputs downloaded as CSV and Parquet.

Usage: python bench/bench_pages.py [--size large] [--data-dir DIR] [--repeat 30]
Uses the data directory of bench_chunkedgraph.py / bench_materialize.py (the world is built once).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support import demo_store, loopback_server, p50_ms  # noqa: E402
from opencave import CAVEclient  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="large")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    name, storage, token = demo_store(args.size, args.data_dir)
    with loopback_server(storage) as url:
        mat = CAVEclient(name, server_address=url, auth_token=token).materialize
        version = mat.most_recent_version()
        rows = mat.get_annotation_count("synapses")
        synapses = mat.query_table("synapses", limit=1)
        neuron = int(synapses["post_pt_root_id"].iloc[0])
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        views = f"{url}/materialize/views"
        table = f"{views}/datastack/{name}/version/{version}/table/synapses"
        deep = max(1, rows // 50 // 2)
        pages = {
            "index": f"{views}/",
            "datastack": f"{views}/datastack/{name}",
            "version": f"{views}/datastack/{name}/version/{version}",
            "table_first_page": f"{table}?page_size=50",
            f"table_page_{deep}": f"{table}?page_size=50&page={deep}",
            "table_one_neuron": f"{table}?page_size=50&f.post_pt_root_id={neuron}",
            "csv_one_neuron": f"{table}/download.csv?f.post_pt_root_id={neuron}",
            "parquet_one_neuron": f"{table}/download.parquet?f.post_pt_root_id={neuron}",
        }
        results = {page: p50_ms(session, target, args.repeat) for page, target in pages.items()}
    print(json.dumps({"size": args.size, "synapse_rows": rows, "version": version, "machine": platform.machine(), "p50_ms": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
