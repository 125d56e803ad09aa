"""Big answers: time and server memory for a whole synapse table as JSON and as Arrow, and for a
whole-table live query, each read by the client as it streams.

The store gets a synapse table of ``--rows`` rows (positions drawn from the demo's synapses), a
version of it, and then ``--changed`` rows deleted and half as many added, so that the live query
brings the version's rows to now and merges the changes in. Each figure is measured on a freshly
started server after a warm-up request (memory an earlier answer freed stays with a process):
``rss_rise_mb`` is the peak resident memory of the ``opencave serve`` process during the request
minus its value just before.

Usage: python bench/bench_streaming.py [--rows 1000000] [--data-dir DIR] [--database URL]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import pyarrow as pa
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.materialize import DS  # noqa: E402
from tests.support.memory import PeakRss, change_synapses, count_json_records, fill_synapses  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

TABLE = "many_synapses"


def prepare(server: ServerProcess, rows: int, changed: int) -> int:
    """The table, its version and the later changes, made once per data directory; the version."""
    marker = server.data_dir / f"bench-streaming-{rows}.json"
    if marker.exists():
        return json.loads(marker.read_text())["version"]
    start = time.perf_counter()
    fill_synapses(server, TABLE, rows)
    print(f"{rows:,} rows loaded ({time.perf_counter() - start:.0f} s)", flush=True)
    start = time.perf_counter()
    created = server.cli("materialize", "create", DS)
    version = int(created.stdout.split("version ")[1].split()[0])
    print(f"version {version} made ({time.perf_counter() - start:.0f} s)", flush=True)
    change_synapses(server, TABLE, changed, changed // 2)
    marker.write_text(json.dumps({"version": version}))
    return version


def measure(server: ServerProcess, warm_up, request) -> dict[str, float]:
    """Restart the server, warm it up, then time ``request`` (which reads the answer) and watch memory."""
    server.stop()
    server.start()
    warm_up()
    with PeakRss(server.process.pid) as memory:
        start = time.perf_counter()
        rows, size = request()
        seconds = time.perf_counter() - start
    return {
        "rows": rows,
        "mb": round(size / 2**20, 1),
        "s": round(seconds, 2),
        "rows_per_s": round(rows / seconds),
        "rss_rise_mb": round(memory.rise / 2**20),
        "rss_before_mb": round(memory.baseline / 2**20),
    }


def arrow_rows(response: requests.Response) -> tuple[int, int]:
    rows = 0
    for batch in pa.ipc.open_stream(response.raw):
        rows += batch.num_rows
    return rows, int(response.raw.tell())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--changed", type=int, default=1_000, help="rows deleted after the version (half as many are added)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--database", default=None, help="a PostgreSQL URL (default: SQLite in the data directory)")
    args = parser.parse_args()
    data_dir = Path(args.data_dir or f"/tmp/opencave-bench-streaming-{args.rows}")
    server = ServerProcess(data_dir, args.database).start(timeout=600)
    try:
        version = prepare(server, args.rows, args.changed)
        headers = {"Authorization": f"Bearer {server.new_token()}"}
        table_url = f"{server.url}/materialize/api/v2/datastack/{DS}/version/{version}/table/{TABLE}/query"
        live_url = f"{server.url}/materialize/api/v3/datastack/{DS}/query"
        moment = dt.datetime.now(dt.timezone.utc).isoformat()
        json_params = {"return_pyarrow": "false", "split_positions": "true"}
        arrow_params = {"return_pyarrow": "true", "split_positions": "true"}

        def post(url: str, params: dict, body: dict, read) -> tuple[int, int]:
            with requests.post(url, params=params, json=body, headers=headers, stream=True, timeout=900) as response:
                response.raise_for_status()
                return read(response)

        results: dict[str, object] = {}
        results["table_json"] = measure(
            server,
            lambda: post(table_url, json_params, {"limit": 10}, count_json_records),
            lambda: post(table_url, json_params, {}, count_json_records),
        )
        print(f"whole table as JSON: {results['table_json']}", flush=True)
        results["table_arrow"] = measure(
            server,
            lambda: post(table_url, arrow_params, {"limit": 10}, arrow_rows),
            lambda: post(table_url, arrow_params, {}, arrow_rows),
        )
        print(f"whole table as Arrow: {results['table_arrow']}", flush=True)
        live = {"table": TABLE, "timestamp": moment}
        results["live_arrow"] = measure(
            server,
            lambda: post(live_url, {}, {**live, "limit": 10}, arrow_rows),
            lambda: post(live_url, {}, live, arrow_rows),
        )
        print(f"whole-table live query (Arrow): {results['live_arrow']}", flush=True)
        results["live_json"] = measure(
            server,
            lambda: post(live_url, {"return_pyarrow": "false"}, {**live, "limit": 10}, count_json_records),
            lambda: post(live_url, {"return_pyarrow": "false"}, live, count_json_records),
        )
        print(f"whole-table live query (JSON): {results['live_json']}", flush=True)
    finally:
        server.stop()
    record = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
        "command": " ".join(sys.argv),
        "store": "postgresql" if args.database else "sqlite",
        "results": results,
    }
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
