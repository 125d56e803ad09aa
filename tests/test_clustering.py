"""Clustered copies built after a version is published, on SQLite and PostgreSQL: queries answer
the same rows without them, ``heal`` rebuilds them as the materializer wrote them, the
server's background job does so on its own, one builder works on a table at a time (a dead
builder's lock is taken over, a live one's respected), and no partial file is ever left."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opencave.demo.registration import DEMO_DATASTACK
from opencave.services.materialize.clustering import ensure_clustered, heal, lock_name
from opencave.services.materialize.requests import QueryOptions
from opencave.services.materialize.versions import STALE_AFTER, worker_name
from opencave.storage.snapshots import clustered_name, write_parquet
from opencave.wire.materialize_query import Filter, Paging, TableQuery
from tests.test_annotation_service import AV, make, runtime, synapse, volume, voxels  # noqa: F401 (fixtures)

ROOTS = ("pre_pt_root_id", "post_pt_root_id")
WORKER_OF_A_PROCESS = "from opencave.services.materialize.versions import worker_name; print(worker_name(), flush=True)"


def _version_with_table(runtime, voxels, rows: int = 24):
    """A new version holding a new synapse table of ``rows`` rows: (version, table name, directory)."""
    svc = runtime.annotations
    name = make(svc)
    inside = voxels[0]
    svc.insert(AV, name, [synapse(inside[i], inside[i + 1], size=float(i)) for i in range(rows)])
    version = runtime.materializer.create_version(DEMO_DATASTACK)
    return version, name, Path(version.location)


def _query(runtime, version, name: str, filters: list[Filter]) -> tuple[tuple, set[str]]:
    """What a table query answers (column types, rows), and the root columns whose clustered
    copy it could use."""
    found = runtime.materialize.frozen_table(DEMO_DATASTACK, version.version, name)
    answer = runtime.materialize.query_table(found, TableQuery(filters, None, Paging(), None), QueryOptions(), rescale=False).table()
    return (_types(answer), answer.to_pylist()), set(found.source.clustered)


def _stray_files(directory: Path) -> list[str]:
    """Locks, partial copies and spilled sort runs left in a version's directory."""
    return sorted(p.name for p in directory.iterdir() if any(s in p.name for s in (".lock", ".partial-", "-spill", ".stale-")))


def _types(table: pa.Table) -> list[tuple[str, pa.DataType]]:
    return [(field.name, field.type) for field in table.schema]


def _copies(directory: Path, name: str) -> dict[str, pa.Table]:
    return {c: pq.read_table(directory / clustered_name(f"{name}.parquet", c)) for c in ROOTS}


# -- through the registry and the materialize service ------------------------------------------------
def test_queries_answer_the_same_without_copies_and_heal_rebuilds_them(runtime, voxels):
    version, name, directory = _version_with_table(runtime, voxels)
    frozen = pq.read_table(directory / f"{name}.parquet")
    roots = sorted({r for r in frozen.column("pre_pt_root_id").to_pylist() if r})[:3]
    assert len(roots) >= 2, "the demo's synapses should touch several neurons"
    queries = [
        [Filter(name, "pre_pt_root_id", "in", roots)],
        [Filter(name, "post_pt_root_id", "equal", frozen.column("post_pt_root_id")[0].as_py())],
        [Filter(name, "size", "greater", 3.0)],
    ]
    originals = _copies(directory, name)
    before = [_query(runtime, version, name, q) for q in queries]
    assert all(used == set(ROOTS) for _, used in before) and all(rows for (_, rows), _ in before)

    for column in ROOTS:
        (directory / clustered_name(f"{name}.parquet", column)).unlink()
    without = [_query(runtime, version, name, q) for q in queries]
    assert [rows for rows, _ in without] == [rows for rows, _ in before]
    assert all(used == set() for _, used in without), "a missing copy is not offered to the planner"

    assert heal(runtime.materialize.registry) == 2
    rebuilt = _copies(directory, name)
    for column in ROOTS:
        assert _types(rebuilt[column]) == _types(originals[column])  # DuckDB marks no column required
        assert rebuilt[column].to_pylist() == originals[column].to_pylist(), f"copy by {column}: same rows in the same order"
    after = [_query(runtime, version, name, q) for q in queries]
    assert after == before
    assert _stray_files(directory) == []
    assert heal(runtime.materialize.registry) == 0, "nothing is missing any more"


def test_one_tables_failure_does_not_stop_the_others(runtime, voxels, caplog):
    broken, healthy = make(runtime.annotations), make(runtime.annotations)
    for name in (broken, healthy):
        runtime.annotations.insert(AV, name, [synapse(voxels[0][i], voxels[0][i + 1]) for i in range(6)])
    directory = Path(runtime.materializer.create_version(DEMO_DATASTACK).location)
    for name in (broken, healthy):
        for column in ROOTS:
            (directory / clustered_name(f"{name}.parquet", column)).unlink()
    main = directory / f"{broken}.parquet"
    kept = main.read_bytes()
    main.write_bytes(b"not parquet at all")
    try:
        assert heal(runtime.materialize.registry) == 2, "the healthy table's copies are built"
        assert all((directory / clustered_name(f"{healthy}.parquet", c)).exists() for c in ROOTS)
        assert f"clustered copies of {broken}" in caplog.text
        assert _stray_files(directory) == []
    finally:
        main.write_bytes(kept)
    assert heal(runtime.materialize.registry) == 2, "once readable again, its copies are built too"


def test_the_server_background_job_builds_missing_copies(runtime, voxels):
    version, name, directory = _version_with_table(runtime, voxels, rows=6)
    copies = [directory / clustered_name(f"{name}.parquet", c) for c in ROOTS]
    for copy in copies:
        copy.unlink()
    runtime.start()  # what a server's lifespan does: the periodic job runs at once
    try:
        deadline = time.monotonic() + 30
        while not all(c.exists() for c in copies) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        runtime.stop()
    assert all(c.exists() for c in copies)


# -- the builder and its lock (files only) ----------------------------------------------------------
@pytest.fixture
def table(tmp_path) -> tuple[Path, str]:
    """A small id-sorted frozen file with two root columns, in a version directory."""
    directory = tmp_path / "v1"
    ids = list(range(1, 301))
    write_parquet(
        directory / "t.parquet",
        pa.table({"id": ids, "a_root_id": [(i * 7) % 13 for i in ids], "b_root_id": [(i * 5) % 11 for i in ids], "x": [float(i) for i in ids]}),
    )
    return directory, "t.parquet"


def _expected(directory: Path, column: str) -> list[dict]:
    return pq.read_table(directory / "t.parquet").sort_by([(column, "ascending"), ("id", "ascending")]).to_pylist()


def test_copies_are_sorted_by_their_column_then_id(table):
    directory, file = table
    said: list[str] = []
    assert ensure_clustered(directory, file, ["a_root_id", "b_root_id"], said.append) == ["a_root_id", "b_root_id"]
    for column in ("a_root_id", "b_root_id"):
        assert pq.read_table(directory / clustered_name(file, column)).to_pylist() == _expected(directory, column)
    assert len(said) == 2 and "a_root_id" in said[0]
    assert ensure_clustered(directory, file, ["a_root_id", "b_root_id"]) == [], "present copies are left alone"
    assert _stray_files(directory) == []


def test_a_dead_builders_lock_and_leftovers_are_taken_over(table):
    directory, file = table
    dead = subprocess.run([sys.executable, "-c", WORKER_OF_A_PROCESS], capture_output=True, text=True, check=True).stdout.strip()
    (directory / lock_name(file)).write_text(dead)
    (directory / f"{clustered_name(file, 'a_root_id')}.partial-999999").write_bytes(b"half a copy")
    (directory / f"{file}.clustering-spill").mkdir()
    assert ensure_clustered(directory, file, ["a_root_id"]) == ["a_root_id"]
    assert pq.read_table(directory / clustered_name(file, "a_root_id")).to_pylist() == _expected(directory, "a_root_id")
    assert _stray_files(directory) == []


def test_a_live_builders_lock_is_respected(table):
    directory, file = table
    lock = directory / lock_name(file)
    alive = subprocess.Popen([sys.executable, "-c", WORKER_OF_A_PROCESS + "; import time; time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        for holder in (alive.stdout.readline().strip(), worker_name()):  # another process, or this one
            lock.write_text(holder)
            assert ensure_clustered(directory, file, ["a_root_id"]) == []
            assert lock.read_text() == holder and not (directory / clustered_name(file, "a_root_id")).exists()
    finally:
        alive.kill()
        alive.wait()
    lock.unlink()


def test_a_lock_from_another_host_is_judged_by_its_age(table):
    directory, file = table
    lock = directory / lock_name(file)
    lock.write_text(f"elsewhere:4242:abcd1234-1:{'0' * 12}")
    assert ensure_clustered(directory, file, ["a_root_id"]) == [], "a fresh lock of another host is respected"
    old = time.time() - STALE_AFTER.total_seconds() - 60
    os.utime(lock, (old, old))
    assert ensure_clustered(directory, file, ["a_root_id"]) == ["a_root_id"], "one not refreshed for long is taken over"
    assert _stray_files(directory) == []


def test_a_failed_build_leaves_no_lock_and_no_partial_file(table):
    directory, file = table
    with pytest.raises(duckdb.Error):
        ensure_clustered(directory, file, ["no_such_root_id"])
    assert sorted(p.name for p in directory.iterdir()) == [file]


def test_a_version_deleted_meanwhile_ends_the_work_quietly(table):
    directory, file = table

    def delete_the_version(_: str) -> None:  # as expiry does, after the first copy is in place
        shutil.rmtree(directory)

    assert ensure_clustered(directory, file, ["a_root_id", "b_root_id"], delete_the_version) == ["a_root_id"]
    assert not directory.exists()
    assert ensure_clustered(directory, file, ["a_root_id"]) == [], "a directory that is gone: nothing to do"
