"""Materialization through both clients: the genuine caveclient 8.2.1 and opencave's client,
against the same ``opencave serve`` on the demo datastack, return equal results — metadata,
frozen queries with every filter kind, joins, views, synapse queries, live queries before,
between and after the versions, and the ``tables``/``views`` interfaces.

DataFrames must be equal (``assert_frame_equal``) and so must ``df.attrs``, apart from the
documented intentional differences (``tests.support.compare``). Errors must be of the same
type with the same message.
"""

from __future__ import annotations

import datetime as dt

import caveclient
import caveclient.materializationengine
import numpy as np
import pytest
import requests

import opencave
from tests.support.compare import both, outcome, same, same_frames, utc
from tests.support.demo import demo_world

DS = "opencave_demo"
TABLES = ["cell_types", "nucleus_detection", "proofreading_status", "synapses"]
VIEWS = ["single_neurons", "synapse_connections"]
VERSIONS = [1, 2, 3]
BOX = [[50, 50, 10], [150, 150, 40]]  # in the tables' voxels (8, 8, 40 nm)
REF_SUFFIXES = {"cell_types": "", "nucleus_detection": "_ref"}  # query_table's merge_reference


def forget_caveclient_caches() -> None:
    """caveclient caches ``get_tables_metadata`` process-wide by (datastack, version) only, so
    after the SQLite server's tests it would answer the PostgreSQL server's calls with the
    SQLite server's metadata (a caveclient quirk; opencave's caches are per client)."""
    caveclient.materializationengine.MaterializationClient.get_tables_metadata.cache.clear()


@pytest.fixture(scope="module")
def pair(server, admin_token):
    forget_caveclient_caches()
    return (
        caveclient.CAVEclient(DS, server_address=server.url, auth_token=admin_token),
        opencave.CAVEclient(DS, server_address=server.url, auth_token=admin_token),
    )


@pytest.fixture(scope="module")
def world(server):
    return demo_world(server)


@pytest.fixture(scope="module")
def stamps(pair) -> dict[int, dt.datetime]:
    return {m["version"]: utc(m["time_stamp"]) for m in pair[0].materialize.get_versions_metadata()}


@pytest.fixture(scope="module")
def moments(stamps) -> dict[str, dt.datetime]:
    """Live-query moments: after the tables were created but before version 1, between the
    versions, and after the last one."""
    return {
        "before_v1": stamps[1] - dt.timedelta(minutes=5),
        "between_v1_v2": stamps[1] + (stamps[2] - stamps[1]) / 2,
        "between_v2_v3": stamps[2] + (stamps[3] - stamps[2]) / 2,
        "after_v3": stamps[3] + dt.timedelta(days=1),
    }


@pytest.fixture(scope="module")
def roots(pair) -> dict[str, int]:
    """Root ids of the latest version: two objects with many input synapses, the top output."""
    syn = pair[0].materialize.query_table("synapses", select_columns=["pre_pt_root_id", "post_pt_root_id"])
    posts = syn["post_pt_root_id"].value_counts().index
    return {"a": int(posts[1]), "b": int(posts[2]), "pre": int(syn["pre_pt_root_id"].value_counts().index[0])}


def roots_at(pair, world, moment) -> np.ndarray:
    """The somata's roots at ``moment``, from the genuine chunkedgraph client."""
    found = pair[0].chunkedgraph.get_roots(world.soma_supervoxels, timestamp=moment)
    return np.unique(found[found > 0])


# -- versions and metadata -----------------------------------------------------------------------
def test_versions_and_metadata(pair):
    genuine, ours = pair
    versions = both(pair, lambda c: c.materialize.get_versions())
    assert versions[:3] == VERSIONS
    both(pair, lambda c: c.materialize.get_versions(expired=True))
    # opencave returns an int where caveclient returns a numpy integer (documented)
    assert ours.materialize.most_recent_version() == genuine.materialize.most_recent_version() == max(versions)
    assert type(ours.materialize.most_recent_version()) is int
    assert ours.materialize.version == genuine.materialize.version
    both(pair, lambda c: c.materialize.get_versions_metadata())
    both(pair, lambda c: c.materialize.get_version_metadata())
    both(pair, lambda c: c.materialize.get_timestamp())
    for v in VERSIONS:
        both(pair, lambda c: c.materialize.get_version_metadata(v))
        both(pair, lambda c: c.materialize.get_version_metadata(version=v, datastack_name=DS))
        both(pair, lambda c: c.materialize.get_timestamp(v))
        tables = both(pair, lambda c: c.materialize.get_tables(version=v))
        assert set(tables) <= set(TABLES)
        both(pair, lambda c: c.materialize.get_tables_metadata(version=v))
        both(pair, lambda c: c.materialize.get_views(version=v))
        both(pair, lambda c: c.materialize.get_view_schemas(materialization_version=v))
        for table in TABLES:  # proofreading_status is not in version 1: the same error
            missing = {"error": requests.HTTPError, "status": 404} if (table, v) == ("proofreading_status", 1) else {}
            both(pair, lambda c: c.materialize.get_annotation_count(table, version=v), **missing)
            both(pair, lambda c: c.materialize.get_table_metadata(table, version=v), **missing)
    assert both(pair, lambda c: c.materialize.get_annotation_count("synapses", version=3)) > 19_000
    both(pair, lambda c: c.materialize.get_annotation_count("no_such_table"), error=requests.HTTPError, status=404)
    both(pair, lambda c: c.materialize.get_version_metadata(99), error=requests.HTTPError, status=404)


def test_tables_views_and_strings(pair):
    for table in TABLES:
        both(pair, lambda c: c.materialize.get_table_metadata(table))
        both(pair, lambda c: c.materialize.get_unique_string_values(table))
    assert both(pair, lambda c: c.materialize.get_unique_string_values("cell_types"))["cell_type"]
    both(pair, lambda c: c.materialize.get_tables_metadata())
    assert sorted(both(pair, lambda c: c.materialize.get_views())) == VIEWS
    both(pair, lambda c: c.materialize.get_view_schemas())
    for view in VIEWS:
        both(pair, lambda c: c.materialize.get_view_metadata(view))
        both(pair, lambda c: c.materialize.get_view_metadata(view, materialization_version=1))
        both(pair, lambda c: c.materialize.get_view_schema(view))
    both(pair, lambda c: c.materialize.get_view_metadata("no_such_view"), error=requests.HTTPError, status=404)


# -- query_table ---------------------------------------------------------------------------------
QUERIES = {
    "all": lambda r: {},
    "all_split": lambda r: {"split_positions": True},
    "in": lambda r: {"filter_in_dict": {"post_pt_root_id": [r["a"], r["b"]]}},
    "in_numpy": lambda r: {"filter_in_dict": {"post_pt_root_id": np.array([r["a"], r["b"]], dtype=np.uint64)}},
    "out": lambda r: {"filter_out_dict": {"post_pt_root_id": [r["a"], r["b"]], "pre_pt_root_id": [0]}},
    "equal": lambda r: {"filter_equal_dict": {"post_pt_root_id": r["a"]}},
    "equal_numpy": lambda r: {"filter_equal_dict": {"pre_pt_root_id": np.int64(r["pre"])}},
    "greater": lambda r: {"filter_greater_dict": {"size": 900.0}},
    "less": lambda r: {"filter_less_dict": {"size": 60}},
    "greater_equal": lambda r: {"filter_greater_equal_dict": {"size": 900.0, "id": 100}},
    "less_equal": lambda r: {"filter_less_equal_dict": {"size": 60, "post_pt_position_z": 40}},
    "spatial": lambda r: {"filter_spatial_dict": {"post_pt_position": BOX}},
    "spatial_split": lambda r: {"filter_spatial_dict": {"pre_pt_position": BOX}, "split_positions": True},
    "combined": lambda r: {
        "filter_in_dict": {"post_pt_root_id": [r["a"], r["b"]]},
        "filter_out_dict": {"pre_pt_root_id": [r["pre"]]},
        "filter_greater_dict": {"size": 100},
        "filter_less_equal_dict": {"size": 2000},
        "filter_spatial_dict": {"ctr_pt_position": [[0, 0, 0], [120, 220, 60]]},
    },
    "select_columns": lambda r: {"select_columns": ["id", "pre_pt_root_id", "ctr_pt_position", "size"]},
    "select_split": lambda r: {
        "select_columns": ["id", "post_pt_root_id", "post_pt_position"],
        "split_positions": True,
        "filter_equal_dict": {"post_pt_root_id": r["b"]},
    },
    "resolution_nm": lambda r: {"desired_resolution": [1, 1, 1], "filter_equal_dict": {"post_pt_root_id": r["a"]}},
    "resolution_split": lambda r: {
        "desired_resolution": [4, 4, 40],
        "split_positions": True,
        "filter_in_dict": {"post_pt_root_id": [r["b"]]},
    },
    "limit": lambda r: {"limit": 25},
    "limit_offset": lambda r: {"limit": 100, "offset": 50},
    "limit_offset_filtered": lambda r: {"limit": 10, "offset": 5, "filter_equal_dict": {"post_pt_root_id": r["a"]}},
    "counts": lambda r: {"get_counts": True},
    "counts_filtered": lambda r: {"get_counts": True, "filter_in_dict": {"post_pt_root_id": [r["a"], r["b"]]}},
    "no_metadata": lambda r: {"metadata": False, "limit": 10},
    "version_1": lambda r: {"materialization_version": 1, "filter_greater_dict": {"size": 1000}},
    "version_2": lambda r: {"materialization_version": 2, "split_positions": True, "limit": 300},
    "version_3": lambda r: {"materialization_version": 3, "filter_equal_dict": {"post_pt_root_id": r["a"]}},
    "unknown_column": lambda r: {"filter_equal_dict": {"no_such_column": 1}},
    "empty_result": lambda r: {"filter_equal_dict": {"post_pt_root_id": 1}},
}


@pytest.mark.parametrize("case", sorted(QUERIES))
def test_query_table(pair, roots, case):
    kwargs = QUERIES[case](roots)
    declared = {"error": requests.HTTPError, "status": 400} if case == "unknown_column" else {}
    result = both(pair, lambda c: c.materialize.query_table("synapses", **kwargs), **declared)
    if case not in ("unknown_column", "empty_result", "version_1", "version_3"):
        assert len(result) > 0


def test_query_table_other_tables(pair, roots):
    for table in ("nucleus_detection", "proofreading_status"):
        for v in VERSIONS:  # proofreading_status is not in version 1
            missing = {"error": requests.HTTPError, "status": 404} if (table, v) == ("proofreading_status", 1) else {}
            both(pair, lambda c: c.materialize.query_table(table, materialization_version=v), **missing)
        both(pair, lambda c: c.materialize.query_table(table, desired_resolution=[4, 4, 40], split_positions=True))
    both(pair, lambda c: c.materialize.query_table("nucleus_detection", filter_greater_dict={"volume": 0.001}))
    both(pair, lambda c: c.materialize.query_table("proofreading_status", filter_equal_dict={"status_axon": True}))
    rows = both(pair, lambda c: c.materialize.query_table("proofreading_status", filter_regex_dict={"strategy_axon": "partially"}))
    assert len(rows) and rows["strategy_axon"].str.contains("partially").all()
    both(pair, lambda c: c.materialize.query_table("proofreading_status", filter_regex_dict={"strategy_dendrite": "^dendrite_"}, select_columns=["id", "pt_root_id", "strategy_dendrite"]))
    both(pair, lambda c: c.materialize.query_table("nucleus_detection", return_df=False))
    both(pair, lambda c: c.materialize.query_table("synapses", return_df=False, limit=20, filter_equal_dict={"post_pt_root_id": roots["a"]}))


def test_merge_reference(pair, roots):
    merged = both(pair, lambda c: c.materialize.query_table("cell_types"), real_suffixes=REF_SUFFIXES)
    assert {"target_id", "cell_type", "pt_root_id", "id_ref"} <= set(merged.columns)
    assert merged.attrs["join_query"] is True
    for v in VERSIONS:
        both(pair, lambda c: c.materialize.query_table("cell_types", materialization_version=v, split_positions=True), real_suffixes=REF_SUFFIXES)
    both(pair, lambda c: c.materialize.query_table("cell_types", filter_equal_dict={"cell_type": "BC"}), real_suffixes=REF_SUFFIXES)
    both(pair, lambda c: c.materialize.query_table("cell_types", filter_regex_dict={"cell_type": "^5P"}), real_suffixes=REF_SUFFIXES)
    both(pair, lambda c: c.materialize.query_table("cell_types", filter_in_dict={"classification_system": ["aibs_coarse_inhibitory"]}, desired_resolution=[4, 4, 40]), real_suffixes=REF_SUFFIXES)
    # a select_columns list on a merged (joined) query: the server warns that it is deprecated
    both(
        pair,
        lambda c: c.materialize.query_table("cell_types", limit=5, offset=2, select_columns=["id", "cell_type", "target_id"]),
        real_suffixes=REF_SUFFIXES,
        server_warned=True,
    )
    plain = both(pair, lambda c: c.materialize.query_table("cell_types", merge_reference=False))
    assert "pt_root_id" not in plain.columns and plain.attrs["join_query"] is False


def test_random_sample(pair):
    """Sampling is random: compare sizes (roughly the asked number), columns, dtypes and attrs,
    and that every sampled row is a row of the table."""
    full = pair[0].materialize.query_table("synapses", split_positions=True).set_index("id")
    samples = [c.materialize.query_table("synapses", random_sample=2000, split_positions=True) for c in pair]
    for sample in samples:
        assert 1400 <= len(sample) <= 2600, len(sample)
        assert sample["id"].is_unique
        same(sample.set_index("id"), full.loc[sample["id"]])
    same_frames(samples[0].head(0), samples[1].head(0))
    # asking for more rows than the table has gives the whole table
    both(pair, lambda c: c.materialize.query_table("nucleus_detection", random_sample=10**6))
    both(pair, lambda c: len(c.materialize.query_view("single_neurons", random_sample=10**6)))


# -- joins, synapse queries, views ---------------------------------------------------------------
SYN_NUC = [["synapses", "post_pt_root_id"], ["nucleus_detection", "pt_root_id"]]


def test_join_query(pair, roots):
    suffixes = {"synapses": "", "nucleus_detection": "_nuc"}
    joined = both(pair, lambda c: c.materialize.join_query(SYN_NUC, suffixes=suffixes), real_suffixes=suffixes)
    assert "pt_root_id" in joined.columns and "id_nuc" in joined.columns
    select = {"synapses": ["id", "size", "post_pt_root_id", "post_pt_position"], "nucleus_detection": ["id", "volume", "pt_position"]}
    both(
        pair,
        lambda c: c.materialize.join_query(SYN_NUC, suffixes=suffixes, select_columns=select, filter_in_dict={"synapses": {"post_pt_root_id": [roots["a"], roots["b"]]}}),
        real_suffixes=suffixes,
    )
    both(
        pair,
        lambda c: c.materialize.join_query(
            SYN_NUC,
            filter_greater_dict={"synapses": {"size": 300}},
            filter_equal_dict={"nucleus_detection": {"pt_root_id": roots["a"]}},
            filter_spatial_dict={"synapses": {"post_pt_position": BOX}},
            split_positions=True,
            desired_resolution=[4, 4, 40],
        ),
        real_suffixes={"synapses": "_x", "nucleus_detection": "_y"},
    )
    suffixes2 = {"synapses": "_syn", "nucleus_detection": "_nuc"}
    both(pair, lambda c: c.materialize.join_query(SYN_NUC, limit=10, offset=5, suffixes=suffixes2, materialization_version=2), real_suffixes=suffixes2)
    refs = {"cell_types": "", "nucleus_detection": "_nuc"}
    both(
        pair,
        lambda c: c.materialize.join_query(
            [["cell_types", "target_id"], ["nucleus_detection", "id"]],
            suffixes=refs,
            select_columns={"cell_types": ["id", "cell_type"], "nucleus_detection": ["pt_root_id", "pt_position"]},
            filter_regex_dict={"cell_types": {"cell_type": "P"}},
        ),
        real_suffixes=refs,
    )
    # return_df=False: opencave returns the JSON rows, caveclient None (documented fix)
    genuine, ours = (c.materialize.join_query(SYN_NUC, limit=3, return_df=False) for c in pair)
    assert genuine is None and isinstance(ours, list) and len(ours) == 3


SYNAPSE_QUERIES = {
    "pre_list": lambda r: {"pre_ids": [r["pre"]]},
    "pre_numpy": lambda r: {"pre_ids": np.array([r["pre"], r["a"]])},
    "post_scalar": lambda r: {"post_ids": r["a"]},
    "pre_scalar_post_list": lambda r: {"pre_ids": r["pre"], "post_ids": [r["a"], r["b"]]},
    "bounding_box": lambda r: {"post_ids": r["a"], "bounding_box": BOX},
    "bounding_box_pre": lambda r: {"bounding_box": BOX, "bounding_box_column": "pre_pt_position", "remove_autapses": False},
    "keep_autapses": lambda r: {"post_ids": r["pre"], "remove_autapses": False, "include_zeros": False},
    "no_zeros": lambda r: {"include_zeros": False, "split_positions": True, "desired_resolution": [4, 4, 40], "limit": 200},
    "version_1": lambda r: {"post_ids": [r["a"]], "materialization_version": 1, "offset": 3, "limit": 40},
    "no_metadata": lambda r: {"pre_ids": r["pre"], "metadata": False},
}


@pytest.mark.parametrize("case", sorted(SYNAPSE_QUERIES))
def test_synapse_query(pair, roots, case):
    kwargs = SYNAPSE_QUERIES[case](roots)
    result = both(pair, lambda c: c.materialize.synapse_query(**kwargs))
    if case not in ("version_1",):
        assert len(result) > 0


def test_query_view(pair, roots):
    counts = both(pair, lambda c: c.materialize.query_view("synapse_connections"))
    assert len(counts) > 0
    both(pair, lambda c: c.materialize.query_view("synapse_connections", filter_greater_dict={"n_synapses": 10}))
    both(pair, lambda c: c.materialize.query_view("synapse_connections", filter_in_dict={"post_pt_root_id": [roots["a"], roots["b"]]}, select_columns=["pre_pt_root_id", "n_synapses"]))
    both(pair, lambda c: c.materialize.query_view("synapse_connections", filter_out_dict={"pre_pt_root_id": [roots["pre"]]}, filter_less_equal_dict={"sum_size": 1e5}, limit=7, offset=2))
    both(pair, lambda c: c.materialize.query_view("synapse_connections", filter_equal_dict={"post_pt_root_id": roots["a"]}, get_counts=True))
    both(pair, lambda c: c.materialize.query_view("single_neurons", filter_equal_dict={"cell_type": "BC"}, split_positions=True))
    both(pair, lambda c: c.materialize.query_view("single_neurons", filter_regex_dict={"cell_type": "^5P"}))
    both(pair, lambda c: c.materialize.query_view("single_neurons", filter_spatial_dict={"pt_position": [[0, 0, 0], [150, 150, 50]]}, desired_resolution=[4, 4, 40]))
    both(pair, lambda c: c.materialize.query_view("single_neurons", filter_greater_equal_dict={"volume": 0.001}, filter_less_dict={"id": 20}))
    for v in VERSIONS:
        both(pair, lambda c: c.materialize.query_view("single_neurons", materialization_version=v))
    both(pair, lambda c: c.materialize.query_view("synapse_connections", return_df=False, limit=3))
    both(pair, lambda c: c.materialize.query_view("no_such_view"), error=requests.HTTPError, status=404)


# -- live queries --------------------------------------------------------------------------------
MOMENTS = ["before_v1", "between_v1_v2", "between_v2_v3", "after_v3"]


@pytest.mark.parametrize("when", MOMENTS)
def test_live_live_query(pair, world, moments, when):
    ts = moments[when]
    live = roots_at(pair, world, ts)
    a, b, c3 = (int(x) for x in live[:3])
    syn = both(pair, lambda c: c.materialize.live_live_query("synapses", ts))
    assert len(syn) > 10_000
    counted = syn["post_pt_root_id"].value_counts()
    top = int(counted.index[0])
    for kwargs in (
        {"filter_in_dict": {"synapses": {"post_pt_root_id": [a, b]}}},
        {"filter_in_dict": {"synapses": {"post_pt_root_id": live[:3]}}},
        {"filter_equal_dict": {"synapses": {"post_pt_root_id": top}}, "split_positions": True},
        {"filter_equal_dict": {"synapses": {"pre_pt_root_id": live[0]}}, "desired_resolution": [1, 1, 1]},
        {
            "filter_out_dict": {"synapses": {"pre_pt_root_id": [top, c3]}},
            "filter_greater_dict": {"synapses": {"size": 500}},
            "select_columns": {"synapses": ["id", "size", "pre_pt_root_id", "post_pt_position"]},
        },
        {"filter_less_dict": {"synapses": {"size": 100}}, "filter_greater_equal_dict": {"synapses": {"id": 50}}, "limit": 40, "offset": 10},
        {"filter_spatial_dict": {"synapses": {"post_pt_position": BOX}}, "desired_resolution": [4, 4, 40], "split_positions": True},
        {"filter_less_equal_dict": {"synapses": {"size": 80}}, "metadata": False},
    ):
        both(pair, lambda c: c.materialize.live_live_query("synapses", ts, **kwargs))
    suffixes = {"cell_types": "", "nucleus_detection": "_nuc"}
    joins = [["cell_types", "target_id", "nucleus_detection", "id"]]
    both(pair, lambda c: c.materialize.live_live_query("cell_types", ts, joins=joins, suffixes=suffixes))
    both(
        pair,
        lambda c: c.materialize.live_live_query(
            "cell_types",
            ts,
            joins=joins,
            suffixes=suffixes,
            filter_in_dict={"nucleus_detection": {"pt_root_id": live.tolist()}},
            filter_regex_dict={"cell_types": {"cell_type": "P"}},
            select_columns={"cell_types": ["id", "cell_type"], "nucleus_detection": ["id", "pt_root_id", "pt_position"]},
        ),
    )
    both(pair, lambda c: c.materialize.live_live_query("nucleus_detection", ts.replace(tzinfo=None), filter_in_dict={"nucleus_detection": {"pt_root_id": live.tolist()}}))
    # proofreading_status was created between versions 1 and 2: the same error before it exists
    both(pair, lambda c: c.materialize.live_live_query("proofreading_status", ts))


def test_live_live_query_root_checks(pair, world, moments):
    """Roots that are not roots at the timestamp: refused, or dropped with a warning."""
    before = roots_at(pair, world, moments["before_v1"])
    after = roots_at(pair, world, moments["after_v3"])
    expired = sorted(set(before.tolist()) - set(after.tolist()))
    assert expired
    ts = moments["after_v3"]
    both(
        pair,
        lambda c: c.materialize.live_live_query("synapses", ts, filter_in_dict={"synapses": {"post_pt_root_id": expired[:1]}}),
        error=requests.HTTPError,
        status=400,
    )
    both(
        pair,
        lambda c: c.materialize.live_live_query(
            "synapses", ts, filter_in_dict={"synapses": {"post_pt_root_id": [expired[0], int(after[0])]}}, allow_invalid_root_ids=True
        ),
        server_warned=True,
    )
    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3)  # refused: the future is unknown
    both(pair, lambda c: c.materialize.live_live_query("synapses", future), error=requests.HTTPError, status=400)


@pytest.mark.parametrize("when", MOMENTS)
def test_live_query(pair, world, moments, stamps, when):
    ts = moments[when]
    live = roots_at(pair, world, ts)
    if when == "before_v1":  # no version before: the same ValueError
        both(pair, lambda c: c.materialize.live_query("synapses", ts), error=ValueError)
        both(pair, lambda c: c.materialize.query_table("synapses", timestamp=ts), error=ValueError)
        return
    a, b = (int(x) for x in live[:2])
    for kwargs in (
        {"filter_in_dict": {"post_pt_root_id": [a, b]}},
        {"filter_in_dict": {"post_pt_root_id": live[:3]}, "filter_equal_dict": {"pre_pt_root_id": live[3]}},
        {"filter_equal_dict": {"post_pt_root_id": a}, "split_positions": True, "desired_resolution": [4, 4, 40]},
        {"filter_out_dict": {"post_pt_root_id": live[:6].tolist()}, "filter_greater_equal_dict": {"size": 1000}},
        {"filter_in_dict": {"post_pt_root_id": [a]}, "post_filter": False},
        {"filter_in_dict": {"post_pt_root_id": [a, b]}, "select_columns": ["id", "post_pt_root_id", "post_pt_supervoxel_id", "size"]},
        {"filter_less_dict": {"size": 100}, "filter_less_equal_dict": {"id": 5000}, "filter_greater_dict": {"id": 10}},
        {"filter_spatial_dict": {"post_pt_position": BOX}, "limit": 30, "offset": 3},
    ):
        both(pair, lambda c: c.materialize.live_query("synapses", ts, **kwargs))
    both(pair, lambda c: c.materialize.live_query("nucleus_detection", ts, split_positions=True))
    # caveclient keys the filter to cell_types, which has no root column (that is in the
    # referenced nucleus_detection): refused alike, as a column of no table in the query
    both(pair, lambda c: c.materialize.live_query("cell_types", ts, filter_in_dict={"pt_root_id": live.tolist()}), error=requests.HTTPError, status=400)
    both(pair, lambda c: c.materialize.live_query("cell_types", ts, merge_reference=False, filter_equal_dict={"cell_type": "BC"}))
    # query_table(timestamp=...) is a live query
    both(pair, lambda c: c.materialize.query_table("synapses", timestamp=ts, filter_equal_dict={"post_pt_root_id": a}, desired_resolution=[4, 4, 40]))
    both(pair, lambda c: c.materialize.query_table("cell_types", timestamp=ts), real_suffixes=REF_SUFFIXES)
    both(pair, lambda c: c.materialize.synapse_query(post_ids=a, timestamp=ts))
    # include_zeros=False filters out root 0, and caveclient's live query asks the chunkedgraph when
    # root 0 was made before querying: there is no node 0, so both clients get the same 404 (its
    # message names the moment of the call, so the errors are compared by status and code)
    for failed in (outcome(lambda c: c.materialize.synapse_query(pre_ids=[a, b], timestamp=ts, include_zeros=False), c) for c in pair):
        assert isinstance(failed, requests.HTTPError), failed
        assert failed.response.status_code == 404 and failed.response.json()["error"] == "unknown_node"


def test_live_query_edges(pair, world, moments, stamps):
    # exactly at a version's time: a plain query of that version
    at_v2 = roots_at(pair, world, stamps[2])
    both(pair, lambda c: c.materialize.live_query("synapses", stamps[2], filter_equal_dict={"post_pt_root_id": int(at_v2[0])}))
    both(pair, lambda c: c.materialize.query_table("synapses", timestamp=stamps[2], materialization_version=2), error=ValueError)
    before = roots_at(pair, world, moments["before_v1"])
    after = roots_at(pair, world, moments["after_v3"])
    # a root that is no longer a root (refused by both clients), and one that did not exist yet
    both(pair, lambda c: c.materialize.live_query("synapses", moments["after_v3"], filter_in_dict={"post_pt_root_id": sorted(set(before.tolist()) - set(after.tolist()))[:1]}), error=ValueError)
    both(pair, lambda c: c.materialize.live_query("synapses", moments["between_v1_v2"], filter_in_dict={"post_pt_root_id": sorted(set(after.tolist()) - set(before.tolist()))[:1]}))


def test_live_query_mixed_id_types(pair, world, moments):
    """A numpy uint64 array in one filter and a Python int in another: caveclient mixes them
    into float64 and loses the ids' low bits (KeyError); opencave answers as caveclient does
    with ids of one type (client fix)."""
    genuine, ours = pair
    ts = moments["between_v2_v3"]
    live = roots_at(pair, world, ts)
    ours_df = ours.materialize.live_query(
        "synapses", ts, filter_in_dict={"post_pt_root_id": live[:3]}, filter_equal_dict={"pre_pt_root_id": int(live[3])}
    )
    expected = genuine.materialize.live_query(
        "synapses", ts, filter_in_dict={"post_pt_root_id": [int(x) for x in live[:3]]}, filter_equal_dict={"pre_pt_root_id": int(live[3])}
    )
    same_frames(expected, ours_df)


# -- the tables and views interfaces -------------------------------------------------------------
def test_tables_interface(pair, roots, moments):
    names = both(pair, lambda c: c.materialize.tables.table_names)
    assert set(TABLES) <= set(names)
    both(pair, lambda c: {t: list(c.materialize.tables[t].fields) for t in c.materialize.tables.table_names})
    both(pair, lambda c: c.materialize.tables.find("syn"))
    both(pair, lambda c: (len(c.materialize.tables), "synapses" in c.materialize.tables, repr(c.materialize.tables)))
    a, b = roots["a"], roots["b"]
    tables = lambda c: c.materialize.tables  # noqa: E731
    both(pair, lambda c: tables(c).synapses(post_pt_root_id=a).query())
    both(pair, lambda c: tables(c).synapses(post_pt_root_id=[a, b], size={">": 100, "<=": 900}).query(split_positions=True, select_columns=["id", "size", "post_pt_root_id"]))
    both(pair, lambda c: tables(c).synapses(post_pt_position_bbox=BOX, pre_pt_root_id=roots["pre"]).query(desired_resolution=[4, 4, 40]))
    both(pair, lambda c: tables(c).synapses(pre_pt_root_id=a).query(materialization_version=1))
    both(pair, lambda c: tables(c).synapses(pre_pt_root_id=a).query(get_counts=True))
    both(pair, lambda c: tables(c).synapses(size={">=": 2000}).query(limit=10, offset=4))
    both(pair, lambda c: tables(c).nucleus_detection(volume={">": 0.001}).query())
    both(pair, lambda c: tables(c).proofreading_status(status_axon=True).query())
    both(pair, lambda c: tables(c).proofreading_status.get_all())
    both(pair, lambda c: tables(c).cell_types(cell_type="BC").query(), real_suffixes={"cell_types": "_ref", "nucleus_detection": ""})
    both(pair, lambda c: tables(c).cell_types(pt_root_id=[a, b]).query(), real_suffixes={"cell_types": "_ref", "nucleus_detection": ""})
    errors = [outcome(lambda c: tables(c).cell_types(cell_type={">": "A"}), c) for c in pair]
    assert [type(e).__name__ for e in errors] == ["InvalidInequalityException"] * 2 and str(errors[0]) == str(errors[1])
    # live: the .live_query(ts) of the interface, and .query(timestamp=ts)
    for when in ("between_v1_v2", "after_v3"):
        ts = moments[when]
        both(pair, lambda c: tables(c).synapses(size={">": 1000}).live_query(ts, split_positions=True, limit=20))
        both(pair, lambda c: tables(c).cell_types(cell_type="BC").live_query(ts))
        both(pair, lambda c: tables(c).cell_types().query(timestamp=ts), real_suffixes=REF_SUFFIXES)


def test_tables_interface_live_roots(pair, world, moments):
    ts = moments["between_v1_v2"]
    a, b = (int(x) for x in roots_at(pair, world, ts)[:2])
    tables = lambda c: c.materialize.tables  # noqa: E731
    both(pair, lambda c: tables(c).synapses(post_pt_root_id=a).query(timestamp=ts))
    both(pair, lambda c: tables(c).synapses(post_pt_root_id=[a, b], size={"<": 300}).live_query(ts))
    both(pair, lambda c: tables(c).nucleus_detection(pt_root_id=[a, b]).live_query(ts, desired_resolution=[4, 4, 40]))
    # a reference table with filters at a timestamp: caveclient passes the filters to a method
    # that does not take them (TypeError); opencave answers as its .live_query (documented fix)
    genuine, ours = pair
    with pytest.raises(TypeError):
        genuine.materialize.tables.cell_types(cell_type="BC").query(timestamp=ts)
    same_frames(
        genuine.materialize.tables.cell_types(cell_type="BC").live_query(ts),
        ours.materialize.tables.cell_types(cell_type="BC").query(timestamp=ts),
    )


def test_views_interface(pair, roots):
    genuine, ours = pair
    both(pair, lambda c: c.materialize.views.table_names)
    views = lambda c: c.materialize.views  # noqa: E731
    both(pair, lambda c: views(c).synapse_connections(post_pt_root_id=[roots["a"], roots["b"]]).query())
    both(pair, lambda c: views(c).synapse_connections(n_synapses={">": 100}).query(limit=5))
    both(pair, lambda c: views(c).single_neurons(cell_type="BC").query(split_positions=True))
    both(pair, lambda c: views(c).single_neurons(volume={"<=": 0.002}).query(materialization_version=2, desired_resolution=[4, 4, 40]))
    # opencave names a view's box filter <column>_bbox (caveclient: pt_position_position_bbox,
    # which filters a column that does not exist): compare with the plain query_view
    assert "pt_position_bbox" in ours.materialize.views.single_neurons.fields
    box = [[0, 0, 0], [150, 150, 50]]
    same_frames(
        genuine.materialize.query_view("single_neurons", filter_spatial_dict={"pt_position": box}),
        ours.materialize.views.single_neurons(pt_position_bbox=box).query(),
    )


def test_version_pinned_clients(server, admin_token):
    """``CAVEclient(version=2, desired_resolution=...)``: the version and the resolution apply
    to every query, and changing the version later is followed."""
    forget_caveclient_caches()
    pair = (
        caveclient.CAVEclient(DS, server_address=server.url, auth_token=admin_token, version=2, desired_resolution=[4, 4, 40]),
        opencave.CAVEclient(DS, server_address=server.url, auth_token=admin_token, version=2, desired_resolution=[4, 4, 40]),
    )
    assert both(pair, lambda c: c.materialize.version) == 2
    both(pair, lambda c: c.materialize.get_timestamp())
    both(pair, lambda c: c.chunkedgraph.timestamp)
    both(pair, lambda c: c.materialize.get_tables())
    both(pair, lambda c: c.materialize.query_table("synapses", limit=100))
    both(pair, lambda c: c.materialize.query_table("nucleus_detection", split_positions=True))
    both(pair, lambda c: c.materialize.query_table("cell_types"), real_suffixes=REF_SUFFIXES)
    both(pair, lambda c: c.materialize.query_view("single_neurons"))
    both(pair, lambda c: c.materialize.join_query(SYN_NUC, limit=20), real_suffixes={"synapses": "_x", "nucleus_detection": "_y"})
    both(pair, lambda c: c.materialize.tables.nucleus_detection(volume={">": 0.001}).query())
    for client in pair:
        client.version = 1
    assert both(pair, lambda c: c.materialize.version) == 1
    both(pair, lambda c: c.materialize.get_tables())
    both(pair, lambda c: c.materialize.query_table("nucleus_detection"))
    both(pair, lambda c: c.materialize.tables.nucleus_detection().query())


def test_row_capped_answers(backend, server_factory):
    """A server started with ``--row-limit`` cuts answers and says so in a ``Warning`` header:
    the rows are the same for both clients, and opencave also keeps the warning in
    ``attrs["warnings"]`` with ``attrs["truncated"]`` True (documented)."""
    capped = server_factory(backend, "--row-limit", "500")
    token = capped.new_token()
    forget_caveclient_caches()
    pair = (
        caveclient.CAVEclient(DS, server_address=capped.url, auth_token=token),
        opencave.CAVEclient(DS, server_address=capped.url, auth_token=token),
    )
    stamps = {m["version"]: utc(m["time_stamp"]) for m in pair[0].materialize.get_versions_metadata()}
    for call in (
        lambda c: c.materialize.query_table("synapses"),
        lambda c: c.materialize.query_table("synapses", split_positions=True, desired_resolution=[4, 4, 40]),
        lambda c: c.materialize.join_query(SYN_NUC, suffixes={"synapses": "", "nucleus_detection": "_nuc"}),
        lambda c: c.materialize.live_live_query("synapses", stamps[2] + dt.timedelta(days=1)),
        lambda c: c.materialize.synapse_query(include_zeros=False),
    ):
        rows = both(pair, call, server_warned=True)
        assert 0 < len(rows) <= 500  # synapse_query drops autapses after the cut
    assert pair[1].materialize.query_table("synapses", limit=600).attrs["truncated"] is True
    small = both(pair, lambda c: c.materialize.query_table("nucleus_detection"))  # under the cap: no warning
    assert 0 < len(small) < 500
