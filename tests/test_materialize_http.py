"""Materialization through the genuine caveclient 8.2.1 against ``opencave serve``.

The demo datastack has versions 1, 2, 3 at historical moments. Every answer is checked against
an independent computation: frozen tables against the annotation service's rows alive at the
version's moment with roots from the chunkedgraph at that moment (``tests.support.materialize``),
filters against pandas filtering of the (checked) full table, views against pandas group-bys.
These tests only read, so they share the session's server.
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pandas as pd
import pytest
import requests

from tests.support.http import no_unhandled_errors
from tests.support.demo import demo_world
from tests.support.materialize import (
    DS,
    SYNAPSE_COLUMNS,
    SYNAPSE_POSITIONS,
    alive_at,
    annotation_rows,
    assert_same_rows,
    canonical,
    caveclient_for,
    synapses_at,
    utc,
)

DEMO_VERSIONS = [1, 2, 3]
TABLES = ["cell_types", "nucleus_detection", "proofreading_status", "synapses"]


@pytest.fixture(scope="module", autouse=True)
def no_server_errors(server):
    """No request of this module may hit an unhandled error (a 500 or a cut stream)."""
    with no_unhandled_errors(server):
        yield


@pytest.fixture(scope="module")
def client(server, admin_token):
    return caveclient_for(server, admin_token)


@pytest.fixture(scope="module")
def world(server):
    return demo_world(server)


@pytest.fixture(scope="module")
def times(client) -> dict[int, dt.datetime]:
    return {m["version"]: utc(m["time_stamp"]) for m in client.materialize.get_versions_metadata()}


@pytest.fixture(scope="module")
def syn_rows(client) -> pd.DataFrame:
    """Every row ever written to the demo synapses table, from the annotation service."""
    return annotation_rows(client, "synapses")


@pytest.fixture(scope="module")
def full(client) -> pd.DataFrame:
    """Version 3's synapses, split positions (checked against first principles below)."""
    return client.materialize.query_table("synapses", split_positions=True, materialization_version=3)


@pytest.fixture(scope="module")
def raw3(syn_rows, times) -> pd.DataFrame:
    """The raw (unrounded) rows alive at version 3, sorted by id."""
    return alive_at(syn_rows, times[3]).sort_values("id").reset_index(drop=True)


def query(client, table="synapses", version=3, **kwargs) -> pd.DataFrame:
    return client.materialize.query_table(table, split_positions=True, materialization_version=version, **kwargs)


# -- versions and metadata -----------------------------------------------------------------------
def test_versions_and_their_metadata(client, server, admin_token):
    m = client.materialize
    assert m.get_versions() == DEMO_VERSIONS
    assert m.version == 3
    meta = m.get_versions_metadata()
    assert [v["version"] for v in meta] == DEMO_VERSIONS
    stamps = [utc(v["time_stamp"]) for v in meta]
    assert stamps == sorted(stamps)
    assert stamps[0] >= dt.datetime(2025, 1, 6, tzinfo=dt.timezone.utc)
    assert stamps[-1] <= dt.datetime(2025, 2, 21, tzinfo=dt.timezone.utc)
    for v, stamp in zip(DEMO_VERSIONS, stamps):
        assert utc(m.get_timestamp(v)) == stamp
        one = m.get_version_metadata(v)
        assert one["status"] == "AVAILABLE" and one["valid"] is True and one["is_merged"] is True
        assert utc(one["time_stamp"]) == stamp
    # the raw wire format: CAVE's timestamp strings (six fractional digits, no zone)
    raw = requests.get(
        f"{server.url}/materialize/api/v3/datastack/{DS}/metadata", headers={"Authorization": f"Bearer {admin_token}"}
    ).json()
    assert set(raw[0]) == {"id", "datastack", "version", "time_stamp", "valid", "expires_on", "status", "is_merged"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}", raw[0]["time_stamp"])
    expired = requests.get(
        f"{server.url}/materialize/api/v2/datastack/{DS}/versions",
        params={"expired": "true"},
        headers={"Authorization": f"Bearer {admin_token}"},
    ).json()
    assert expired == DEMO_VERSIONS


def test_tables_counts_and_metadata(client, times):
    m = client.materialize
    created = {t: utc(client.annotation.get_table_metadata(t)["created"]) for t in TABLES}
    assert created["proofreading_status"] > times[1]  # created between versions 1 and 2
    for v in DEMO_VERSIONS:
        assert m.get_tables(version=v) == [t for t in TABLES if created[t] <= times[v]]
    every = {t["table_name"]: t for t in m.get_tables_metadata(version=3)}
    assert sorted(every) == TABLES
    for table in TABLES:
        meta = m.get_table_metadata(table, version=3)
        assert meta == every[table]
        assert meta["table_name"] == table and meta["aligned_volume"] == DS
        assert meta["voxel_resolution"] == [8.0, 8.0, 40.0]
        assert meta["schema"] == meta["schema_type"]
        assert meta["pcg_table_name"] == DS
        assert meta["reference_table"] == ("nucleus_detection" if table == "cell_types" else None)
        for v in DEMO_VERSIONS:
            if created[table] > times[v]:
                continue
            count = m.get_annotation_count(table, version=v)
            rows = query(client, table, v, merge_reference=False)
            assert count == len(rows) == int(query(client, table, v, get_counts=True)["count"].iloc[0])
    assert m.get_annotation_count("synapses", version=3) == 19_800


def test_v3_serves_the_tables_and_count_paths_too(server, admin_token):
    """caveclient addresses ``/tables`` and ``/count`` under v2 only; v3 answers them the same."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    for path in ("version/3/tables", "version/3/table/synapses/count"):
        v2, v3 = (requests.get(f"{server.url}/materialize/api/{api}/datastack/{DS}/{path}", headers=headers) for api in ("v2", "v3"))
        assert v2.status_code == v3.status_code == 200 and v2.json() == v3.json(), path


@pytest.mark.parametrize("version", DEMO_VERSIONS)
def test_versions_equal_first_principles(client, world, syn_rows, times, version):
    """Each version's synapses = rows alive at its moment (annotation service), supervoxels
    from the watershed, roots from the chunkedgraph at that moment."""
    expected = synapses_at(client, world, syn_rows, times[version])
    actual = query(client, "synapses", version)
    assert_same_rows(actual, expected, f"synapses v{version}")
    # roots really change over the history, so the versions differ in their roots
    if version > 1:
        earlier = synapses_at(client, world, syn_rows, times[version - 1])
        assert not expected["pre_pt_root_id"].isin(earlier["pre_pt_root_id"]).all() or len(expected) != len(earlier)


# -- filters -----------------------------------------------------------------------------------------
def _top_roots(full: pd.DataFrame, column: str, n: int) -> list[int]:
    counts = full[column][full[column] != 0].value_counts()
    return [int(r) for r in counts.index[:n]]


def test_every_filter_kind(client, full, raw3):
    f = full
    pre = _top_roots(f, "pre_pt_root_id", 3)
    post = _top_roots(f, "post_pt_root_id", 2)
    sizes = np.sort(f["size"].to_numpy())
    median, low = float(sizes[len(sizes) // 2]), float(sizes[len(sizes) // 4])
    one = f.iloc[123]
    cases = [
        ({"filter_in_dict": {"pre_pt_root_id": pre[:2]}}, f.pre_pt_root_id.isin(pre[:2])),
        ({"filter_out_dict": {"pre_pt_root_id": pre[:2]}}, ~f.pre_pt_root_id.isin(pre[:2])),
        (
            {"filter_in_dict": {"pre_pt_root_id": pre}, "filter_out_dict": {"post_pt_root_id": post}},
            f.pre_pt_root_id.isin(pre) & ~f.post_pt_root_id.isin(post),
        ),
        ({"filter_equal_dict": {"pre_pt_root_id": pre[2]}}, f.pre_pt_root_id == pre[2]),
        ({"filter_equal_dict": {"size": float(one["size"])}}, f["size"] == one["size"]),
        ({"filter_equal_dict": {"valid": True}}, f.valid),
        ({"filter_greater_dict": {"size": median}}, f["size"] > median),
        ({"filter_less_dict": {"size": low}}, f["size"] < low),
        ({"filter_greater_equal_dict": {"id": 100}, "filter_less_equal_dict": {"id": 200}}, (f.id >= 100) & (f.id <= 200)),
        ({"filter_greater_dict": {"id": 100}, "filter_less_dict": {"id": 200}}, (f.id > 100) & (f.id < 200)),
        ({"filter_in_dict": {"id": []}}, f.id < 0),
        ({"filter_out_dict": {"id": []}}, f.id > 0),
        ({"filter_in_dict": {"pre_pt_root_id": [0]}}, f.pre_pt_root_id == 0),
    ]
    # long lists (more than the clustered-copy limit) travel as one bound array
    many = [int(v) for v in f.id.to_numpy()[::7]] + [10**12, 10**12]
    cases += [
        ({"filter_in_dict": {"id": many}}, f.id.isin(many)),
        ({"filter_out_dict": {"id": many}}, ~f.id.isin(many)),
        ({"filter_in_dict": {"pre_pt_root_id": pre + list(range(1, 100))}}, f.pre_pt_root_id.isin(pre)),
    ]
    for kwargs, mask in cases:
        assert_same_rows(query(client, **kwargs), f[mask.to_numpy()], str(kwargs))
        counted = query(client, get_counts=True, **kwargs)
        assert counted["count"].tolist() == [int(mask.sum())], kwargs


def test_root_filters_answer_in_id_order(client, full):
    """Root filters read a copy clustered by that root: the answer still comes ordered by id."""
    post = _top_roots(full, "post_pt_root_id", 3)
    for kwargs in (
        {"filter_equal_dict": {"post_pt_root_id": post[0]}},
        {"filter_in_dict": {"post_pt_root_id": post[:1]}},
        {"filter_in_dict": {"post_pt_root_id": post}},
    ):
        ids = query(client, **kwargs)["id"].to_numpy()
        assert len(ids) > 1 and (np.diff(ids) > 0).all(), kwargs


def test_spatial_filter(client, full, raw3):
    pre = np.array(raw3["pre_pt_position"].tolist())
    ctr = np.array(raw3["ctr_pt_position"].tolist())
    for column, raw, box in [
        ("pre_pt_position", pre, [[10, 50, 40], [60, 120, 52]]),
        ("ctr_pt_position", ctr, [[0, 0, 51.5], [100, 100, 51.5]]),  # half-voxel z: inclusive bounds
        ("pre_pt_position", pre, [[0, 0, 0], [1, 1, 1]]),
    ]:
        lo, hi = np.array(box[0]), np.array(box[1])
        inside = ((raw >= lo) & (raw <= hi)).all(axis=1)
        answer = query(client, filter_spatial_dict={column: box})
        assert answer["id"].tolist() == raw3["id"][inside].tolist(), column
        assert_same_rows(answer, full[full.id.isin(raw3["id"][inside])], column)
    assert len(query(client, filter_spatial_dict={"pre_pt_position": [[10, 50, 40], [60, 120, 52]]})) > 100


def test_regex_filter(client):
    types = query(client, "cell_types", merge_reference=False)
    assert len(types) == 12
    for pattern in ["^5P", "IT$", "P-", "^(?:BC|4P)$", "inhib"]:
        column = "classification_system" if pattern == "inhib" else "cell_type"
        answer = query(client, "cell_types", merge_reference=False, filter_regex_dict={column: pattern})
        expected = types[types[column].str.contains(pattern, regex=True)]
        assert len(expected) > 0
        assert_same_rows(answer, expected, pattern)


def test_select_columns_and_split_positions(client, full):
    m = client.materialize
    answer = query(client, select_columns=["size", "id"])
    assert list(answer.columns) == ["size", "id"]
    assert_same_rows(answer[["id", "size"]], full[["id", "size"]])
    # as upstream, a root id column brings its supervoxel column (live_query needs it)
    answer = query(client, select_columns=["size", "id", "post_pt_root_id"])
    assert list(answer.columns) == ["size", "id", "post_pt_supervoxel_id", "post_pt_root_id"]
    columns = ["id", "post_pt_supervoxel_id", "post_pt_root_id", "size"]
    assert_same_rows(answer[columns], full[columns])
    answer = query(client, select_columns=["id", "ctr_pt_position"], limit=50)
    assert list(answer.columns) == ["id", "ctr_pt_position_x", "ctr_pt_position_y", "ctr_pt_position_z"]
    joined = m.query_table("synapses", select_columns=["id", "ctr_pt_position"], limit=50, materialization_version=3)
    assert list(joined.columns) == ["id", "ctr_pt_position"]
    assert np.array_equal(np.stack(joined["ctr_pt_position"].to_numpy()), answer[["ctr_pt_position_x", "ctr_pt_position_y", "ctr_pt_position_z"]].to_numpy())
    whole = m.query_table("synapses", materialization_version=3)
    assert list(whole.columns) == ["id", "valid", "pre_pt_supervoxel_id", "pre_pt_root_id", "post_pt_supervoxel_id", "post_pt_root_id", "size", *SYNAPSE_POSITIONS]
    for p in SYNAPSE_POSITIONS:
        assert np.array_equal(np.stack(whole[p].to_numpy()), full[[f"{p}_x", f"{p}_y", f"{p}_z"]].to_numpy())
    assert list(full.columns) == SYNAPSE_COLUMNS
    assert str(full["id"].dtype) == "int64" and str(full["valid"].dtype) == "bool" and str(full["size"].dtype) == "float64"
    assert str(full["pre_pt_position_x"].dtype) == "int32"


def test_desired_resolution(client, full, raw3, server, admin_token):
    m = client.materialize
    scaled = query(client, desired_resolution=[4, 4, 20], limit=500)
    assert scaled.attrs["dataframe_resolution"] == [4.0, 4.0, 20.0]
    assert scaled.attrs["table_voxel_resolution"] == [8.0, 8.0, 40.0]
    raw = raw3.iloc[:500]
    for p in SYNAPSE_POSITIONS:
        values = np.array(raw[p].tolist()) * np.array([2.0, 2.0, 2.0])
        assert np.allclose(scaled[[f"{p}_x", f"{p}_y", f"{p}_z"]].to_numpy(), values), p
    assert scaled["id"].tolist() == full["id"].iloc[:500].tolist()
    nm = m.query_table("synapses", desired_resolution=[1, 1, 1], limit=5, materialization_version=3)
    assert nm.attrs["dataframe_resolution"] == [1.0, 1.0, 1.0]
    assert np.allclose(np.stack(nm["pre_pt_position"].to_numpy()), np.array(raw3["pre_pt_position"].iloc[:5].tolist()) * [8, 8, 40])
    native = query(client, limit=5)
    assert native.attrs["dataframe_resolution"] == [8.0, 8.0, 40.0]
    # v2 never rescales and sends no dataframe_resolution header
    r = requests.post(
        f"{server.url}/materialize/api/v2/datastack/{DS}/version/3/table/synapses/query",
        params={"return_pyarrow": "false"},
        json={"desired_resolution": [1, 1, 1], "limit": 5, "select_columns": ["id", "pre_pt_position"]},
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    assert r.status_code == 200 and "dataframe_resolution" not in r.headers
    assert [[row[f"pre_pt_position_{a}"] for a in "xyz"] for row in r.json()] == native_positions(full.iloc[:5], "pre_pt_position")


def native_positions(frame: pd.DataFrame, point: str) -> list[list[int]]:
    return frame[[f"{point}_x", f"{point}_y", f"{point}_z"]].to_numpy().tolist()


def test_limit_and_offset_are_deterministic_by_id(client, full):
    pages = [query(client, limit=4000, offset=k) for k in range(0, len(full), 4000)]
    assert [len(p) for p in pages][:-1] == [4000] * (len(pages) - 1)
    assert_same_rows(pd.concat(pages, ignore_index=True), full)
    assert pd.concat(pages)["id"].is_monotonic_increasing
    roots = _top_roots(full, "post_pt_root_id", 1)
    subset = full[full.post_pt_root_id.isin(roots)]
    page = query(client, filter_in_dict={"post_pt_root_id": roots}, limit=10, offset=5)
    assert_same_rows(page, subset.iloc[5:15])
    # repeated paged queries give the same rows
    assert query(client, limit=7, offset=333)["id"].tolist() == full["id"].iloc[333:340].tolist()
    assert query(client, limit=7, offset=333)["id"].tolist() == full["id"].iloc[333:340].tolist()


def test_random_sample(client, full):
    sample = query(client, random_sample=500)
    assert 300 <= len(sample) <= 700
    assert_same_rows(sample, full[full.id.isin(sample["id"])])
    assert sample["id"].is_unique
    everything = query(client, random_sample=10**6)  # more than the table: all rows
    assert len(everything) == len(full)


def test_merge_reference_and_join_query(client):
    m = client.materialize
    types = query(client, "cell_types", merge_reference=False)
    nuclei = query(client, "nucleus_detection")
    merged = query(client, "cell_types")  # merge_reference=True: a join on target_id
    expected = types.merge(nuclei, left_on="target_id", right_on="id", suffixes=("", "_ref"))
    assert list(merged.columns) == list(expected.columns)
    assert "id_ref" in merged.columns and "pt_root_id" in merged.columns
    assert_same_rows(merged, expected, "merge_reference")

    joined = m.join_query(
        [["cell_types", "target_id"], ["nucleus_detection", "id"]],
        suffixes={"cell_types": "_ct", "nucleus_detection": "_nuc"},
        select_columns={"cell_types": ["id", "cell_type"], "nucleus_detection": ["id", "pt_root_id", "pt_position"]},
        materialization_version=3,
        split_positions=True,
    )
    assert list(joined.columns) == ["id_ct", "cell_type", "id_nuc", "pt_supervoxel_id", "pt_root_id", "pt_position_x", "pt_position_y", "pt_position_z"]
    want = expected[["id", "cell_type", "id_ref", "pt_supervoxel_id", "pt_root_id", "pt_position_x", "pt_position_y", "pt_position_z"]]
    want.columns = list(joined.columns)
    assert_same_rows(joined.rename(columns={"id_ct": "id"}), want.rename(columns={"id_ct": "id"}))
    assert joined.attrs["join_query"] is True

    roots = nuclei["pt_root_id"].iloc[:4].tolist()
    filtered = m.join_query(
        [["cell_types", "target_id"], ["nucleus_detection", "id"]],
        filter_in_dict={"nucleus_detection": {"pt_root_id": roots}},
        filter_regex_dict={"cell_types": {"cell_type": "P"}},
        materialization_version=3,
        split_positions=True,
    )
    mask = expected["pt_root_id"].isin(roots) & expected["cell_type"].str.contains("P")
    assert sorted(filtered["id_x"].tolist()) == sorted(expected[mask]["id"].tolist())
    assert len(filtered) > 0


def test_synapse_query(client, full, raw3):
    m = client.materialize
    pre = _top_roots(full, "pre_pt_root_id", 2)
    post = _top_roots(full, "post_pt_root_id", 2)

    def expect(mask, autapses=True):
        chosen = full[mask]
        if autapses:
            chosen = chosen[chosen.pre_pt_root_id != chosen.post_pt_root_id]
        return chosen

    answer = m.synapse_query(pre_ids=pre[0], materialization_version=3, split_positions=True)
    assert_same_rows(answer, expect(full.pre_pt_root_id == pre[0]))
    answer = m.synapse_query(post_ids=post, materialization_version=3, split_positions=True)
    assert_same_rows(answer, expect(full.post_pt_root_id.isin(post)))
    answer = m.synapse_query(pre_ids=pre, post_ids=post, materialization_version=3, split_positions=True, remove_autapses=False)
    assert_same_rows(answer, expect(full.pre_pt_root_id.isin(pre) & full.post_pt_root_id.isin(post), autapses=False))
    answer = m.synapse_query(post_ids=post[0], include_zeros=False, materialization_version=3, split_positions=True)
    assert_same_rows(answer, expect((full.post_pt_root_id == post[0]) & (full.pre_pt_root_id != 0)))
    box = [[10, 50, 40], [60, 120, 60]]
    posts = np.array(raw3["post_pt_position"].tolist())
    inside = ((posts >= box[0]) & (posts <= box[1])).all(axis=1)
    answer = m.synapse_query(bounding_box=box, materialization_version=3, split_positions=True)
    assert_same_rows(answer, expect(full.id.isin(raw3["id"][inside]).to_numpy()))
    assert answer.attrs["remove_autapses"] is True


# -- views ---------------------------------------------------------------------------------------------
def test_views(client, full):
    m = client.materialize
    views = m.get_views(version=3)
    assert sorted(views) == ["single_neurons", "synapse_connections"]
    meta = m.get_view_metadata("synapse_connections", materialization_version=3)
    assert meta["table_name"] == "synapse_connections" and meta["datastack_name"] == DS
    assert (meta["voxel_resolution_x"], meta["voxel_resolution_y"], meta["voxel_resolution_z"]) == (8.0, 8.0, 40.0)
    schema = m.get_view_schema("synapse_connections", materialization_version=3)
    assert schema == {
        "pre_pt_root_id": {"type": "integer"},
        "post_pt_root_id": {"type": "integer"},
        "n_synapses": {"type": "integer"},
        "sum_size": {"type": "float"},
    }
    schemas = m.get_view_schemas(materialization_version=3)
    assert schemas["synapse_connections"] == schema
    assert schemas["single_neurons"]["pt_position"] == {"type": "SpatialPoint"}

    real = full[(full.pre_pt_root_id != full.post_pt_root_id) & (full.pre_pt_root_id != 0) & (full.post_pt_root_id != 0)]
    grouped = (
        real.groupby(["pre_pt_root_id", "post_pt_root_id"])
        .agg(n_synapses=("id", "size"), sum_size=("size", "sum"))
        .reset_index()
        .sort_values(["pre_pt_root_id", "post_pt_root_id"])
        .reset_index(drop=True)
    )
    view = m.query_view("synapse_connections", materialization_version=3)
    view = view.sort_values(["pre_pt_root_id", "post_pt_root_id"]).reset_index(drop=True)
    assert view[["pre_pt_root_id", "post_pt_root_id"]].astype(np.int64).equals(grouped[["pre_pt_root_id", "post_pt_root_id"]].astype(np.int64))
    assert view["n_synapses"].astype(np.int64).tolist() == grouped["n_synapses"].tolist()
    assert np.allclose(view["sum_size"].astype(float), grouped["sum_size"])
    strong = m.query_view("synapse_connections", filter_greater_dict={"n_synapses": 100}, materialization_version=3)
    assert sorted(strong["n_synapses"].tolist()) == sorted(grouped[grouped.n_synapses > 100]["n_synapses"].tolist())
    counted = m.query_view("synapse_connections", get_counts=True, materialization_version=3)
    assert counted["count"].tolist() == [len(grouped)]

    nuclei = query(client, "nucleus_detection")
    types = query(client, "cell_types", merge_reference=False)
    once = nuclei[nuclei.pt_root_id != 0].groupby("pt_root_id").size()
    single = nuclei[nuclei.pt_root_id.isin(once[once == 1].index)].merge(
        types[["target_id", "classification_system", "cell_type"]], left_on="id", right_on="target_id", how="left"
    )
    neurons = m.query_view("single_neurons", materialization_version=3, split_positions=True)
    assert neurons["id"].tolist() == single.sort_values("id")["id"].tolist()
    assert neurons["cell_type"].fillna("?").tolist() == single.sort_values("id")["cell_type"].fillna("?").tolist()
    assert neurons[["pt_position_x", "pt_position_y", "pt_position_z"]].to_numpy().tolist() == single.sort_values("id")[["pt_position_x", "pt_position_y", "pt_position_z"]].to_numpy().tolist()
    assert neurons.attrs["dataframe_resolution"] == [8.0, 8.0, 40.0]
    scaled = m.query_view("single_neurons", materialization_version=3, split_positions=True, desired_resolution=[4, 4, 20])
    assert scaled.attrs["dataframe_resolution"] == [4.0, 4.0, 20.0]
    assert np.allclose(scaled[["pt_position_x", "pt_position_y", "pt_position_z"]].to_numpy(), nuclei.set_index("id").loc[scaled["id"], ["pt_position_x", "pt_position_y", "pt_position_z"]].to_numpy() * 2, atol=1.0)
    assert_same_rows(m.query_view("single_neurons", materialization_version=3, split_positions=True, filter_regex_dict={"cell_type": "P$"}), neurons[neurons.cell_type.fillna("").str.contains("P$")])
    # views without an id page in their stored order
    whole = m.query_view("synapse_connections", materialization_version=3)
    pages = pd.concat([m.query_view("synapse_connections", materialization_version=3, limit=10, offset=k) for k in range(0, len(whole), 10)], ignore_index=True)
    assert pages.astype(float).equals(whole.astype(float))


def test_unique_string_values(client):
    rows = annotation_rows(client, "cell_types")
    alive = alive_at(rows, dt.datetime.now(dt.timezone.utc))
    values = client.materialize.get_unique_string_values("cell_types")
    assert values == {c: sorted(alive[c].unique().tolist()) for c in ("classification_system", "cell_type")}
    assert client.materialize.get_unique_string_values("synapses") == {}


# -- live queries ------------------------------------------------------------------------------------
def _moments(world, times) -> dict[str, dt.datetime]:
    ops = world.op_times
    return {
        "no tables yet": world.epoch + dt.timedelta(minutes=1),
        "before v1": times[1] - dt.timedelta(minutes=10),
        "at v2": times[2],
        "between v1 and v2": ops[3] + dt.timedelta(seconds=1),
        "between v2 and v3": ops[9] + dt.timedelta(seconds=1),
        "after the last version": dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1),
    }


def test_live_live_query_at_many_moments(client, world, syn_rows, times):
    m = client.materialize
    remapped = 0
    for name, moment in _moments(world, times).items():
        expected = synapses_at(client, world, syn_rows, moment)
        answer = m.live_live_query("synapses", moment, split_positions=True)
        assert_same_rows(answer, expected, name)
        if name == "no tables yet":
            assert len(expected) == 0
            continue
        assert len(expected) > 0
        if name == "at v2":
            assert_same_rows(answer, query(client, "synapses", 2), name)
        # root filters are exact at T, including roots created after the nearest version
        nearest = max((v for v in times if times[v] <= moment), default=1, key=lambda v: times[v])
        older = set(synapses_at(client, world, syn_rows, times[nearest])["pre_pt_root_id"])
        pre = [int(r) for r in expected["pre_pt_root_id"].value_counts().index if r != 0]
        fresh = [r for r in pre if r not in older]
        remapped += bool(fresh)
        chosen = list(dict.fromkeys(fresh[:2] + pre))[:3]
        post = [int(r) for r in expected["post_pt_root_id"].value_counts().index[:2] if r != 0]
        filtered = m.live_live_query(
            "synapses",
            moment,
            filter_in_dict={"synapses": {"pre_pt_root_id": chosen}},
            filter_out_dict={"synapses": {"post_pt_root_id": post}},
            filter_greater_dict={"synapses": {"size": 300.0}},
            split_positions=True,
        )
        mask = expected.pre_pt_root_id.isin(chosen) & ~expected.post_pt_root_id.isin(post) & (expected["size"] > 300)
        assert_same_rows(filtered, expected[mask], f"{name} filtered")
        with_zero = m.live_live_query("synapses", moment, filter_in_dict={"synapses": {"pre_pt_root_id": [0, chosen[0]]}}, split_positions=True)
        assert_same_rows(with_zero, expected[expected.pre_pt_root_id.isin([0, chosen[0]])], f"{name} root 0")
        equal = m.live_live_query("synapses", moment, filter_equal_dict={"synapses": {"post_pt_root_id": post[0]}}, split_positions=True)
        assert_same_rows(equal, expected[expected.post_pt_root_id == post[0]], f"{name} equal")
        paged = m.live_live_query("synapses", moment, limit=10, offset=20, select_columns={"synapses": ["id", "size"]})
        assert paged["id"].tolist() == expected["id"].iloc[20:30].tolist()
        assert list(paged.columns) == ["id", "size"]
    assert remapped >= 2, "root filters with roots newer than the nearest version must be exercised"


def test_live_live_query_join_and_resolution(client, world, times):
    m = client.materialize
    moment = world.op_times[5] + dt.timedelta(seconds=1)
    nuclei = m.live_live_query("nucleus_detection", moment, split_positions=True)
    types = m.live_live_query("cell_types", moment, split_positions=True)
    joined = m.live_live_query(
        "cell_types",
        moment,
        joins=[["cell_types", "target_id", "nucleus_detection", "id"]],
        suffixes={"cell_types": "", "nucleus_detection": "_ref"},
        split_positions=True,
    )
    expected = types.merge(nuclei, left_on="target_id", right_on="id", suffixes=("", "_ref"))
    assert_same_rows(joined, expected, "live join")
    scaled = m.live_live_query("nucleus_detection", moment, desired_resolution=[4, 4, 40], split_positions=True)
    assert scaled.attrs["dataframe_resolution"] == [4.0, 4.0, 40.0]
    assert np.allclose(scaled["pt_position_x"].to_numpy(), nuclei["pt_position_x"].to_numpy() * 2, atol=1.0)
    roots = nuclei["pt_root_id"].tolist()
    expected_roots = client.chunkedgraph.get_roots(nuclei["pt_supervoxel_id"].to_numpy(np.uint64), timestamp=moment)
    assert roots == [int(r) for r in expected_roots]


def test_live_query_matches_live_live_query(client, world, syn_rows, times):
    """caveclient's own live query: the rows of the latest version before T (the client does not
    see annotations changed since) with every root brought to T, and filters exact at T."""
    m = client.materialize
    moment = world.op_times[10] + dt.timedelta(seconds=1)
    assert times[2] < moment < times[3]
    expected = synapses_at(client, world, syn_rows, times[2], roots_moment=moment)
    pre = [int(r) for r in expected["pre_pt_root_id"].value_counts().index[:3] if r != 0]
    for kwargs, mask in [
        ({}, expected.id > 0),
        ({"filter_in_dict": {"pre_pt_root_id": pre}}, expected.pre_pt_root_id.isin(pre)),
        ({"filter_equal_dict": {"pre_pt_root_id": pre[0]}, "filter_greater_dict": {"size": 200.0}}, (expected.pre_pt_root_id == pre[0]) & (expected["size"] > 200)),
    ]:
        answer = m.live_query("synapses", moment, split_positions=True, **kwargs)
        assert_same_rows(answer, expected[mask.to_numpy()], str(kwargs))
    # query_table with a timestamp goes through live_query, which agrees with live_live_query on
    # every row that did not change since version 2
    answer = m.query_table("synapses", timestamp=moment, filter_in_dict={"pre_pt_root_id": pre[:1]}, split_positions=True)
    assert_same_rows(answer, expected[expected.pre_pt_root_id.isin(pre[:1])], "query_table(timestamp=)")
    live = m.live_live_query("synapses", moment, filter_in_dict={"synapses": {"pre_pt_root_id": pre[:1]}}, split_positions=True)
    same_ids = sorted(set(live["id"]) & set(answer["id"]))
    assert len(same_ids) > 0.9 * len(live)
    assert_same_rows(answer[answer.id.isin(same_ids)], live[live.id.isin(same_ids)], "live vs live_live")
    selected = m.live_query("synapses", moment, filter_in_dict={"pre_pt_root_id": pre[:2]}, select_columns=["id", "pre_pt_root_id"])
    want = expected[expected.pre_pt_root_id.isin(pre[:2])]
    assert selected["id"].tolist() == want["id"].tolist()
    assert selected["pre_pt_root_id"].tolist() == want["pre_pt_root_id"].tolist()


def test_json_answers_and_arrow_headers(client, server, admin_token, full):
    headers = {"Authorization": f"Bearer {admin_token}"}
    url = f"{server.url}/materialize/api/v3/datastack/{DS}/version/3/table/synapses/query"
    r = requests.post(url, params={"return_pyarrow": "false"}, json={"limit": 3, "select_columns": ["id", "size", "pre_pt_position"]}, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    # pandas' to_json (as upstream) keeps 10 significant decimals of floats
    assert r.json() == [
        {"id": int(row.id), "size": pytest.approx(float(row.size), rel=1e-9), "pre_pt_position_x": int(row.pre_pt_position_x), "pre_pt_position_y": int(row.pre_pt_position_y), "pre_pt_position_z": int(row.pre_pt_position_z)}
        for row in full.iloc[:3].itertuples()
    ]
    r = requests.post(url, json={"limit": 3}, headers={**headers, "Accept-Encoding": "zstd"})
    assert r.headers["content-type"] == "data.arrow"
    assert r.headers["dataframe_resolution"] == "8.0, 8.0, 40.0"
    assert "'synapses'" in r.headers["column_names"]
    frame = canonical(client.materialize.query_table("synapses", limit=3, split_positions=True, materialization_version=3))
    assert frame["id"].tolist() == full["id"].iloc[:3].tolist()


def test_operator_row_cap(backend, server_factory):
    """``opencave serve --row-limit N`` cuts answers at N rows, by id, and says so."""
    server = server_factory(backend, "--row-limit", "1000")
    token = server.new_token()
    m = caveclient_for(server, token).materialize
    capped = m.query_table("synapses", materialization_version=3, split_positions=True)
    assert capped["id"].tolist() == query(caveclient_for(server, token), limit=1000)["id"].tolist()
    assert len(capped) == 1000 and capped["id"].is_monotonic_increasing
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{server.url}/materialize/api/v3/datastack/{DS}"
    r = requests.post(f"{url}/version/3/table/synapses/query", json={}, headers=headers)
    assert r.status_code == 200 and "Limited query to 1000 rows" in r.headers.get("Warning", "")
    r = requests.post(f"{url}/version/3/table/synapses/query", json={"limit": 10}, headers=headers)
    assert "Limited query" not in r.headers.get("Warning", "")
    r = requests.post(f"{url}/version/3/table/synapses/query", json={"offset": 19_500}, headers=headers, params={"return_pyarrow": "false"})
    assert len(r.json()) == 300 and "Limited query" not in r.headers.get("Warning", "")
    assert m.query_table("synapses", get_counts=True, materialization_version=3)["count"].tolist() == [19_800]
    r = requests.post(f"{url}/query", json={"table": "synapses", "timestamp": dt.datetime.now(dt.timezone.utc).isoformat()}, headers=headers, params={"return_pyarrow": "false"})
    assert len(r.json()) == 1000 and "Limited query to 1000 rows" in r.headers.get("Warning", "")
    join = {"tables": [["synapses", "pre_pt_root_id"], ["nucleus_detection", "pt_root_id"]]}
    r = requests.post(f"{url}/version/3/query", json=join, headers=headers, params={"return_pyarrow": "false"})
    assert len(r.json()) == 1000 and "Limited query to 1000 rows" in r.headers.get("Warning", "")
    view = m.query_view("synapse_connections", materialization_version=3)
    assert len(view) < 1000
