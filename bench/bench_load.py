"""Many ``opencave serve`` processes over one PostgreSQL: a loopback load and its throughput
scaling.

Starts a private PostgreSQL and the largest fleet asked for (one shared versions directory and
built world), then runs the same mix (``tests/support/load.py``: materialize queries of one
neuron's synapses on a version, live queries, root lookups of 100 supervoxels, merges and splits
of reserved pairs, two clients contending for one pair) on the first 1, 2, … processes, clients
spread round robin. Prints requests/s, errors, edit conflicts and p50/p90/p99 per kind.

    python3 bench/bench_load.py                       # 1, 2, 3 processes, 64 clients, 60 s each
    python3 bench/bench_load.py --processes 3 --duration 15
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import support  # noqa: E402,F401 - isolates HOME before clients are imported
from tests.support.demo import DemoWorld  # noqa: E402
from tests.support.fleet import Fleet  # noqa: E402
from tests.support.load import prepare, run_load  # noqa: E402
from tests.support.postgres import create_database, postgres_server  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2,3", help="comma-separated process counts to measure")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=60, help="seconds of load per process count")
    parser.add_argument("--editors", type=int, default=7, help="clients that edit (two of them contend for one pair)")
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",")]
    root = Path(tempfile.mkdtemp(prefix="opencave-bench-load-"))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    failed = False
    with postgres_server() as admin_url:
        fleet = Fleet(root, create_database(admin_url))
        try:
            fleet.start(max(counts))
            world = DemoWorld(Path(fleet.env.get("OPENCAVE_WORLD_CACHE") or os.environ["OPENCAVE_WORLD_CACHE"]) / "small-0")
            plan = prepare(fleet[0].url, fleet.token, world)
            for count in counts:
                result = run_load(fleet.urls[:count], fleet.token, plan, clients=args.clients, duration_s=args.duration, editors=args.editors)
                print(f"\n{result.summary()}")
                print(result.table())
                for error in result.errors[:5]:
                    print("  error:", error)
                logged = fleet.logged_errors()
                print(f"tracebacks in the server logs so far: {logged}")
                failed |= bool(result.errors) or logged > 0
        finally:
            fleet.stop()
            shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
