"""Queries for a few roots answered from a clustered copy's footer index, or from its Arrow twin
(``direct``), equal the planner's SQL answers exactly — rows, order, column names and types — over generated filters,
selections, scales and paging; queries that path cannot answer exactly are left to SQL. A long
id list whose row groups are few is read from the copy, pruned by literal ids, with the same
answer as from the id-sorted file."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opencave.services.materialize import clustering, direct, planner
from opencave.services.materialize.layout import frozen_layout
from opencave.services.materialize.root_rows import RootRowReader, build_index
from opencave.storage import arrow_copies
from opencave.storage.arrow_copies import arrow_copy_name, open_arrow_copy, write_arrow_copy
from opencave.storage.snapshots import clustered_name, parquet_source, write_parquet
from opencave.wire.materialize_query import Filter

ROOT_BASE = 864691135000000000
TABLE = "cells"


def _cells(rows: int, seed: int, whole: bool = False) -> pa.Table:
    """A frozen cell-type table: few roots with many rows each, null roots, halves in positions
    (or, ``whole``, positions in whole voxels only, some beyond 16 bits)."""
    rng = np.random.default_rng(seed)
    layout = frozen_layout("cell_type_local")
    roots = ROOT_BASE + rng.integers(0, 12, rows)
    root_mask = rng.random(rows) < 0.05
    halves = rng.integers(-400, 400, (rows, 3)) / 2  # x.5 values round away from zero
    if whole:
        halves = rng.integers(-(2**31) + 1, 2**31 - 1, (rows, 3)).astype(np.float64)
    columns = {
        "id": np.arange(1, rows + 1, dtype=np.int64) * 3,
        "valid": np.ones(rows, dtype=bool),
        "pt_supervoxel_id": pa.array(roots * 7 % 100_000, pa.int64()),
        "pt_root_id": pa.array(roots, pa.int64(), mask=root_mask),
        "classification_system": pa.array(rng.choice(["a", "b", None], rows).tolist(), pa.string()),
        "cell_type": pa.array(rng.choice(["pyr", "basket", "chandelier", "Pyr"], rows).tolist(), pa.string()),
        "pt_position_x": halves[:, 0],
        "pt_position_y": halves[:, 1],
        "pt_position_z": halves[:, 2] + (0.0 if whole else 0.25),
    }
    return pa.table(columns, schema=layout.arrow_schema)


@pytest.fixture(scope="module", params=["parquet", "arrow"])
def source(request, tmp_path_factory) -> planner.Source:
    """The table read through its Parquet copy, or through the copy's Arrow twin."""
    found = _source(tmp_path_factory.mktemp("direct"), 5_000)
    if request.param == "parquet":
        found.arrow_copies = {}
    return found


def _source(directory: Path, rows: int, whole: bool = False) -> planner.Source:
    """A frozen table of ``rows`` rows and its copy clustered by root, in many row groups, with
    its Arrow twin in many batches."""
    file = f"{TABLE}.parquet"
    write_parquet(directory / file, _cells(rows, seed=3, whole=whole))
    original = clustering.CLUSTERED_ROW_GROUP_ROWS, arrow_copies.BATCH_ROWS
    clustering.CLUSTERED_ROW_GROUP_ROWS = 2_048  # many row groups: one root's rows span several
    arrow_copies.BATCH_ROWS = 256
    try:
        assert clustering.ensure_clustered(directory, file, ["pt_root_id"]) == ["pt_root_id"]
    finally:
        clustering.CLUSTERED_ROW_GROUP_ROWS, arrow_copies.BATCH_ROWS = original
    copy = directory / clustered_name(file, "pt_root_id")
    twin = directory / arrow_copy_name(file, "pt_root_id")
    assert pq.ParquetFile(copy).metadata.num_row_groups > 2
    assert open_arrow_copy(twin, "pt_root_id").reader.num_record_batches > 10
    return planner.Source(
        name=TABLE,
        layout=frozen_layout("cell_type_local"),
        relation=parquet_source(directory / file),
        voxel_resolution=(4.0, 4.0, 40.0),
        clustered={"pt_root_id": copy},
        arrow_copies={"pt_root_id": twin},
        row_count=rows,
    )


def _by_sql(source: planner.Source, filters, select, factors, **arguments) -> pa.Table:
    sql, params, _ = planner.simple_select(source, filters, select, factors, **arguments)
    return duckdb.connect().sql(sql, params=params).to_arrow_table()


def _same(direct_answer: pa.Table, sql_answer: pa.Table) -> None:
    assert [(f.name, f.type) for f in direct_answer.schema] == [(f.name, f.type) for f in sql_answer.schema]
    assert direct_answer.to_pylist() == sql_answer.to_pylist()


roots = st.integers(0, 14).map(lambda i: ROOT_BASE + i)  # 12 present, 3 absent
root_filters = st.one_of(
    roots.map(lambda r: Filter(TABLE, "pt_root_id", "equal", r)),
    st.lists(roots, min_size=1, max_size=6).map(lambda rs: Filter(TABLE, "pt_root_id", "in", rs)),
)
other_filters = st.lists(
    st.one_of(
        st.sampled_from(["equal", "greater", "less", "greater_equal", "less_equal"]).flatmap(
            lambda kind: st.integers(0, 16_000).map(lambda v: Filter(TABLE, "id", kind, v))
        ),
        st.lists(st.integers(0, 400), max_size=40).map(lambda vs: Filter(TABLE, "pt_supervoxel_id", "notin", vs)),
        st.lists(st.sampled_from(["pyr", "basket", "Pyr", "none"]), max_size=3).map(lambda vs: Filter(TABLE, "cell_type", "in", vs)),
        st.sampled_from(["a", "b"]).map(lambda v: Filter(TABLE, "classification_system", "equal", v)),
        st.lists(st.sampled_from(["a", "b"]), max_size=2).map(lambda vs: Filter(TABLE, "classification_system", "notin", vs)),
        st.booleans().map(lambda v: Filter(TABLE, "valid", "equal", v)),
    ),
    max_size=2,
)
selections = st.one_of(
    st.none(),
    st.lists(st.sampled_from(["id", "pt_root_id", "cell_type", "pt_position", "pt_position_x", "valid"]), min_size=1, max_size=4, unique=True)
    # both would answer two columns named pt_position_x
    .filter(lambda names: not {"pt_position", "pt_position_x"} <= set(names)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=root_filters,
    others=other_filters,
    select=selections,
    factors=st.sampled_from([None, (2.0, 0.5, 0.1)]),
    count=st.booleans(),
    offset=st.one_of(st.none(), st.integers(0, 300)),
    limit=st.one_of(st.none(), st.integers(0, 500)),
    key_first=st.booleans(),
)
def test_direct_answers_equal_sql_answers(source, key, others, select, factors, count, offset, limit, key_first):
    filters = planner.check_filters(source, [key, *others] if key_first else [*others, key])
    arguments = dict(count=count, offset=offset, limit=None if count else limit)
    answer = direct.answer(RootRowReader(), source, filters, select, factors, **arguments)
    assert answer is not None, "a root filter with integer and text filters is answered directly"
    _same(answer, _by_sql(source, filters, select, factors, **arguments))


@pytest.fixture(scope="module")
def whole_source(tmp_path_factory) -> planner.Source:
    """A table whose positions are whole voxels up to the 32-bit limits."""
    return _source(tmp_path_factory.mktemp("whole"), 5_000, whole=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=root_filters, others=other_filters, select=selections)
def test_whole_voxel_positions_answer_as_sql(whole_source, key, others, select):
    filters = planner.check_filters(whole_source, [key, *others])
    answer = direct.answer(RootRowReader(), whole_source, filters, select, None)
    assert answer is not None
    _same(answer, _by_sql(whole_source, filters, select, None))


def test_positions_round_in_one_pass_as_sql_rounds_them():
    """Halves go away from zero and the double just under a half goes down, as DuckDB's round
    does; nulls stay null; a value that does not round within 32 bits (or NaN) is left to SQL."""
    edges = [0.49999999999999994, -0.49999999999999994, 0.5, -0.5, 2.5, -2.5, 1e-300, -0.0, 2147483647.4, -2147483648.4]
    positions = pa.table({"x": edges, "y": pa.array(edges[::-1][:-1] + [None])})
    rounded = direct._rounded_int32_columns(positions, ["x", "y"])
    for name in ("x", "y"):
        sql = duckdb.sql(f"SELECT CAST(round({name}) AS INTEGER) AS r FROM positions").fetch_arrow_table()
        assert rounded[name].to_pylist() == sql.column("r").to_pylist()
    assert rounded["x"].to_pylist()[:6] == [0, 0, 1, -1, 3, -3]
    for beyond in (2147483647.5, -2147483648.5, float("nan"), float("inf")):
        assert direct._rounded_int32_columns(pa.table({"x": [1.0, beyond]}), ["x"]) is None


def test_every_root_of_the_copy_reads_its_whole_range(source):
    """Each root (one spanning row groups, or batches, among them) gives exactly its rows, in id
    order, from the copy and from its twin."""
    reader = RootRowReader()
    table = pq.read_table(source.relation.removeprefix("read_parquet('").removesuffix("')"), columns=["id", "pt_root_id"])
    ids_of: dict[int, list[int]] = {}
    for row in table.to_pylist():
        if row["pt_root_id"] is not None:
            ids_of.setdefault(row["pt_root_id"], []).append(row["id"])
    index = reader.index(Path(source.clustered["pt_root_id"]), "pt_root_id")
    assert max(len(index.row_groups(np.array([root]))) for root in ids_of) > 1
    twin = open_arrow_copy(Path(_twin_of(source)), "pt_root_id")
    assert max(len(twin.batches_of(np.array([root]))) for root in ids_of) > 1
    for root, ids in ids_of.items():
        for copy in (source.clustered["pt_root_id"], _twin_of(source)):
            got = reader.read(Path(copy), "pt_root_id", [root], ["id"])
            assert got.column("id").to_pylist() == sorted(ids)
    assert reader.read(Path(_twin_of(source)), "pt_root_id", [ROOT_BASE + 99], ["id"]).num_rows == 0


def _twin_of(source: planner.Source) -> Path:
    return Path(str(source.clustered["pt_root_id"]).removesuffix(".parquet") + ".arrow")


def test_a_twin_without_key_bounds_or_of_another_column_is_not_used(tmp_path):
    table = pa.table({"id": [1, 2, 3, 4], "pt_root_id": [1, 2, 5, 9]})
    write_arrow_copy(tmp_path / "t.arrow", table, "pt_root_id")
    assert RootRowReader().read(tmp_path / "t.arrow", "pt_root_id", [5], ["id"]).column("id").to_pylist() == [3]
    assert RootRowReader().read(tmp_path / "t.arrow", "id", [3], ["id"]) is None
    import pyarrow.ipc as ipc

    with ipc.new_file(tmp_path / "plain.arrow", table.schema) as writer:
        writer.write_table(table)
    assert RootRowReader().read(tmp_path / "plain.arrow", "pt_root_id", [5], ["id"]) is None


def test_only_tables_up_to_the_row_limit_get_twins(tmp_path, monkeypatch):
    file = f"{TABLE}.parquet"
    write_parquet(tmp_path / file, _cells(300, seed=4))
    monkeypatch.setenv(arrow_copies.MAX_ROWS_ENV, "299")
    assert clustering.ensure_clustered(tmp_path, file, ["pt_root_id"]) == ["pt_root_id"]
    assert (tmp_path / clustered_name(file, "pt_root_id")).exists() and not (tmp_path / arrow_copy_name(file, "pt_root_id")).exists()
    assert clustering.ensure_clustered(tmp_path, file, ["pt_root_id"]) == [], "nothing is due"
    monkeypatch.setenv(arrow_copies.MAX_ROWS_ENV, "0")
    assert not arrow_copies.wanted(0), "0: no table gets twins, not even an empty one"
    monkeypatch.setenv(arrow_copies.MAX_ROWS_ENV, "300")
    assert clustering.ensure_clustered(tmp_path, file, ["pt_root_id"]) == ["pt_root_id"], "the missing twin is built"
    twin = pa.ipc.open_file(tmp_path / arrow_copy_name(file, "pt_root_id")).read_all()
    assert twin.equals(pq.read_table(tmp_path / clustered_name(file, "pt_root_id")).replace_schema_metadata(None))


@pytest.mark.parametrize(
    "extra",
    [
        Filter(TABLE, "pt_position_x", "greater", 3.0),  # a float column: NaN rules differ
        Filter(TABLE, "cell_type", "regex", "p.*"),
        Filter(TABLE, "cell_type", "greater", "b"),  # text order: collation is SQL's business
        Filter(TABLE, "pt_position", "spatial", [[0, 0, 0], [50, 50, 50]]),
    ],
)
def test_filters_arrow_cannot_match_exactly_go_to_sql(source, extra):
    filters = planner.check_filters(source, [Filter(TABLE, "pt_root_id", "equal", ROOT_BASE + 1), extra])
    assert direct.answer(RootRowReader(), source, filters, None, None) is None


def test_no_root_filter_or_a_random_sample_goes_to_sql(source):
    by_id = planner.check_filters(source, [Filter(TABLE, "id", "equal", 3)])
    assert direct.answer(RootRowReader(), source, by_id, None, None) is None
    by_root = planner.check_filters(source, [Filter(TABLE, "pt_root_id", "equal", ROOT_BASE + 1)])
    assert direct.answer(RootRowReader(), source, by_root, None, None, random_sample=10) is None
    many = planner.check_filters(source, [Filter(TABLE, "pt_root_id", "in", list(range(65)))])
    assert direct.answer(RootRowReader(), source, many, None, None) is None


def test_an_unsorted_or_statistics_free_file_is_not_indexed(tmp_path):
    shuffled = pa.table({"id": [1, 2, 3, 4], "pt_root_id": [5, 1, 9, 2]})
    pq.write_table(shuffled, tmp_path / "shuffled.parquet", row_group_size=2)
    assert build_index(pq.ParquetFile(tmp_path / "shuffled.parquet").metadata, "pt_root_id") is None
    sorted_rows = pa.table({"id": [1, 2, 3, 4], "pt_root_id": [1, 2, 5, 9]})
    pq.write_table(sorted_rows, tmp_path / "bare.parquet", row_group_size=2, write_statistics=False)
    assert build_index(pq.ParquetFile(tmp_path / "bare.parquet").metadata, "pt_root_id") is None
    assert RootRowReader().read(tmp_path / "bare.parquet", "pt_root_id", [2], ["id"]) is None
    # sorted by row group but not within one: found out on reading
    pq.write_table(pa.table({"id": [1, 2, 3, 4], "pt_root_id": [2, 1, 5, 9]}), tmp_path / "inner.parquet", row_group_size=2)
    assert RootRowReader().read(tmp_path / "inner.parquet", "pt_root_id", [2], ["id"]) is None


def test_a_file_replaced_at_the_same_path_is_indexed_anew(tmp_path):
    path = tmp_path / "copy.parquet"
    reader = RootRowReader()
    pq.write_table(pa.table({"id": [1, 2], "pt_root_id": [7, 8]}), path)
    assert reader.read(path, "pt_root_id", [8], ["id"]).column("id").to_pylist() == [2]
    replacement = tmp_path / "new.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "pt_root_id": [7, 8, 8]}), replacement)
    replacement.replace(path)
    assert reader.read(path, "pt_root_id", [8], ["id"]).column("id").to_pylist() == [2, 3]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    present=st.lists(st.integers(0, 11), min_size=1, max_size=5, unique=True),
    others=other_filters,
    limit=st.one_of(st.none(), st.integers(0, 500)),
)
def test_a_long_id_list_read_from_the_copy_answers_as_the_sorted_file(source, present, others, limit):
    ids = [ROOT_BASE + i for i in present] + [ROOT_BASE + 1_000 + i for i in range(planner.CLUSTER_MAX_IDS)]  # most absent
    filters = planner.check_filters(source, [Filter(TABLE, "pt_root_id", "in", ids), *others])
    sql, params, _ = planner.simple_select(source, filters, None, None, limit=limit, prune_on="pt_root_id")
    assert "by_pt_root_id" in sql and str(ids[-1]) in sql  # the copy, its ids written out
    plain, plain_params, _ = planner.simple_select(source, filters, None, None, limit=limit)
    assert "by_pt_root_id" not in plain
    database = duckdb.connect()
    pruned = database.sql(sql, params=params).to_arrow_table()
    ids_of_pruned = pruned.column("id").to_pylist()
    assert ids_of_pruned == sorted(ids_of_pruned)  # in id order, as the sorted file is read
    if limit is None:  # the semi join of the plain SQL does not keep the file's order
        _same(pruned, database.sql(plain, params=plain_params).to_arrow_table().sort_by("id"))
    else:
        _same(pruned, database.sql(plain, params=plain_params).to_arrow_table())


def test_the_service_reads_a_copy_for_a_long_list_only_when_its_row_groups_are_few(tmp_path):
    from opencave.services.materialize.service import MaterializeService

    source = _source(tmp_path, 40_000)  # one root's rows: 1 or 2 of 20 row groups
    service = MaterializeService.__new__(MaterializeService)
    service.root_rows = RootRowReader()
    few = [ROOT_BASE + 1] + [ROOT_BASE + 1_000 + i for i in range(planner.CLUSTER_MAX_IDS)]
    assert service._pruning_copy(source, [Filter(TABLE, "pt_root_id", "in", few)]) == "pt_root_id"
    every = [ROOT_BASE + i for i in range(12)] + [ROOT_BASE + 1_000 + i for i in range(planner.CLUSTER_MAX_IDS)]
    assert service._pruning_copy(source, [Filter(TABLE, "pt_root_id", "in", every)]) is None  # the whole table
    assert service._pruning_copy(source, [Filter(TABLE, "pt_root_id", "in", few[:10])]) is None  # few ids: direct or pruned anyway
