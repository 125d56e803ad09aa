"""Importing a released version: a static export written here, in CAVE's exact layout, from the
demo's version 2, imports as a version of a new datastack, and the genuine caveclient 8.2.1 gets
the same DataFrames from it as from the source version. Bad inputs fail with an error naming the
file, row and column, and leave nothing behind.
"""

from __future__ import annotations

import datetime as dt
import gzip
import math
import shutil
from pathlib import Path

import caveclient.materializationengine
import pandas as pd
import pyarrow as pa
import pyarrow.feather
import pyarrow.parquet as pq
import pytest
from caveclient import CAVEclient

DS = "opencave_demo"
TABLES = ["cell_types", "nucleus_detection", "proofreading_status", "synapses"]
VIEWS = ["single_neurons", "synapse_connections"]
POSTGRES = {pa.int64(): "bigint", pa.int32(): "integer", pa.float64(): "double precision", pa.bool_(): "boolean", pa.string(): "character varying"}
SOURCE = 2  # the demo version exported (its first with every table)
CREATED = dt.datetime(2024, 3, 4, 5, 6, 7, 123456)


def forget_caveclient_caches() -> None:
    for value in vars(caveclient.materializationengine.MaterializationClient).values():
        cache = getattr(value, "cache", None)
        if cache is not None:
            cache.clear()


# -- writing CAVE's static-export layout, independently of opencave's export ------------------------
def postgres_text(value: object) -> str:
    """One CSV field as PostgreSQL's COPY … CSV writes it: NULL empty, '' quoted, t/f booleans."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, str):
        if value == "" or any(c in value for c in ',"\n\r'):
            return '"' + value.replace('"', '""') + '"'
        return value
    return str(value)


def write_static(table: pa.Table, data: Path, header: Path, crud: bool) -> None:
    """``table`` as a headerless gzip CSV and its ``column,type`` header file; with ``crud``
    the merged table's ``created``/``deleted``/``superceded_id`` columns lead, as CAVE's do."""
    columns: list[tuple[str, str, list]] = []
    rows = table.to_pylist()
    if crud:
        columns += [
            ("id", "bigint", [r["id"] for r in rows]),
            ("created", "timestamp without time zone", [CREATED + dt.timedelta(seconds=i) for i in range(len(rows))]),
            ("deleted", "timestamp without time zone", [None] * len(rows)),
            ("superceded_id", "bigint", [None] * len(rows)),
        ]
    for field in table.schema:
        if crud and field.name == "id":
            continue
        kind = POSTGRES[field.type]
        values = [r[field.name] for r in rows]
        if field.name.endswith(("_x", "_y", "_z")) and all(v is None or float(v).is_integer() for v in values):
            kind = "integer"  # positions are published as whole voxels
        columns.append((field.name, kind, values))
    header.write_text("".join(f"{name},{kind}\n" for name, kind, _ in columns))
    with gzip.open(data, "wt", newline="") as handle:
        for i in range(len(rows)):
            handle.write(",".join(postgres_text(values[i]) for _, _, values in columns) + "\n")


GAPS = {"cell_types": {"cell_type": ""}, "nucleus_detection": {"volume": None}}


def with_gaps(table: pa.Table, name: str) -> pa.Table:
    """The table with its second row (by id) given NULLs and empty strings, which must survive."""
    table = table.sort_by("id")
    for column, value in GAPS.get(name, {}).items():
        values = table.column(column).to_pylist()
        values[1] = value
        index = table.schema.get_field_index(column)
        table = table.set_column(index, table.schema.field(index), pa.array(values, table.schema.field(index).type))
    return table


@pytest.fixture(scope="module")
def source_files(server):
    return server.data_dir / "versions" / DS / f"v{SOURCE}"


@pytest.fixture(scope="module")
def static_export(source_files, tmp_path_factory) -> Path:
    """Version 2 of the demo in the layout MICrONS publishes, views included."""
    out = tmp_path_factory.mktemp("static-export") / f"v{SOURCE}"
    out.mkdir()
    for name in TABLES:
        table = pq.read_table(source_files / f"{name}.parquet")
        table = with_gaps(table, name)
        write_static(table, out / f"{name}_merged.csv.gz", out / f"{name}_merged_header.csv", crud=True)
    for name in VIEWS:
        table = pq.read_table(source_files / f"view.{name}.parquet")
        write_static(table, out / f"{name}.csv.gz", out / f"{name}_header.csv", crud=False)
    return out


@pytest.fixture(scope="module")
def imported(server, admin_token, static_export):
    forget_caveclient_caches()
    source = CAVEclient(DS, server_address=server.url, auth_token=admin_token)
    stamp = source.materialize.get_version_metadata(SOURCE)["time_stamp"]
    resolution = source.materialize.get_table_metadata("synapses", version=SOURCE)
    xyz = [str(v) for v in resolution["voxel_resolution"]]
    result = server.cli("import", "version", "imported_demo", str(static_export), "--version", "7", "--timestamp", stamp.isoformat(), "--voxel-resolution", *xyz)
    assert "imported version 7 of imported_demo" in result.stdout
    return source, CAVEclient("imported_demo", server_address=server.url, auth_token=admin_token)


def by_id(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("id").reset_index(drop=True) if "id" in frame else frame.reset_index(drop=True)


def demo_frame(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """The source frame as the fixture changed it (``GAPS``)."""
    frame = by_id(frame)
    for column, value in GAPS.get(table, {}).items():
        frame.at[1, column] = value if value is not None or frame[column].dtype == object else float("nan")
    return frame


@pytest.mark.parametrize("table", TABLES)
def test_tables_answer_as_the_source_version(imported, table):
    source, copy = imported
    for options in ({}, {"split_positions": True}, {"desired_resolution": [1, 1, 1]}):
        want = demo_frame(source.materialize.query_table(table, materialization_version=SOURCE, merge_reference=False, **options), table)
        got = by_id(copy.materialize.query_table(table, materialization_version=7, merge_reference=False, **options))
        pd.testing.assert_frame_equal(got, want)


def test_filters_joins_and_counts(imported):
    source, copy = imported
    roots = source.materialize.query_table("synapses", materialization_version=SOURCE, limit=5)["pre_pt_root_id"].tolist()
    query = dict(filter_in_dict={"pre_pt_root_id": roots}, filter_greater_dict={"size": 10})
    want = by_id(source.materialize.query_table("synapses", materialization_version=SOURCE, **query))
    got = by_id(copy.materialize.query_table("synapses", materialization_version=7, **query))
    assert len(want) > 0
    pd.testing.assert_frame_equal(got, want)
    join = [["synapses", "post_pt_root_id"], ["nucleus_detection", "pt_root_id"]]
    gap = sorted(source.materialize.query_table("nucleus_detection", materialization_version=SOURCE)["id"])[1]  # its volume is NULL in the copy
    filters = dict(filter_in_dict={"synapses": {"pre_pt_root_id": roots}}, filter_out_dict={"nucleus_detection": {"id": [gap]}})
    want = source.materialize.join_query(join, materialization_version=SOURCE, **filters)
    got = copy.materialize.join_query(join, materialization_version=7, **filters)
    assert len(want) > 0
    key = [c for c in want.columns if c.startswith("id")]
    pd.testing.assert_frame_equal(got.sort_values(key).reset_index(drop=True), want.sort_values(key).reset_index(drop=True))
    assert copy.materialize.get_annotation_count("synapses", version=7) == source.materialize.get_annotation_count("synapses", version=SOURCE)


def test_views_and_metadata(imported):
    source, copy = imported
    assert sorted(copy.materialize.get_views(version=7)) == VIEWS
    for view in VIEWS:
        want = source.materialize.query_view(view, materialization_version=SOURCE)
        got = copy.materialize.query_view(view, materialization_version=7)
        pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))
    assert copy.materialize.get_versions() == [7]
    assert copy.materialize.get_version_metadata(7)["time_stamp"] == source.materialize.get_version_metadata(SOURCE)["time_stamp"]
    assert sorted(copy.materialize.get_tables(version=7)) == TABLES
    meta = copy.materialize.get_table_metadata("synapses", version=7)
    want = source.materialize.get_table_metadata("synapses", version=SOURCE)
    assert meta["schema"] == want["schema"] and meta["voxel_resolution"] == want["voxel_resolution"]


def test_live_queries_say_why_they_cannot(imported, server, admin_token):
    _, copy = imported
    with pytest.raises(Exception) as caught:
        copy.materialize.live_live_query("synapses", dt.datetime.now(dt.timezone.utc))
    assert "segmentation" in str(caught.value) and "materialization_version" in str(caught.value)
    assert copy.info.get_datastack_info()["segmentation_source"] is None  # so clients know there is no chunkedgraph here


def test_values_in_every_form_postgresql_writes(server, admin_token, imported, static_export, tmp_path):
    """Whole numbers written as ``12.0``, ``true``/``false`` booleans and text holding commas,
    quotes and line breaks import as the plain forms do (whichever way the file is read)."""
    _, copy = imported
    folder = tmp_path / "export"
    shutil.copytree(static_export, folder)
    header = [line.split(",") for line in (folder / "synapses_merged_header.csv").read_text().splitlines()]
    whole = [k for k, (_, kind) in enumerate(header) if kind == "integer"]
    assert whole, "positions are published as whole voxels"
    data = folder / "synapses_merged.csv.gz"
    lines = gzip.decompress(data.read_bytes()).decode().splitlines()
    for number, line in enumerate(lines):
        fields = line.split(",")
        for k in whole:
            fields[k] += ".0"
        fields[[name for name, _ in header].index("valid")] = "true"
        lines[number] = ",".join(fields)
    data.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    cells = folder / "cell_types_merged.csv.gz"
    header = [line.split(",")[0] for line in (folder / "cell_types_merged_header.csv").read_text().splitlines()]
    rows = gzip.decompress(cells.read_bytes()).decode().splitlines()
    fields = rows[0].split(",")
    fields[header.index("cell_type")] = '"basket, ""large""\nlayer 2/3"'
    rows[0] = ",".join(fields)
    cells.write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    xyz = [str(v) for v in copy.materialize.get_table_metadata("synapses", version=7)["voxel_resolution"]]
    server.cli("import", "version", "every_form", str(folder), "--version", "1", "--timestamp", "2024-05-01T00:00:00", "--voxel-resolution", *xyz)
    forget_caveclient_caches()
    forms = CAVEclient("every_form", server_address=server.url, auth_token=admin_token)
    for table in ("synapses", "cell_types"):
        want = by_id(copy.materialize.query_table(table, materialization_version=7))
        if table == "cell_types":
            want.at[want.index[want["id"] == int(fields[header.index("id")])][0], "cell_type"] = 'basket, "large"\nlayer 2/3'
        pd.testing.assert_frame_equal(by_id(forms.materialize.query_table(table, materialization_version=1)), want)


# -- bad input ---------------------------------------------------------------------------------------
def broken_copy(static_export: Path, tmp_path: Path) -> Path:
    out = tmp_path / "export"
    shutil.copytree(static_export, out)
    return out


def import_fails(server, folder: Path, *extra: str) -> str:
    result = server.cli("import", "version", "broken_import", str(folder), "--version", "1", "--timestamp", "2024-05-01T00:00:00", "--voxel-resolution", "4", "4", "40", *extra, check=False)
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    return result.stderr


def assert_nothing_imported(server) -> None:
    assert "broken_import" not in server.cli("datastack", "list").stdout
    assert not (server.data_dir / "versions" / "broken_import").exists() or not any((server.data_dir / "versions" / "broken_import").iterdir())


def test_missing_header_file(server, static_export, tmp_path):
    folder = broken_copy(static_export, tmp_path)
    (folder / "synapses_merged_header.csv").unlink()
    error = import_fails(server, folder)
    assert "synapses_merged_header.csv" in error and "missing" in error
    assert_nothing_imported(server)


def test_header_and_data_disagree(server, static_export, tmp_path):
    folder = broken_copy(static_export, tmp_path)
    header = folder / "nucleus_detection_merged_header.csv"
    header.write_text(header.read_text() + "extra_column,integer\n")
    error = import_fails(server, folder)
    assert "nucleus_detection_merged.csv.gz, row 1" in error and "header file" in error
    assert_nothing_imported(server)


def test_value_of_the_wrong_type(server, static_export, tmp_path):
    folder = broken_copy(static_export, tmp_path)
    data = folder / "synapses_merged.csv.gz"
    lines = gzip.decompress(data.read_bytes()).decode().splitlines()
    header = [line.split(",")[0] for line in (folder / "synapses_merged_header.csv").read_text().splitlines()]
    fields = lines[4].split(",")
    fields[header.index("size")] = "large"
    lines[4] = ",".join(fields)
    data.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    error = import_fails(server, folder)
    assert "synapses_merged.csv.gz, row 5, column size" in error and "'large'" in error
    assert_nothing_imported(server)


def test_unknown_schema_and_table(server, static_export):
    assert "no_such_schema" in import_fails(server, static_export, "--schema", "synapses=no_such_schema")
    assert "no_such_table" in import_fails(server, static_export, "--tables", "synapses,no_such_table")
    assert_nothing_imported(server)


def test_version_that_exists(server, imported, static_export):
    result = server.cli("import", "version", "imported_demo", str(static_export), "--version", "7", "--timestamp", "2024-05-01T00:00:00", "--voxel-resolution", "4", "4", "40", check=False)
    assert result.returncode != 0 and "Version 7 of imported_demo exists already" in result.stderr
    source, copy = imported
    assert copy.materialize.get_versions() == [7]
    # another version of the same datastack imports beside it
    server.cli("import", "version", "imported_demo", str(static_export), "--version", "8", "--timestamp", "2025-06-01T00:00:00", "--voxel-resolution", "8", "8", "40", "--tables", "synapses")
    forget_caveclient_caches()
    assert copy.materialize.get_versions() == [7, 8]
    assert copy.materialize.get_tables(version=8) == ["synapses"]
    assert len(copy.materialize.query_table("synapses", materialization_version=8)) == len(copy.materialize.query_table("synapses", materialization_version=7))


# -- other sources: Parquet/Feather folders, version packages over HTTP ---------------------------------
@pytest.fixture(scope="module")
def file_release(source_files, tmp_path_factory) -> Path:
    """A release as a folder of files, one per table (as FlyWire publishes): synapses as Feather,
    nucleus detections as Parquet with each position as one [x, y, z] column."""
    out = tmp_path_factory.mktemp("file-release")
    synapses = pq.read_table(source_files / "synapses.parquet")
    pa.feather.write_feather(synapses, out / "synapses.feather")
    nuclei = pq.read_table(source_files / "nucleus_detection.parquet")
    for point in ("pt_position", "bb_start_position", "bb_end_position"):
        xyz = [nuclei.column(f"{point}_{a}").to_pylist() for a in "xyz"]
        nuclei = nuclei.drop_columns([f"{point}_{a}" for a in "xyz"]).append_column(point, pa.array([list(v) if None not in v else None for v in zip(*xyz)], pa.list_(pa.float64())))
    pq.write_table(nuclei, out / "nucleus_detection.parquet")
    return out


def test_folder_of_parquet_and_feather_files(server, admin_token, file_release, imported):
    source, _ = imported
    result = server.cli(
        "import", "version", "file_release", str(file_release), "--version", "1", "--timestamp", "2025-01-01T00:00:00",
        "--voxel-resolution", *[str(v) for v in source.materialize.get_table_metadata("synapses", version=SOURCE)["voxel_resolution"]],
        "--schema", "synapses=synapse",
    )
    assert "imported version 1 of file_release" in result.stdout
    forget_caveclient_caches()
    copy = CAVEclient("file_release", server_address=server.url, auth_token=admin_token)
    assert copy.materialize.get_table_metadata("nucleus_detection", version=1)["schema"] == "nucleus_detection"  # inferred
    for table in ("synapses", "nucleus_detection"):
        want = by_id(source.materialize.query_table(table, materialization_version=SOURCE, split_positions=True))
        got = by_id(copy.materialize.query_table(table, materialization_version=1, split_positions=True))
        pd.testing.assert_frame_equal(got, want)


def test_version_package_over_http(server, admin_token, imported, tmp_path):
    import functools
    import http.server
    import threading

    source, _ = imported
    package = tmp_path / "package"
    server.cli("export", DS, "--version", str(SOURCE), "--format", "cave-csv", "--tables", "synapses,cell_types", str(package))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(package))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        result = server.cli("import", "version", "http_release", url, "--version", "3")
    finally:
        httpd.shutdown()
    assert "imported version 3 of http_release" in result.stdout
    forget_caveclient_caches()
    copy = CAVEclient("http_release", server_address=server.url, auth_token=admin_token)
    assert copy.materialize.get_version_metadata(3)["time_stamp"] == source.materialize.get_version_metadata(SOURCE)["time_stamp"]
    want = by_id(source.materialize.query_table("synapses", materialization_version=SOURCE))
    pd.testing.assert_frame_equal(by_id(copy.materialize.query_table("synapses", materialization_version=3)), want)
    assert not list((server.data_dir / "imports").glob("*")), "the download is removed after the import"


def test_killed_import_leaves_nothing_and_runs_again(server, admin_token, tmp_path):
    """An import killed while it writes the version's files leaves no version; killed while it
    writes the clustered copies, the version is whole and answers (the copies are built later)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import duckdb

    folder = tmp_path / "big"
    folder.mkdir()
    rows = 400_000
    columns = ["id", "valid", "pre_pt_supervoxel_id", "pre_pt_root_id", "post_pt_supervoxel_id", "post_pt_root_id", "size"]
    positions = [f"{p}_position_{a}" for p in ("pre_pt", "post_pt", "ctr_pt") for a in "xyz"]
    select = (
        "SELECT i AS id, 't' AS valid, i * 7 AS pre_pt_supervoxel_id, 1000 + i % 500 AS pre_pt_root_id, i * 11 AS post_pt_supervoxel_id, "
        "2000 + i % 700 AS post_pt_root_id, i % 97 AS size, " + ", ".join(f"(i * {k + 3}) % 9000 AS {name}" for k, name in enumerate(positions))
        + f" FROM range(1, {rows + 1}) t(i)"
    )
    duckdb.sql(f"COPY ({select}) TO '{folder / 'synapses_merged.csv.gz'}' (HEADER false, COMPRESSION gzip)")
    types = {"valid": "boolean", "size": "integer"}
    (folder / "synapses_merged_header.csv").write_text("".join(f"{c},{types.get(c, 'bigint')}\n" for c in columns + positions))
    command = [sys.executable, "-m", "opencave", "import", "version", "killed_import", str(folder), "--version", "4",
               "--timestamp", "2024-05-01T00:00:00", "--voxel-resolution", "4", "4", "40", *server.storage_args()]

    def kill_when(written) -> None:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 120
        while not written() and process.poll() is None and time.time() < deadline:
            time.sleep(0.002)
        assert process.poll() is None, f"the import ended before it was killed: {process.stdout.read()}"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        forget_caveclient_caches()

    def versions() -> list[int]:
        if "killed_import" not in server.cli("datastack", "list").stdout:
            return []  # killed before the datastack was made
        return CAVEclient("killed_import", server_address=server.url, auth_token=admin_token).materialize.get_versions()

    def complete() -> None:
        forget_caveclient_caches()
        copy = CAVEclient("killed_import", server_address=server.url, auth_token=admin_token)
        frame = copy.materialize.query_table("synapses", materialization_version=4, select_columns=["id"])
        assert len(frame) == rows and frame["id"].is_unique
        one = copy.materialize.query_table("synapses", materialization_version=4, filter_equal_dict={"post_pt_root_id": 2003})
        assert len(one) == len(range(3, rows + 1, 700))

    # killed while the version's file is written (checked as it is read): no version
    kill_when(lambda: any((server.data_dir / "imports").glob("*/kept/*.partial")))
    assert versions() == []
    # killed while the copies clustered by root id are written: the version is there, whole
    version_dir = server.data_dir / "versions" / "killed_import" / "v4"
    kill_when(lambda: any(version_dir.glob("*.by_*.partial-*")))  # a copy's, not a file written before publishing
    assert versions() == [4]
    complete()
    # the copies are built later, by this call or by the server's periodic job, whichever comes
    # first (the server's may already have run); run again, the import says the version is there
    result = server.cli("import", "version", "killed_import", str(folder), "--version", "4", "--timestamp", "2024-05-01T00:00:00", "--voxel-resolution", "4", "4", "40", check=False)
    assert result.returncode != 0 and "exists already" in result.stderr
    from opencave.services.materialize.clustering import ensure_clustered
    from opencave.storage.snapshots import clustered_name

    copies = [version_dir / clustered_name("synapses.parquet", c) for c in ("pre_pt_root_id", "post_pt_root_id")]
    deadline = time.time() + 120
    while not all(p.exists() for p in copies) and time.time() < deadline:
        ensure_clustered(version_dir, "synapses.parquet", ["pre_pt_root_id", "post_pt_root_id"])
        time.sleep(0.5)
    assert all(p.exists() for p in copies)
    complete()
    assert [p.name for p in (server.data_dir / "imports").iterdir()] == [], "the killed imports' work folders are gone"


def test_repeated_ids(server, static_export, tmp_path):
    folder = broken_copy(static_export, tmp_path)
    data = folder / "synapses_merged.csv.gz"
    lines = gzip.decompress(data.read_bytes()).decode().splitlines()
    lines.append(lines[2])  # row 3's id again, as the last row
    data.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    error = import_fails(server, folder)
    repeated = lines[2].split(",")[0]
    assert f"id {repeated} in" in error and "synapses_merged.csv.gz, row 3" in error and f"row {len(lines)}" in error
    assert_nothing_imported(server)
