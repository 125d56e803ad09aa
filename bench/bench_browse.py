"""Data browser pages: p50 time of each page on loopback [target < 200 ms on the large world].

Each page is asked for ``--repeat`` times by one client over loopback with an admin token (after
one warm-up request); the time is the whole request, so it bounds the server's time from above.
Pages: the home page, the datastack page (versions, tables, cell types), the neuron page of the
neuron with the most synapses and of a typical one (the median of the neurons with a nucleus),
a neuron page at a timestamp (live query), a nucleus search (up to its redirect) and a cell-type
search.

Usage: python bench/bench_browse.py [--size large] [--data-dir DIR] [--repeat 30]
Uses the data directory of bench_chunkedgraph.py / bench_materialize.py (the world is built once,
when the datastack is not there yet).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from urllib.parse import quote

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
        synapses = mat.get_annotation_count("synapses")
        connections = mat.query_view("synapse_connections", materialization_version=version)
        per_root = connections.groupby("post_pt_root_id")["n_synapses"].sum().add(connections.groupby("pre_pt_root_id")["n_synapses"].sum(), fill_value=0)
        busiest = int(per_root.idxmax())
        neurons = mat.query_view("single_neurons", materialization_version=version)
        neurons = neurons[neurons["cell_type"].notna()]
        counts = per_root.reindex(neurons["pt_root_id"]).fillna(0).sort_values()
        typical = int(counts.index[len(counts) // 2])
        nucleus = int(neurons[neurons["pt_root_id"] == typical]["id"].iloc[0])
        cell_type = str(neurons["cell_type"].iloc[0])
        moment = quote(mat.get_timestamp(version).isoformat())
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        base = f"{url}/browse/{name}"
        pages = {
            "home": f"{url}/",
            "datastack": base,
            "neuron_busiest": f"{base}/neuron/{busiest}?version={version}",
            "neuron_typical": f"{base}/neuron/{typical}?version={version}",
            "neuron_typical_at_timestamp": f"{base}/neuron/{typical}?timestamp={moment}",
            "search_nucleus": f"{base}/search?kind=nucleus&q={nucleus}&version={version}",
            "search_cell_type": f"{base}/search?kind=cell_type&q={quote(cell_type)}&version={version}",
        }
        results = {page: p50_ms(session, target, args.repeat) for page, target in pages.items()}
        synapses_of = {"busiest": int(per_root[busiest]), "typical": int(per_root.get(typical, 0))}
    print(json.dumps({"size": args.size, "synapse_rows": synapses, "version": version, "neuron_synapses": synapses_of, "machine": platform.machine(), "p50_ms": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
