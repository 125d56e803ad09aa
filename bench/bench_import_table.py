"""Import of a synapse table into a live annotation table: N rows (default 1 million) at positions
inside the demo world's volume, as Parquet and as CSV.gz (a header row), each imported with the
importer of ``opencave import table`` into a new table of the demo datastack (so every bound point's
supervoxel is looked up). Rows/s, the time of each step, peak RSS of the importing process, and the
ratio to the floor (DuckDB reading the same file into memory, in a process of its own).

    python bench/bench_import_table.py [--rows 1000000] [--work DIR] [--database URL]
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

VOLUME = (256, 256, 64)  # the demo world's extent in voxels of 8×8×40 nm, the imported table's resolution


def synapse_select(rows: int) -> str:
    """Synapses of the schema ``synapse``: three points inside the volume and a size."""
    axes = []
    for k, point in enumerate(("pre_pt", "post_pt", "ctr_pt")):
        for j, (axis, extent) in enumerate(zip("xyz", VOLUME)):
            axes.append(f"((i * {7 + k * 3 + j}) % {extent})::DOUBLE AS {point}_position_{axis}")
    return f"SELECT {', '.join(axes)}, ((i * 7) % 5000)::DOUBLE AS size FROM range(1, {rows + 1}) t(i)"


def make_inputs(rows: int, work: Path) -> tuple[Path, Path]:
    parquet, csv = work / "synapses.parquet", work / "synapses.csv.gz"
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = true")
    start = time.perf_counter()
    con.execute(f"COPY ({synapse_select(rows)}) TO '{parquet}' (FORMAT parquet, COMPRESSION zstd)")
    con.execute(f"COPY ({synapse_select(rows)}) TO '{csv}' (HEADER true, COMPRESSION gzip)")
    print(f"made {rows:,} rows as Parquet and CSV.gz in {time.perf_counter() - start:.1f} s", flush=True)
    return parquet, csv


CHILD_SETUP = """
import sys
from opencave.config import resolve_settings
from opencave.runtime import Runtime
data_dir, database = sys.argv[1:3]
Runtime.open(resolve_settings(data_dir, database or None)).initialise(with_demo=True)
"""

CHILD_IMPORT = """
import json, sys, time, resource
from opencave.config import resolve_settings
from opencave.runtime import Runtime
data_dir, database, source, table = sys.argv[1:5]
runtime = Runtime.open(resolve_settings(data_dir, database or None))
importer = runtime.table_imports
marks = {}
def progress(phase, done, total):
    marks.setdefault(phase, time.perf_counter())
start = time.perf_counter()
result = importer.import_into_datastack("opencave_demo", table, [source], schema="synapse", user_id="1",
                                        description="benchmark", voxel_resolution=(8, 8, 40), progress=progress)
end = time.perf_counter()
steps = {"stage": marks["checking"] - start, "check": marks["writing"] - marks["checking"], "write": end - marks["writing"]}
print(json.dumps({"seconds": end - start, "rows": result.rows, "steps": steps,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--database", default="", help="a PostgreSQL URL of an empty database (default: SQLite in the work directory)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="opencave-bench-table-import-"))
    work.mkdir(parents=True, exist_ok=True)
    parquet, csv = make_inputs(args.rows, work)
    data_dir = work / "store"
    start = time.perf_counter()
    run_child(CHILD_SETUP, str(data_dir), args.database)
    print(f"demo store ready in {time.perf_counter() - start:.1f} s ({'PostgreSQL' if args.database else 'SQLite'})", flush=True)
    for kind, source in (("parquet", parquet), ("csv.gz", csv)):
        floor = read_floor(str(source), "parquet" if kind == "parquet" else "csv")
        done = run_child(CHILD_IMPORT, str(data_dir), args.database, str(source), f"bench_{kind.replace('.', '_')}")
        assert done["rows"] == args.rows, done
        rate, floor_rate = args.rows / done["seconds"], args.rows / floor["seconds"]
        steps = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in done["steps"].items())
        print(
            f"{kind}: {done['seconds']:.1f} s = {rate / 1e3:,.0f} k rows/s ({steps}), peak RSS {done['peak_rss_mb']:.0f} MB; "
            f"floor (DuckDB into memory) {floor['seconds']:.2f} s = {floor_rate / 1e6:.2f} M rows/s, RSS {floor['peak_rss_mb']:.0f} MB; "
            f"ratio {done['seconds'] / floor['seconds']:.1f}",
            flush=True,
        )
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
