"""Import of a released version: a synapse table of N rows (default 10 million) as Parquet and as
a CAVE static export (CSV.gz), each imported with ``opencave import version`` into a fresh
store; rows/s until the version answers queries and until its clustered copies are built, peak
RSS of the importing process, and the ratio to the floor (the faster of DuckDB and pyarrow reading
the same file into memory, each in a process of its own).

    python bench/bench_import_version.py [--rows 10000000] [--work DIR] [--database URL]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support import read_floor, run_child  # noqa: E402 - also isolates HOME

import duckdb  # noqa: E402

from opencave.services.materialize.layout import frozen_layout  # noqa: E402

HEADER_TYPES = {"BIGINT": "bigint", "BOOLEAN": "boolean", "DOUBLE": "double precision", "INTEGER": "integer", "TIMESTAMP": "timestamp without time zone"}


def synapse_select(rows: int) -> str:
    """A synapse table as CAVE publishes it: ids, CRUD columns, segmentation ids, positions."""
    axes = []
    for k, point in enumerate(("pre_pt", "post_pt", "ctr_pt")):
        for j, axis in enumerate("xyz"):
            axes.append(f"((i * {7 + k * 3 + j}) % {200_000 if axis != 'z' else 20_000})::INTEGER AS {point}_position_{axis}")
    return f"""
        SELECT i AS id, TIMESTAMP '2024-01-01 00:00:00' + to_microseconds(i) AS created, NULL::TIMESTAMP AS deleted,
               NULL::BIGINT AS superceded_id, true AS valid,
               (i * 31) % 50000000 + 80000000000000000 AS pre_pt_supervoxel_id,
               864691135000000000 + (i * 17) % 100000 AS pre_pt_root_id,
               (i * 37) % 50000000 + 80000000000000000 AS post_pt_supervoxel_id,
               864691135000000000 + (i * 13) % 100000 AS post_pt_root_id,
               ((i * 7) % 5000)::INTEGER AS size, {', '.join(axes)}
        FROM range(1, {rows + 1}) t(i)"""


def make_inputs(rows: int, work: Path) -> tuple[Path, Path]:
    parquet_dir, csv_dir = work / "parquet", work / "static"
    if (parquet_dir / "synapses.parquet").exists() and (csv_dir / "synapses_merged_header.csv").exists():
        if duckdb.sql(f"SELECT count(*) FROM read_parquet('{parquet_dir}/synapses.parquet')").fetchall()[0][0] == rows:
            return parquet_dir, csv_dir  # made by an earlier run with --work
    for d in (parquet_dir, csv_dir):
        d.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = true")
    select = synapse_select(rows)
    start = time.perf_counter()
    con.execute(f"COPY ({select}) TO '{parquet_dir}/synapses.parquet' (FORMAT parquet, COMPRESSION zstd)")
    columns = con.execute(f"DESCRIBE {select} LIMIT 0").fetchall()
    (csv_dir / "synapses_merged_header.csv").write_text("".join(f"{name},{HEADER_TYPES[kind]}\n" for name, kind, *_ in columns))
    texts = ", ".join(
        f"CASE WHEN {name} THEN 't' ELSE 'f' END AS {name}" if kind == "BOOLEAN" else
        f"strftime({name}, '%Y-%m-%d %H:%M:%S.%f') AS {name}" if kind == "TIMESTAMP" else name
        for name, kind, *_ in columns
    )
    con.execute(f"COPY (SELECT {texts} FROM ({select})) TO '{csv_dir}/synapses_merged.csv.gz' (HEADER false, COMPRESSION gzip)")
    print(f"made {rows:,} rows as Parquet and CSV.gz in {time.perf_counter() - start:.1f} s", flush=True)
    return parquet_dir, csv_dir


CHILD_IMPORT = """
import json, sys, time, resource
from pathlib import Path
from opencave.config import resolve_settings
from opencave.runtime import Runtime
from opencave.services.materialize.clustering import ensure_clustered
data_dir, database, source, schema, version = sys.argv[1:6]
runtime = Runtime.open(resolve_settings(data_dir, database or None))
runtime.prepare()
start = time.perf_counter()
found = runtime.imports.import_version("bench_import", source, version=int(version), timestamp=__import__("datetime").datetime(2024, 6, 1),
                                       schemas={"synapses": schema}, voxel_resolution=(4, 4, 40), cluster=False)
available = time.perf_counter() - start
built = ensure_clustered(Path(found.location), "synapses.parquet", ["pre_pt_root_id", "post_pt_root_id"])
assert len(built) == 2, built
print(json.dumps({"seconds": available, "clustered_seconds": time.perf_counter() - start - available,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--database", default="")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="opencave-bench-import-"))
    assert frozen_layout("synapse")  # the schema exists
    parquet_dir, csv_dir = make_inputs(args.rows, work)
    results = {}
    for number, (kind, source, floor_file) in enumerate(
        (("parquet", parquet_dir, parquet_dir / "synapses.parquet"), ("static export CSV.gz", csv_dir, csv_dir / "synapses_merged.csv.gz")), 1
    ):
        floors = {reader: read_floor(floor_file, "parquet" if kind == "parquet" else "csv-noheader", reader) for reader in ("duckdb", "pyarrow")}
        for reader, measured in floors.items():
            print(f"  floor, {reader} reading {floor_file.name} into memory: {measured['seconds']:.1f} s, RSS {measured['peak_rss_mb']:.0f} MB", flush=True)
        floor = min(floors.values(), key=lambda f: f["seconds"])
        data_dir = work / f"store-{number}"
        done = run_child(CHILD_IMPORT, str(data_dir), args.database, str(source), "synapse", str(number))
        rate, floor_rate = args.rows / done["seconds"], args.rows / floor["seconds"]
        results[kind] = done
        print(
            f"{kind}: available after {done['seconds']:.1f} s = {rate / 1e6:.2f} M rows/s (clustered copies then "
            f"{done['clustered_seconds']:.1f} s; all {args.rows / (done['seconds'] + done['clustered_seconds']) / 1e6:.2f} M rows/s), "
            f"peak RSS {done['peak_rss_mb']:.0f} MB; "
            f"floor (the faster) {floor['seconds']:.1f} s = {floor_rate / 1e6:.2f} M rows/s, RSS {floor['peak_rss_mb']:.0f} MB; "
            f"ratio {done['seconds'] / floor['seconds']:.2f}",
            flush=True,
        )
        shutil.rmtree(data_dir, ignore_errors=True)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
