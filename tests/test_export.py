"""Exporting a version: as Parquet datasets (the version package) the parts hold exactly the
version's rows and describe themselves; as a CAVE static export every value is written as
PostgreSQL writes it (t/f, NULL empty and unquoted, '' quoted, six-digit timestamps, floats that
read back identically) with the right header types. Bad input fails with one clear error and
leaves nothing behind. Runs on SQLite and PostgreSQL stores holding the demo datastack, plus a
view made to hold every awkward value.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opencave.cli import main
from opencave.config import resolve_settings
from opencave.errors import BadRequest, NotFound
from opencave.runtime import Runtime
from opencave.services.transfer import export as export_module
from opencave.services.transfer.export import VersionExporter
from opencave.services.transfer.package import MANIFEST, PARQUET_KEY, entry_files, read_package

DS = "opencave_demo"
TABLES = ["cell_types", "nucleus_detection", "proofreading_status", "synapses"]
VIEWS = ["edge_cases", "single_neurons", "synapse_connections"]
# A view of the values whose text forms matter: NULL and '' strings, quotes, commas and line
# breaks, timestamps, NULL booleans, the extremes of float64, -0.0. (NaN and infinities, which
# imports refuse as values, and float32, which no frozen table holds, are checked on text alone.)
EDGE_CASES = """
SELECT id,
  CASE WHEN id % 4 = 0 THEN NULL WHEN id % 4 = 1 THEN '' WHEN id % 4 = 2 THEN 'say "hi", then
go' ELSE 'plain' END AS note,
  TIMESTAMP '2024-03-04 05:06:07.123456' + to_microseconds(id * 1000003) AS seen,
  CASE WHEN id % 5 = 0 THEN NULL ELSE id % 2 = 0 END AS even,
  CASE id WHEN 1 THEN 1e-300 WHEN 2 THEN -2.2250738585072014e-308 WHEN 3 THEN 0.1
    WHEN 4 THEN 1.7976931348623157e308 WHEN 5 THEN 5e-324 WHEN 6 THEN -0.0 WHEN 7 THEN NULL
    ELSE size / 7 END AS ratio,
  CAST(id AS INTEGER) AS small,
  CASE WHEN id % 6 = 0 THEN NULL ELSE pre_pt_root_id END AS maybe_root
FROM synapses WHERE id <= 200 ORDER BY id
"""
POSTGRES_TYPES = {
    pa.int64(): "bigint",
    pa.int32(): "integer",
    pa.float64(): "double precision",
    pa.float32(): "real",
    pa.bool_(): "boolean",
    pa.string(): "character varying",
    pa.timestamp("us"): "timestamp without time zone",
}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request, tmp_path_factory, database_for):
    """A store with the demo datastack and a newest version that also holds ``edge_cases``."""
    root = tmp_path_factory.mktemp(f"export-{request.param}")
    runtime = Runtime.open(resolve_settings(str(root / "data"), database_for(request.param)))
    runtime.initialise(with_demo=True)
    runtime.views.define(DS, "edge_cases", EDGE_CASES, "values whose text forms matter", (8.0, 8.0, 40.0))
    version = runtime.materializer.create_version(DS)
    yield runtime, version
    runtime.close()


@pytest.fixture
def exports(tmp_path) -> Path:
    """An empty directory to export into (``tmp_path`` also holds the test's home)."""
    directory = tmp_path / "exports"
    directory.mkdir()
    return directory


def storage_args(runtime) -> list[str]:
    settings = runtime.settings
    args = ["--data-dir", str(settings.data_dir)]
    if not settings.database_url.startswith("sqlite"):
        args += ["--database", settings.database_url]
    return args


def identical(a: pa.Table, b: pa.Table) -> bool:
    """Same column names, types and values, floats compared bit for bit (NaN equals NaN, -0.0 is
    not 0.0). Whether a Parquet column is declared nullable is not part of its data."""
    if [(f.name, f.type) for f in a.schema] != [(f.name, f.type) for f in b.schema]:
        return False
    for x, y in zip(a.columns, b.columns):
        x, y = x.combine_chunks(), y.combine_chunks()
        if pa.types.is_floating(x.type):
            width = pa.int64() if x.type == pa.float64() else pa.int32()
            x, y = x.view(width), y.view(width)
        if not x.equals(y):
            return False
    return True


def frozen(runtime, version, name: str) -> tuple[object, pa.Table]:
    """A table or view of the version as registered, and its rows as stored."""
    registry = runtime.materializer.registry
    found = {t.table_name: t for t in registry.tables(version) + registry.tables(version, "view")}[name]
    return found, pq.read_table(Path(version.location) / found.file)


# -- Parquet ---------------------------------------------------------------------------------------
def test_parquet_export_is_the_version_exactly(store, exports):
    runtime, version = store
    out = exports / "package"
    seen: dict[str, list[int]] = {}
    summary = VersionExporter(runtime.materialize).export(
        DS, version.version, out, "parquet", progress=lambda entry, rows: seen.setdefault(entry.name, []).append(rows)
    )

    package = read_package(out)
    assert package is not None and package.files == "parquet"
    assert (package.datastack, package.version, package.time_stamp) == (DS, version.version, version.time_stamp)
    assert [t.name for t in package.tables] == TABLES + VIEWS
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["format"] == "opencave-version" and manifest["format_version"] == 1
    assert manifest["time_stamp"] == version.time_stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")

    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    expected = [MANIFEST] + [f"tables/{t}/part-00000.parquet" for t in TABLES] + [f"views/{v}/part-00000.parquet" for v in VIEWS]
    assert written == sorted(expected)  # no clustered copies, nothing else
    assert not [p for p in exports.iterdir() if p.name != "package"], "a partial directory was left beside the export"

    for entry in package.tables:
        registered, rows = frozen(runtime, version, entry.name)
        assert entry.kind == registered.kind and entry.schema == registered.schema
        assert entry.row_count == registered.row_count == rows.num_rows
        assert entry.metadata == registered.metadata
        assert entry.path == ("tables/" if entry.kind == "table" else "views/") + entry.name
        files = entry_files(out, entry)
        for file in files:
            described = json.loads(pq.read_schema(file).metadata[PARQUET_KEY])
            assert described == {k: v for k, v in manifest["tables"][package.tables.index(entry)].items() if k != "path"}
        exported = pa.concat_tables(pq.read_table(f) for f in files).replace_schema_metadata(None)
        source = rows.replace_schema_metadata(None)
        if "id" in source.column_names:
            exported, source = exported.sort_by("id"), source.sort_by("id")
        assert identical(exported, source), entry.name
        if rows.num_rows:
            assert seen[entry.name][-1] == rows.num_rows
    assert summary.rows == sum(t.row_count for t in package.tables)
    assert [t.name for t in summary.tables] == TABLES + VIEWS


def test_parquet_parts_split_large_tables(tmp_path, monkeypatch):
    """Parts hold whole row groups up to ``PART_ROWS`` rows, in id order, and an empty table
    still gets one part carrying its columns."""
    source = tmp_path / "t.parquet"
    table = pa.table({"id": pa.array(range(1, 10_001), pa.int64()), "name": pa.array([f"n{i % 7}" for i in range(10_000)])})
    pq.write_table(table, source, row_group_size=1000)
    monkeypatch.setattr(export_module, "PART_ROWS", 3000)
    entry = export_module.PackageTable("t", "table", None, 10_000, "tables/t")
    parts = export_module._write_parquet(source, tmp_path / "out", entry, lambda e, r: None)
    assert [p.name for p in parts] == [f"part-0000{i}.parquet" for i in range(4)]
    assert [pq.ParquetFile(p).metadata.num_rows for p in parts] == [3000, 3000, 3000, 1000]
    assert pa.concat_tables(pq.read_table(p) for p in parts).replace_schema_metadata(None).equals(table)

    empty = tmp_path / "e.parquet"
    pq.write_table(table.slice(0, 0), empty)
    parts = export_module._write_parquet(empty, tmp_path / "empty", entry, lambda e, r: None)
    assert len(parts) == 1 and pq.read_table(parts[0]).num_rows == 0
    assert pq.read_schema(parts[0]).names == ["id", "name"]


# -- CAVE static export ------------------------------------------------------------------------------
def csv_records(text: str) -> list[list[str | None]]:
    """Fields of CSV text, telling an unquoted empty field (None: NULL) from a quoted one."""
    records: list[list[str | None]] = []
    fields: list[str | None] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == '"':
            value, i = [], i + 1
            while True:
                end = text.index('"', i)
                value.append(text[i:end])
                if text[end + 1 : end + 2] == '"':
                    value.append('"')
                    i = end + 2
                else:
                    i = end + 1
                    break
            fields.append("".join(value))
        else:
            end = i
            while end < n and text[end] not in ",\n":
                end += 1
            fields.append(text[i:end] or None)
            i = end
        assert i == n or text[i] in ",\n", f"garbage after a field at {i}"
        if i < n and text[i] == "\n":
            records.append(fields)
            fields = []
        i += 1
    assert not fields, "the last line must end with a newline"
    return records


def same_float(text: str, value: float, dtype: pa.DataType) -> bool:
    if math.isnan(value):
        return text == "NaN"
    if math.isinf(value):
        return text == ("Infinity" if value > 0 else "-Infinity")
    parsed = float(text)
    if dtype == pa.float32():
        return struct.pack("<f", parsed) == struct.pack("<f", value)
    return struct.pack("<d", parsed) == struct.pack("<d", value)  # bit for bit: -0.0 stays -0.0


def check_field(text: str | None, value: object, dtype: pa.DataType, where: str) -> None:
    if value is None:
        assert text is None, f"{where}: NULL must be an empty unquoted field, got {text!r}"
    elif pa.types.is_boolean(dtype):
        assert text == ("t" if value else "f"), where
    elif pa.types.is_floating(dtype):
        assert text is not None and same_float(text, value, dtype), f"{where}: {text!r} is not {value!r}"
    elif pa.types.is_timestamp(dtype):
        assert text == value.strftime("%Y-%m-%d %H:%M:%S.%f"), where
    else:
        assert text == str(value), where  # quoted or not, the value itself ('' stays '')


def test_cave_csv_export_writes_postgres_text(store, exports):
    runtime, version = store
    out = exports / "static"
    VersionExporter(runtime.materialize).export(DS, version.version, out, "cave-csv")

    expected = {MANIFEST}
    expected |= {f"{t}_merged.csv.gz" for t in TABLES} | {f"{t}_merged_header.csv" for t in TABLES}
    expected |= {f"{v}.csv.gz" for v in VIEWS} | {f"{v}_header.csv" for v in VIEWS}
    assert {p.name for p in out.iterdir()} == expected
    package = read_package(out)
    assert package is not None and package.files == "cave-csv" and package.version == version.version
    assert [(t.name, t.path) for t in package.tables] == [(t, f"{t}_merged.csv.gz") for t in TABLES] + [(v, f"{v}.csv.gz") for v in VIEWS]

    for entry in package.tables:
        registered, rows = frozen(runtime, version, entry.name)
        assert (entry.schema, entry.row_count, entry.metadata) == (registered.schema, rows.num_rows, registered.metadata)
        header = (out / (f"{entry.name}_merged_header.csv" if entry.kind == "table" else f"{entry.name}_header.csv")).read_text()
        assert header == "".join(f"{f.name},{POSTGRES_TYPES[f.type]}\n" for f in rows.schema), entry.name
        stream = zlib.decompressobj(31)  # one gzip member, whole: what any gzip reader takes
        raw = stream.decompress((out / entry.path).read_bytes()).decode()
        assert stream.eof and not stream.unused_data
        records = csv_records(raw)
        assert len(records) == rows.num_rows, entry.name
        for number, (record, row) in enumerate(zip(records, rows.to_pylist()), 1):
            assert len(record) == rows.num_columns
            for text, field in zip(record, rows.schema):
                check_field(text, row[field.name], field.type, f"{entry.path} row {number} column {field.name}")

    raw = gzip.decompress((out / "edge_cases.csv.gz").read_bytes()).decode()
    assert raw.startswith('1,"",2024-03-04 05:06:08.123459,f,1e-300,'), raw[:80]  # '' quoted, NULL not
    assert '\n4,,2024-03-04 05:06:11.123468,t,1.7976931348623157e+308,' in raw
    assert '\n2,"say ""hi"", then\ngo",' in raw


def test_batches_deflated_apart_make_one_stream(store, exports, monkeypatch):
    """Batches are deflated on several threads; their blocks join into one gzip stream whose
    text is the same however the rows were cut into batches."""
    runtime, version = store
    exporter = VersionExporter(runtime.materialize)
    exporter.export(DS, version.version, exports / "whole", "cave-csv", tables=["synapses"])
    monkeypatch.setattr(export_module, "BATCH_ROWS", 999)
    exporter.export(DS, version.version, exports / "cut", "cave-csv", tables=["synapses"])
    whole, cut = ((exports / d / "synapses_merged.csv.gz").read_bytes() for d in ("whole", "cut"))
    stream = zlib.decompressobj(31)
    text = stream.decompress(cut)
    assert stream.eof and not stream.unused_data
    assert text == gzip.decompress(whole) and text.count(b"\n") == frozen(runtime, version, "synapses")[1].num_rows


def test_csv_text_of_every_type():
    """The text forms outside the demo's types: time zones in UTC, dates, float32, NaN and
infinities as PostgreSQL spells them, one column."""
    batch = pa.record_batch(
        {
            "at": pa.array([0, 1_500_000_000, None], pa.timestamp("ns", tz="Europe/Paris")),
            "day": pa.array([0, 19_000, None], pa.date32()),
            "x": pa.array([0.1, float("nan"), None], pa.float32()),
            "y": pa.array([float("inf"), -float("inf"), 2.5]),
            "word": pa.array(["\\.", "a\rb", "t"]),
        }
    )
    text = bytes(export_module.csv_lines(batch)).decode()
    assert text == '1970-01-01 00:00:00.000000+00,1970-01-01,0.1,Infinity,"\\."\n1970-01-01 00:00:01.500000+00,2022-01-08,NaN,-Infinity,"a\rb"\n,,,2.5,t\n'
    assert export_module.header_lines(batch.schema, "t") == (
        "at,timestamp with time zone\nday,date\nx,real\ny,double precision\nword,character varying\n"
    )
    assert bytes(export_module.csv_lines(pa.record_batch({"s": pa.array([None, ""])}))) == b'\n""\n'
    with pytest.raises(BadRequest, match="column 'l'.*--format parquet"):
        export_module.header_lines(pa.schema([("l", pa.list_(pa.int64()))]), "view 'v'")


def test_float_text_reads_back_identically():
    values = [0.1, 1 / 3, 2.0**-1074, 1.7976931348623157e308, 123456789.125, -0.0, 1e15, 1e16, 1e-5, 6.02214076e23]
    values += list(struct.unpack("<64d", os.urandom(8 * 64)))
    values = [v for v in values if math.isfinite(v)]
    text = bytes(export_module.csv_lines(pa.record_batch({"x": pa.array(values, pa.float64())}))).decode()
    assert [struct.pack("<d", float(line)) for line in text.splitlines()] == [struct.pack("<d", v) for v in values]


def test_whole_doubles_print_as_postgres_does():
    """Whole numbers below 10^15 print as their digits; -0.0 and larger ones keep a float's text."""
    def text(values: list) -> list[str]:
        return bytes(export_module.csv_lines(pa.record_batch({"x": pa.array(values, pa.float64())}))).decode().splitlines()

    assert text([205041.0, -3.0, 0.0, None, 5e14]) == ["205041", "-3", "0", "", "500000000000000"]
    assert text([1.0, -0.0]) == ["1", "-0"]
    assert text([2.0, 1e15]) == ["2", "1e+15"]
    assert text([2.0, 0.5]) == ["2", "0.5"]


def test_selected_tables_only(store, exports):
    runtime, version = store
    out = exports / "two"
    summary = VersionExporter(runtime.materialize).export(DS, version.version, out, "cave-csv", tables=["synapse_connections", "cell_types"])
    assert [t.name for t in summary.tables] == ["synapse_connections", "cell_types"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MANIFEST, "cell_types_merged.csv.gz", "cell_types_merged_header.csv", "synapse_connections.csv.gz", "synapse_connections_header.csv"]
    )


# -- bad input ---------------------------------------------------------------------------------------
def test_bad_input_writes_nothing(store, exports):
    runtime, version = store
    exporter = VersionExporter(runtime.materialize)
    out = exports / "out"
    with pytest.raises(NotFound, match=r"Version 999 not found in datastack opencave_demo; available versions are \[1, 2, 3"):
        exporter.export(DS, 999, out)
    with pytest.raises(NotFound, match="no table or view named nope; its tables are .*'synapses'.* and its views .*'edge_cases'"):
        exporter.export(DS, version.version, out, tables=["synapses", "nope"])
    with pytest.raises(NotFound, match="no_such_stack"):
        exporter.export("no_such_stack", 1, out)
    with pytest.raises(BadRequest, match="Unknown export format 'csv'"):
        exporter.export(DS, version.version, out, "csv")
    assert list(exports.iterdir()) == []

    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(BadRequest, match="is not empty"):
        exporter.export(DS, version.version, out)
    (exports / "file").write_text("a file")
    with pytest.raises(BadRequest, match="is a file"):
        exporter.export(DS, version.version, exports / "file")
    assert sorted(p.name for p in exports.iterdir()) == ["file", "out"]
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and (out / "mine.txt").read_text() == "keep me"

    empty = exports / "empty"
    empty.mkdir()
    exporter.export(DS, version.version, empty, tables=["cell_types"])  # an empty directory is fine
    assert (empty / MANIFEST).is_file()


def test_failure_midway_leaves_nothing(store, exports, monkeypatch):
    runtime, version = store
    real = export_module._write_csv_gz
    calls = []

    def fail_on_second(source, path, entry, say):
        calls.append(entry.name)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(source, path, entry, say)

    monkeypatch.setattr(export_module, "_write_csv_gz", fail_on_second)
    with pytest.raises(OSError, match="No space left"):
        VersionExporter(runtime.materialize).export(DS, version.version, exports / "out", "cave-csv")
    assert calls == TABLES[:2] and list(exports.iterdir()) == []


def test_abandoned_partial_exports_are_removed(store, exports):
    """A killed export leaves its hidden partial directory; the next export to the same place
    removes it (a live one's is left alone)."""
    runtime, version = store
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    abandoned = exports / f".out.partial-{dead.stdout.strip()}-0000"
    alive = exports / f".out.partial-{os.getppid()}-0000"
    for directory in (abandoned, alive):
        (directory / "tables").mkdir(parents=True)
    VersionExporter(runtime.materialize).export(DS, version.version, exports / "out", tables=["cell_types"])
    assert sorted(p.name for p in exports.iterdir()) == sorted([alive.name, "out"])


# -- the command -------------------------------------------------------------------------------------
def test_command(store, exports, capsys):
    runtime, version = store
    out = exports / "cli"
    code = main(["export", DS, "--version", str(version.version), "--format", "cave-csv", str(out), "--tables", "synapses", *storage_args(runtime)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert f"exported version {version.version} of {DS} (cave-csv) to {out}: 1 table(s), 0 view(s), " in printed.out
    assert "table synapses:" in printed.out and "synapses" in printed.err  # the progress bar
    assert (out / "synapses_merged.csv.gz").is_file()

    for args, message in (
        (["--version", "999", str(exports / "a")], "error: Version 999 not found in datastack opencave_demo; available versions are [1, 2, 3"),
        (["--version", str(version.version), str(exports / "a"), "--tables", "nope"], "error: Version"),
        (["--version", str(version.version), str(out)], "is not empty"),
    ):
        assert main(["export", DS, *args, *storage_args(runtime)]) != 0
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (exports / "a").exists()


# -- round trip ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("format", ["parquet", "cave-csv"])
def test_export_import_round_trip(store, exports, format):
    """An export imported as a new datastack gives back the version: its number and moment,
    every table's and view's rows, columns and types (floats bit for bit), schema and metadata."""
    runtime, version = store
    out = exports / format
    VersionExporter(runtime.materialize).export(DS, version.version, out, format)
    copy = f"copy_{format.replace('-', '_')}"
    imported = runtime.imports.import_version(copy, str(out))
    assert (imported.datastack, imported.version, imported.time_stamp) == (copy, version.version, version.time_stamp)
    registry = runtime.materializer.registry
    assert [t.table_name for t in registry.tables(imported)] == TABLES
    assert [t.table_name for t in registry.tables(imported, "view")] == VIEWS
    for name in TABLES + VIEWS:
        source, source_rows = frozen(runtime, version, name)
        copied, copied_rows = frozen(runtime, imported, name)
        assert (copied.kind, copied.schema, copied.row_count) == (source.kind, source.schema, source.row_count)
        # every value the version gave comes back (the aligned volume is the copy's own; what the
        # version left empty, e.g. last_updated, an import may fill in)
        given = {k: v for k, v in source.metadata.items() if v is not None and k != "aligned_volume"}
        assert {k: copied.metadata.get(k) for k in given} == given, name
        if copied.kind == "table":
            assert copied.metadata["aligned_volume"] == runtime.info.aligned_volume_of(copy)
        source_rows, copied_rows = source_rows.replace_schema_metadata(None), copied_rows.replace_schema_metadata(None)
        if "id" in source_rows.column_names:
            source_rows, copied_rows = source_rows.sort_by("id"), copied_rows.sort_by("id")
        assert identical(copied_rows, source_rows), (name, copied_rows.schema, source_rows.schema)
