"""``opencave mirror``: a version copied from one ``opencave serve`` (answers capped at 10,000
rows) into another store arrives complete, and an interrupted mirror finishes when run again.

Source and copy are compared as the materialization service answers them (every row and
column of every table and view), on both storage engines.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opencave.config import resolve_settings
from opencave.errors import BadRequest, NotFound
from opencave.runtime import Runtime
from opencave.services.materialize.requests import QueryOptions
from opencave.services.transfer import mirror as mirror_module
from opencave.services.transfer.mirror import Mirror, part_name, parse_part, staging_directory
from opencave.services.transfer.mirror_remote import Bound, RemoteVersion
from opencave.services.transfer.package import read_package
from opencave.wire.materialize_query import TableQueryBody

DS = "opencave_demo"
VERSION = 3
ROW_CAP = 10_000


@pytest.fixture(scope="module")
def source(backend, server_factory):
    return server_factory(backend, "--row-limit", str(ROW_CAP))


@pytest.fixture(scope="module")
def token(source) -> str:
    return source.new_token()


@pytest.fixture
def destination(tmp_path, backend, database_for) -> list[str]:
    """Storage options of an empty store to mirror into."""
    options = ["--data-dir", str(tmp_path / "copy")]
    database = database_for(backend)
    return options + (["--database", database] if database else [])


def _open(options: list[str]) -> Runtime:
    data_dir = options[options.index("--data-dir") + 1]
    database = options[options.index("--database") + 1] if "--database" in options else None
    return Runtime.open(resolve_settings(data_dir, database))


def answers(runtime: Runtime, datastack: str = DS, version: int = VERSION) -> dict[str, pa.Table]:
    """Every table and view of a version as the service answers a query for all its rows."""
    service = runtime.materialize
    out = {}
    for kind, names in (("table", service.table_names(datastack, version)), ("view", list(service.views_of(datastack, version)))):
        for name in names:
            found = service.frozen_table(datastack, version, name, kind=kind)
            table = service.query_table(found, TableQueryBody().decode(), QueryOptions(), rescale=True).table()
            out[name] = table.sort_by([(c, "ascending") for c in table.column_names])
    return out


def source_answers(source) -> dict[str, pa.Table]:
    runtime = _open(source.storage_args())
    try:
        return answers(runtime)
    finally:
        runtime.close()


def mirror_cli(source, token: str, destination: list[str], *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "opencave", "mirror", source.url, DS, "--token", token, *extra, *destination],
        capture_output=True,
        text=True,
        timeout=600,
    )


def assert_copy_complete(source, destination: list[str], datastack: str = DS) -> None:
    expected = source_answers(source)
    runtime = _open(destination)
    try:
        got = answers(runtime, datastack)
        ids = {name: table.column("id").to_pylist() for name, table in got.items() if "id" in table.column_names}
    finally:
        runtime.close()
    assert sorted(got) == sorted(expected)
    assert expected["synapses"].num_rows > ROW_CAP  # the cap really had to be worked around
    for name, table in expected.items():
        assert got[name].num_rows == table.num_rows, name
        assert got[name].equals(table.cast(got[name].schema)), name
    for name, values in ids.items():
        assert len(values) == len(set(values)), f"{name} holds duplicate ids"


def test_mirror_copies_every_table_and_view_past_the_row_cap(source, token, destination):
    result = mirror_cli(source, token, destination, "--version", str(VERSION), "--as", "copied")
    assert result.returncode == 0, result.stderr
    assert "version 3 of copied is available" in result.stdout
    assert "answers at most 10,000 rows per query" in result.stderr
    assert_copy_complete(source, destination, "copied")
    data_dir = Path(destination[1])
    assert not (data_dir / "mirrors").exists()  # the staging is removed once imported
    again = mirror_cli(source, token, destination, "--version", str(VERSION), "--as", "copied")
    assert again.returncode != 0 and "version 3 of copied exists here already" in again.stderr


def test_a_killed_mirror_finishes_when_run_again_without_duplicates(source, token, destination, tmp_path):
    """A mirror fetching 500 rows per request is killed once some ranges are staged; the
    command run again (10,000 rows per request) fetches only what no part covers."""
    staging = staging_directory(Path(destination[1]), DS, VERSION)
    script = (
        "import sys\n"
        "from opencave.services.transfer.mirror import Mirror\n"
        "from opencave.services.transfer.mirror_remote import RemoteVersion\n"
        f"remote = RemoteVersion({source.url!r}, {DS!r}, {token!r})\n"
        f"Mirror(remote, {VERSION}, {str(staging)!r}, threads=1, max_request_rows=500).stage()\n"
    )
    killed = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    synapse_parts = staging / "tables" / "synapses"
    deadline = time.time() + 300
    while time.time() < deadline and killed.poll() is None and len(list(synapse_parts.glob("part-*.parquet"))) < 5:
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.read()
    staged = sorted(p.name for p in synapse_parts.glob("part-*.parquet"))
    assert len(staged) >= 5 and read_package(staging) is None  # interrupted midway
    result = mirror_cli(source, token, destination)
    assert result.returncode == 0, result.stderr
    assert "staged before" in result.stderr
    assert_copy_complete(source, destination)


def test_ranges_are_verified_and_a_cut_answer_is_split_again(source, token, tmp_path):
    """A range asked for whole comes back cut at the cap; it is split by counts and every row
    arrives once. The part names give back their ranges."""
    remote = RemoteVersion(source.url, DS, token)
    mirror = Mirror(remote, VERSION, tmp_path / "stage")
    total = remote.count(VERSION, "table", "synapses")
    whole = (Bound("id", 0, 2**40),)
    answer = remote.rows(VERSION, "table", "synapses", whole)
    assert answer.truncated and answer.rows.num_rows == ROW_CAP
    source_entry = mirror._table_source("synapses", {"schema": "synapse", "table_name": "synapses"})
    got: dict[tuple[Bound, ...], pa.Table] = {}
    mirror._fetch(source_entry, whole, total, lambda bounds, rows: got.setdefault(bounds, rows))
    assert mirror.cap == ROW_CAP
    assert sum(t.num_rows for t in got.values()) == total
    ids = pa.concat_tables(got.values()).column("id").to_pylist()
    assert len(set(ids)) == total
    for bounds, rows in got.items():
        assert all(bounds[0].lo < i <= bounds[0].hi for i in rows.column("id").to_pylist())
        assert parse_part(part_name(bounds), ("id",)) == bounds


def test_views_without_an_id_split_on_their_integer_columns_and_resume(source, token, tmp_path, monkeypatch):
    """A view of (pre, post) root pairs is cut on ``pre_pt_root_id``, and a root with more rows
    than one answer holds on ``post_pt_root_id`` within it. With half the parts lost before they
    were merged, a re-run fetches what is missing, then merges the parts into one file."""
    remote = RemoteVersion(source.url, DS, token)
    stage = tmp_path / "stage"
    monkeypatch.setattr(mirror_module, "GROUP_REQUESTS", 1)  # every range counted: 3 rows per request act as a cap
    with monkeypatch.context() as patch:
        patch.setattr(Mirror, "_merge", lambda self, source, directory: None)  # stop before the parts are joined
        package = Mirror(remote, VERSION, stage, max_request_rows=3).stage(["synapse_connections", "cell_types"])
    assert [t.name for t in package.tables] == ["cell_types", "synapse_connections"]
    view = package.tables[1]
    parts = sorted((stage / view.path).glob("part-*.parquet"))
    assert len(parts) > 1 and any("~" in p.name for p in parts)  # some ranges were cut on the second column
    for lost in parts[::2]:
        lost.unlink()
    (stage / "version.json").unlink()
    again = Mirror(remote, VERSION, stage, max_request_rows=3).stage(["synapse_connections"])
    merged = list((stage / view.path).glob("part-*.parquet"))
    assert len(merged) == 1 and "~" not in merged[0].name
    rows = pq.read_table(merged[0])
    assert rows.num_rows == view.row_count == again.tables[0].row_count
    pairs = list(zip(rows.column("pre_pt_root_id").to_pylist(), rows.column("post_pt_root_id").to_pylist()))
    assert len(set(pairs)) == len(pairs) and pairs == sorted(pairs)  # in range order
    manifest = json.loads((stage / "version.json").read_text())
    assert manifest["version"] == VERSION and [t["name"] for t in manifest["tables"]] == ["synapse_connections"]


def test_parts_a_merged_part_covers_are_dropped_on_a_rerun(source, token, tmp_path, monkeypatch):
    """A run that stopped after writing a merged part but before deleting the parts it replaces
    leaves both; the next run keeps only the merged part, so no row is there twice."""
    remote = RemoteVersion(source.url, DS, token)
    stage = tmp_path / "stage"
    with monkeypatch.context() as patch:
        patch.setattr(Mirror, "_merge", lambda self, source, directory: None)
        Mirror(remote, VERSION, stage, max_request_rows=2_000).stage(["synapses"])
    directory = stage / "tables" / "synapses"
    parts = {p.name: p.read_bytes() for p in directory.glob("part-*.parquet")}
    assert len(parts) > 5
    Mirror(remote, VERSION, stage, max_request_rows=2_000).stage(["synapses"])
    assert len(list(directory.glob("part-*.parquet"))) == 1
    for name, data in list(parts.items())[:3]:  # as if the deletes had not happened
        (directory / name).write_bytes(data)
    package = Mirror(remote, VERSION, stage, max_request_rows=2_000).stage(["synapses"])
    files = list(directory.glob("part-*.parquet"))
    assert len(files) == 1
    ids = pq.read_table(files[0], columns=["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == package.tables[0].row_count and ids == sorted(ids)


def test_errors_name_the_server_and_what_to_fix(source, token, tmp_path, destination):
    with pytest.raises(NotFound, match="no table or view nope"):
        Mirror(RemoteVersion(source.url, DS, token), VERSION, tmp_path / "s").stage(["nope"])
    assert not (tmp_path / "s").exists()
    cases = [
        ([source.url, DS, "--token", "0" * 32], "did not accept the token given with --token"),
        ([source.url, DS], "without a token"),
        ([source.url, "nosuch", "--token", token], "nosuch"),
        ([source.url, DS, "--version", "99", "--token", token], "Version 99"),
        (["http://127.0.0.1:9", DS, "--token", token], "cannot reach http://127.0.0.1:9"),
    ]
    for args, message in cases:
        result = subprocess.run([sys.executable, "-m", "opencave", "mirror", *args, *destination], capture_output=True, text=True, timeout=120)
        assert result.returncode != 0
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and message in lines[0], result.stderr
        assert "Traceback" not in result.stderr


def test_an_answer_that_disagrees_with_its_count_fails_loudly(source, token, tmp_path):
    remote = RemoteVersion(source.url, DS, token)
    mirror = Mirror(remote, VERSION, tmp_path / "stage")
    entry = mirror._table_source("synapses", {"schema": "synapse", "table_name": "synapses"})
    with pytest.raises(BadRequest, match=r"table synapses, rows id in \(0, 20\]: the server sent 20 rows but counted 5"):
        mirror._fetch(entry, (Bound("id", 0, 20),), 5, lambda bounds, rows: None)
