"""Shared pieces of the benchmarks: the ``opencave`` command, timing, a server on loopback."""

from __future__ import annotations

import atexit
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.postgres import free_port  # noqa: E402

# Clients made by a benchmark save datastack lookups and tokens under HOME: keep them out of the
# user's own files (HOME is read when a file is written, so setting it here is in time).
os.environ["HOME"] = tempfile.mkdtemp(prefix="opencave-bench-home-")
atexit.register(shutil.rmtree, os.environ["HOME"], ignore_errors=True)


def opencave_cli(*args: str, storage: list[str]) -> str:
    result = subprocess.run([sys.executable, "-m", "opencave", *args, *storage], capture_output=True, text=True, check=True)
    return result.stdout.strip()


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


@contextmanager
def served(storage: list[str], wait_s: float = 300, settle: bool = False) -> Iterator[tuple[str, int]]:
    """``opencave serve`` on a free loopback port for the duration; yields its URL and process id.

    A health check that times out (a first start sets up the demo datastack, slowly on a busy
    machine) is tried again until ``wait_s``; with ``settle`` nothing is timed before the server
    has finished its start-up work (its CPU use falls under 5% of a core)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "opencave", "serve", "--port", str(port), "--no-access-log", "--log-level", "warning", *storage],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + wait_s
        while True:
            try:
                if requests.get(url + "/health", timeout=5).ok:
                    break
            except requests.RequestException:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit(f"opencave serve did not answer /health within {wait_s:.0f} s")
            time.sleep(0.1)
        if settle:
            wait_idle(server.pid, wait_s=max(deadline - time.time(), 1))
        yield url, server.pid
    finally:
        server.terminate()
        server.wait(30)


@contextmanager
def loopback_server(storage: list[str], wait_s: float = 120) -> Iterator[str]:
    """``served`` for benchmarks that only need the URL."""
    with served(storage, wait_s) as (url, _):
        yield url


def wait_idle(pid: int, wait_s: float = 300, every: float = 0.5) -> float:
    """Seconds until process ``pid`` (and its children) use under 5% of a core over ``every`` s."""
    import psutil

    start = time.perf_counter()
    procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    for proc in procs:
        proc.cpu_percent(None)
    while time.perf_counter() - start < wait_s:
        time.sleep(every)
        if sum(proc.cpu_percent(None) for proc in procs) < 5:
            break
    return time.perf_counter() - start - every


def get_roots_figures(cg, sv_ids, query, timestamp=None) -> dict:
    """get_roots of ``query`` through a chunkedgraph client, checked against and compared with
    its in-process floor: a numpy lookup in the sorted (supervoxel, root) arrays of the graph."""
    import numpy as np

    all_roots = cg.get_roots(sv_ids, timestamp=timestamp)
    order = np.argsort(sv_ids)
    sorted_svs, sorted_roots = sv_ids[order], all_roots[order]
    floor = timed(lambda: sorted_roots[np.searchsorted(sorted_svs, query)], 5)
    answer = cg.get_roots(query, timestamp=timestamp)
    assert np.array_equal(answer, sorted_roots[np.searchsorted(sorted_svs, query)])
    client = timed(lambda: cg.get_roots(query, timestamp=timestamp), 5)
    ids_s, floor_s = query.size / statistics.median(client), query.size / statistics.median(floor)
    return {"ids_per_s": round(ids_s), "floor_ids_per_s": round(floor_s), "ratio_to_floor": round(ids_s / floor_s, 3)}


def run_child(code: str, *args: str) -> dict:
    """Run ``code`` in a Python process of its own; the JSON object of its last output line."""
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    lines = out.stdout.strip().splitlines()
    return __import__("json").loads(lines[-1]) if lines else {}


READ_FLOOR = """
import json, sys, time, resource, duckdb
import pyarrow.csv, pyarrow.parquet
source, kind, reader = sys.argv[1:4]
con = duckdb.connect()
start = time.perf_counter()
if reader == "pyarrow":
    if kind == "parquet":
        table = pyarrow.parquet.read_table(source)
    else:
        table = pyarrow.csv.read_csv(source, read_options=pyarrow.csv.ReadOptions(autogenerate_column_names=kind == "csv-noheader"))
elif kind == "parquet":
    table = con.execute(f"SELECT * FROM read_parquet('{source}')").to_arrow_table()
else:
    header = "true" if kind == "csv" else "false, all_varchar=true"
    table = con.execute(f"SELECT * FROM read_csv('{source}', header={header})").to_arrow_table()
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "rows": table.num_rows, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def read_floor(source: Path | str, kind: str, reader: str = "duckdb") -> dict:
    """``reader`` (duckdb or pyarrow) reading ``source`` into memory (Arrow) in a process of its
    own: the floor of an import. ``kind``: parquet, csv (a header row) or csv-noheader (a static
    export; DuckDB reads it as text, pyarrow infers types)."""
    return run_child(READ_FLOOR, str(source), kind, reader)


def p50_ms(session: requests.Session, url: str, repeat: int) -> float:
    """Median milliseconds of ``repeat`` GETs of ``url`` (after one warm-up), each checked to
    answer 2xx or 3xx; redirects are not followed (a search that finds a neuron is timed up to
    its redirect)."""
    session.get(url, allow_redirects=False).raise_for_status()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        response = session.get(url, allow_redirects=False)
        times.append(time.perf_counter() - start)
        response.raise_for_status()
    return round(1000 * statistics.median(times), 1)


def demo_store(size: str, data_dir: str | None) -> tuple[str, list[str], str]:
    """The demo world of ``size`` in ``data_dir`` (default ``/tmp/opencave-bench-<size>``), built
    only when missing: its datastack name, the storage arguments and an admin token."""
    name = f"opencave_{size}"
    storage = ["--data-dir", str(Path(data_dir or f"/tmp/opencave-bench-{size}"))]
    if name not in opencave_cli("datastack", "list", storage=storage).split():
        opencave_cli("demo", "create", name, "--size", size, storage=storage)
    return name, storage, opencave_cli("token", "create", "admin@localhost", storage=storage)


def print_record(results: dict) -> None:
    """A benchmark's figures as one JSON record with its date, machine and command."""
    import psutil

    record = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB",
        "command": " ".join(sys.argv),
        "results": results,
    }
    print(json.dumps(record, indent=1))

