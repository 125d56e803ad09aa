"""Answers from memory, on SQLite and PostgreSQL: a local published table's source is kept, and a
few roots' rows from its mapped Arrow twin are answered without opening a file or running SQL
(the server then answers on its event loop). Such an answer equals ``query_table``'s; anything
else (a twin not mapped yet, too many rows, a filter Arrow cannot apply as SQL does, a removed
copy) gives None, so the request goes to a worker thread as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from opencave.demo.registration import DEMO_DATASTACK
from opencave.errors import NotFound
from opencave.services.materialize import root_rows
from opencave.services.materialize.requests import QueryOptions
from opencave.storage.arrow_copies import arrow_copy_name
from opencave.storage.snapshots import clustered_name
from opencave.storage.state import Generations, read_generations
from opencave.wire.materialize_query import Filter, Paging, TableQuery
from tests.test_annotation_service import AV, make, runtime, synapse, volume, voxels  # noqa: F401 (fixtures)

ARROW = QueryOptions(return_pyarrow=True)


@pytest.fixture(scope="module")
def table(runtime, voxels):
    """A new version holding a new synapse table: (version number, table name, directory)."""
    name = make(runtime.annotations)
    inside = voxels[0]
    runtime.annotations.insert(AV, name, [synapse(inside[i], inside[i + 1], size=float(i)) for i in range(30)])
    version = runtime.materializer.create_version(DEMO_DATASTACK)
    return version.version, name, Path(version.location)


def _generations(runtime) -> Generations:
    """The generations a request reads with its token, now."""
    with runtime.engine.connect() as conn:
        return read_generations(conn)


def _query(filters: list[Filter]) -> TableQuery:
    return TableQuery(filters, None, Paging(), None)


def _roots(runtime, version: int, name: str, column: str) -> list[int]:
    found = runtime.materialize.frozen_table(DEMO_DATASTACK, version, name)
    every = runtime.materialize.query_table(found, _query([]), ARROW, rescale=False).table()
    return sorted({r for r in every.column(column).to_pylist() if r})


def test_a_kept_twin_answers_as_the_query_does(runtime, table):
    version, name, _ = table
    service = runtime.materialize
    generations = _generations(runtime)
    roots = _roots(runtime, version, name, "post_pt_root_id")
    assert len(roots) >= 2
    found = service.kept_table(DEMO_DATASTACK, version, name, generations)
    assert found is not None, "the source was kept when the table was first queried"
    assert set(found.source.arrow_copies) == {"pre_pt_root_id", "post_pt_root_id"}
    for root, rescale in zip(roots, [False, True] * len(roots)):
        query = _query([Filter(name, "post_pt_root_id", "equal", root)])
        before = service.answer_in_memory(found, query, ARROW, rescale=rescale)
        expected = service.query_table(found, query, ARROW, rescale=rescale)  # maps the twin
        answer = service.answer_in_memory(found, query, ARROW, rescale=rescale)
        assert answer is not None, "the twin is mapped now"
        rows = answer.table()  # an answer's batches are read once
        assert before is None or before.table().equals(rows)
        assert rows.equals(expected.table(), check_metadata=True)
        assert (answer.resolution, answer.warnings, answer.column_names) == (expected.resolution, expected.warnings, expected.column_names)


def test_what_memory_cannot_answer_gives_none(runtime, table, monkeypatch):
    version, name, _ = table
    service = runtime.materialize
    found = service.frozen_table(DEMO_DATASTACK, version, name)
    root = _roots(runtime, version, name, "pre_pt_root_id")[0]
    by_root = _query([Filter(name, "pre_pt_root_id", "equal", root)])
    service.query_table(found, by_root, ARROW, rescale=False)
    assert service.answer_in_memory(found, by_root, ARROW, rescale=False) is not None
    by_size = _query([Filter(name, "size", "greater", 3.0)])  # no root: SQL's
    assert service.answer_in_memory(found, by_size, ARROW, rescale=False) is None
    float_filter = _query([Filter(name, "pre_pt_root_id", "equal", root), Filter(name, "size", "greater", 3.0)])
    assert service.answer_in_memory(found, float_filter, ARROW, rescale=False) is None, "float comparisons stay with SQL"
    monkeypatch.setattr(root_rows, "IN_MEMORY_BATCHES", 0)
    assert service.answer_in_memory(found, by_root, ARROW, rescale=False) is None, "too many rows for the event loop"


def test_a_fresh_reader_opens_no_file(runtime, table, monkeypatch):
    version, name, _ = table
    service = runtime.materialize
    found = service.frozen_table(DEMO_DATASTACK, version, name)
    root = _roots(runtime, version, name, "post_pt_root_id")[0]
    monkeypatch.setattr(service, "root_rows", root_rows.RootRowReader())
    query = _query([Filter(name, "post_pt_root_id", "equal", root)])
    assert service.answer_in_memory(found, query, ARROW, rescale=False) is None
    assert service.query_table(found, query, ARROW, rescale=False).table().num_rows
    assert service.answer_in_memory(found, query, ARROW, rescale=False) is not None


def test_a_removed_copy_is_noticed_and_an_expired_version_refused(runtime, voxels):
    name = make(runtime.annotations)
    inside = voxels[0]
    runtime.annotations.insert(AV, name, [synapse(inside[i], inside[i + 1]) for i in range(8)])
    version = runtime.materializer.create_version(DEMO_DATASTACK)
    generations = _generations(runtime)
    service = runtime.materialize
    assert service.kept_table(DEMO_DATASTACK, version.version, name, generations) is None, "not kept before first use"
    service.frozen_table(DEMO_DATASTACK, version.version, name)
    assert service.kept_table(DEMO_DATASTACK, version.version, name, generations) is not None
    (Path(version.location) / arrow_copy_name(f"{name}.parquet", "pre_pt_root_id")).unlink()
    assert service.kept_table(DEMO_DATASTACK, version.version, name, generations) is None
    found = service.frozen_table(DEMO_DATASTACK, version.version, name)
    assert set(found.source.arrow_copies) == {"post_pt_root_id"}, "the source is found again, without the removed twin"
    assert set(found.source.clustered) == {"pre_pt_root_id", "post_pt_root_id"}
    assert (Path(version.location) / clustered_name(f"{name}.parquet", "pre_pt_root_id")).exists()
    service.registry.mark_expired(version.id)
    with pytest.raises(NotFound):
        service.kept_table(DEMO_DATASTACK, version.version, name, _generations(runtime))
