"""Export of a version: a synapse table of N rows (default 10 million), frozen as the materializer
stores it, written by ``opencave export`` as Parquet and as a CAVE static export (CSV.gz); rows/s,
peak RSS of the exporting process, and the ratio to the floor (the same file converted in one
call by a library, in a process of its own: pyarrow ``read_table`` + ``write_table`` for
Parquet, DuckDB ``COPY … TO '….csv.gz'`` for CSV).

    python bench/bench_export.py [--rows 10000000] [--work DIR] [--no-floor]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench.support  # noqa: E402,F401 - isolates HOME

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from opencave.config import resolve_settings  # noqa: E402
from opencave.runtime import Runtime  # noqa: E402
from opencave.services.materialize.layout import frozen_layout  # noqa: E402
from opencave.services.materialize.versions import FrozenTable  # noqa: E402
from opencave.storage.snapshots import COMPRESSION, ROW_GROUP_ROWS  # noqa: E402

DS = "bench_export"
CHUNK = 1 << 20


def synapse_chunk(start: int, rows: int, rng: np.random.Generator) -> pa.Table:
    """Rows ``start+1 …`` of a synapse table in the frozen layout: ids in order, supervoxels
    random, roots drawn from 100,000 neurons, sizes and whole-voxel positions random."""
    layout = frozen_layout("synapse")
    columns = {}
    for name, dtype in layout.columns:
        if name == "id":
            values = np.arange(start + 1, start + rows + 1, dtype=np.int64)
        elif name == "valid":
            values = np.ones(rows, dtype=bool)
        elif name.endswith("supervoxel_id"):
            values = rng.integers(88_000_000_000_000_000, 89_000_000_000_000_000, rows)
        elif name.endswith("root_id"):
            values = 864_691_135_000_000_000 + rng.integers(0, 100_000, rows) * 7919
        elif name.endswith("_z"):
            values = rng.integers(14_000, 28_000, rows).astype(np.float64)
        else:
            values = rng.integers(0, 400_000, rows).astype(np.float64)
        columns[name] = pa.array(values, type=dtype)
    return pa.table(columns, schema=layout.arrow_schema)


def make_version(runtime: Runtime, rows: int) -> tuple[int, Path]:
    """A published version of ``DS`` holding one synapse table of ``rows`` rows."""
    runtime.info.add_aligned_volume(DS, "precomputed://none")
    runtime.info.add_datastack(DS, DS)
    registry = runtime.materializer.registry
    version = registry.begin(DS, datetime.now(timezone.utc), None, str(runtime.settings.version_root))
    directory = Path(version.location)
    directory.mkdir(parents=True)
    path = directory / "synapses.parquet"
    rng = np.random.default_rng(0)
    with pq.ParquetWriter(path, frozen_layout("synapse").arrow_schema, compression=COMPRESSION) as writer:
        for start in range(0, rows, CHUNK):
            writer.write_table(synapse_chunk(start, min(CHUNK, rows - start), rng), row_group_size=ROW_GROUP_ROWS)
    metadata = {"table_name": "synapses", "schema": "synapse", "schema_type": "synapse", "description": "benchmark synapses",
                "voxel_resolution_x": 4.0, "voxel_resolution_y": 4.0, "voxel_resolution_z": 40.0, "aligned_volume": DS}
    registry.add_table(version.id, FrozenTable("table", "synapses", "synapse", rows, "synapses.parquet", datetime.now(timezone.utc), metadata))
    registry.publish(version.id)
    return version.version, path


def run_measured(command: list[str]) -> tuple[float, float, int, str]:
    """Wall seconds, CPU seconds, peak RSS in MiB and stdout of a command run as a process of
    its own (CPU seconds tell what the machine's other load took from the wall time)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit code {process.returncode}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024, output


FLOORS = {
    "parquet": "import sys, pyarrow.parquet as pq; pq.write_table(pq.read_table(sys.argv[1]), sys.argv[2] + '.parquet', compression='zstd', use_dictionary=False)",
    "cave-csv": "import sys, duckdb; duckdb.sql(\"COPY (SELECT * FROM read_parquet('\" + sys.argv[1] + \"')) TO '\" + sys.argv[2] + \".csv.gz' (HEADER false, COMPRESSION gzip)\")",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--work", help="directory for the store and the exports (default: a temporary one, removed)")
    parser.add_argument("--no-floor", action="store_true", help="skip the library floors (DuckDB's gzip CSV takes minutes)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="opencave-bench-export-"))
    try:
        data = work / "data"
        runtime = Runtime.open(resolve_settings(str(data), None))
        start = time.perf_counter()
        version, source = make_version(runtime, args.rows)
        runtime.close()
        print(f"{args.rows:,}-row synapse version written in {time.perf_counter() - start:.1f} s ({source.stat().st_size / 1e6:,.0f} MB)")
        print("| format | rows/s (command) | rows/s (export itself) | CPU s (command) | peak RSS | output | floor rows/s | ratio to floor |")
        print("|---|---|---|---|---|---|---|---|")
        for format in ("parquet", "cave-csv"):
            out = work / f"out-{format}"
            command = [sys.executable, "-m", "opencave", "export", DS, "--version", str(version), "--format", format, str(out), "--data-dir", str(data)]
            load = os.getloadavg()[0]
            seconds, cpu, rss, output = run_measured(command)
            inner = float(re.search(r" in ([0-9.]+) s ", output).group(1))
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
            floor_rate = ratio = "—"
            if not args.no_floor:
                floor_seconds, _, _, _ = run_measured([sys.executable, "-c", FLOORS[format], str(source), str(work / "floor")])
                floor_rate, ratio = f"{args.rows / floor_seconds:,.0f}", f"{floor_seconds / seconds:.2f}"
            print(
                f"| {format} | {args.rows / seconds:,.0f} | {args.rows / inner:,.0f} | {cpu:.1f} | {rss:,} MiB | {size / 1e6:,.0f} MB "
                f"| {floor_rate} | {ratio} |  (load average {load:.1f} before)",
                flush=True,
            )
            shutil.rmtree(out)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
