"""``client.materialize``: exact requests (caveclient-spec §8.7, §9), the DataFrames and
``attrs`` they give, and side-by-side comparisons with the genuine caveclient 8.2.1."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
import requests
import responses

from opencave.client import materialize as mat_module
from opencave.client.errors import ServerIncompatibilityError
from opencave.client.materialize import MaterializationClient

from .helpers import DATASTACK, LOCAL
from .mat_mocks import (
    GOOD_TIME,
    M2,
    M3,
    MAT,
    QUERY_STRING,
    SYNAPSE_METADATA,
    VERSION_TIME,
    VERSIONS_METADATA,
    arrow_body,
    genuine_client,
    live_before_frame,
    mock_live_chunkedgraph,
    mock_local_services,
    mock_query,
    mock_table_metadata,
    mock_versions,
    opencave_client,
    query_of,
    request_json,
    synapse_frame,
)

T = "synapses"
SIMPLE = f"{M3}/version/1/table/{T}/query"
FILTERS = {
    "filter_in_dict": {"pre_pt_root_id": [500]},
    "filter_out_dict": {"post_pt_root_id": [501]},
    "filter_equal_dict": {"size": 100},
}
WIRE_BODY = {
    "filter_in_dict": {T: {"pre_pt_root_id": [500]}},
    "filter_notin_dict": {T: {"post_pt_root_id": [501]}},
    "filter_equal_dict": {T: {"size": 100}},
    "offset": 0,
    "limit": 1000,
}


@pytest.fixture
def server(rsps):
    mock_local_services(rsps)
    mock_versions(rsps)
    mock_table_metadata(rsps, T, SYNAPSE_METADATA)
    return rsps


@pytest.fixture
def client(server):
    return opencave_client()


@pytest.fixture
def mat(client, rsps) -> MaterializationClient:
    m = client.materialize
    rsps.calls.reset()
    return m


def last(rsps) -> requests.PreparedRequest:
    return rsps.calls[-1].request


def calls_to(rsps, fragment: str) -> list:
    return [c.request for c in rsps.calls if fragment in c.request.url]


# -- construction, versions, metadata -------------------------------------------------------


def test_construction(client, rsps):
    rsps.calls.reset()
    m = client.materialize
    assert [c.request.url for c in rsps.calls] == [f"{MAT}/api/versions", f"{MAT}/version"]
    assert client.materialize is m and m.fc is client
    assert m.api_version == 3 and str(m.server_version) == "5.13.0"
    assert m.datastack_name == DATASTACK and m.synapse_table == "synapses"
    assert m.default_url_mapping == {"me_server_address": LOCAL}
    assert m.session.headers["Authorization"].startswith("Bearer ")


def test_client_options_reach_materialize(server):
    client = opencave_client(desired_resolution=[1, 1, 1], timeout=(2, 5))
    assert client.materialize.desired_resolution == [1, 1, 1]
    assert client.materialize.session.timeout == (2, 5)
    assert client.annotation.session.timeout == (2, 5)


def test_standalone_client_has_no_tables_interface(server):
    from opencave.client.auth import AuthClient

    m = MaterializationClient(server_address=LOCAL, datastack_name=DATASTACK, auth_client=AuthClient(token="t" * 32))
    with pytest.raises(ValueError, match="No full CAVEclient specified"):
        m.tables  # noqa: B018
    with pytest.raises(ValueError, match="No chunkedgraph client specified"):
        m.cg_client  # noqa: B018


def test_api_2_fallback_when_the_probe_fails(server):
    server.upsert(responses.GET, f"{MAT}/api/versions", status=500)
    m = opencave_client().materialize
    assert m.api_version == 2
    mock_versions(server, api=2)
    assert m.get_versions() == [1, 2]
    assert calls_to(server, "/api/v2/datastack/test_stack/versions")


def test_get_versions_and_latest(mat, rsps):
    assert mat.get_versions(expired=True) == [1, 2]
    assert last(rsps).url == f"{M3}/versions?expired=True"
    assert mat.most_recent_version() == 2
    assert type(mat.most_recent_version()) is int
    assert last(rsps).url == f"{M3}/versions?expired=False"
    rsps.calls.reset()
    assert mat.version == 2 and mat.version == 2
    assert len(rsps.calls) == 1  # the latest version is looked up once


def test_version_setter(mat, rsps):
    mat.version = 1
    assert mat.version == 1
    with pytest.raises(ValueError, match="Version not in materialized database"):
        mat.version = 7
    mat.version = None
    assert mat.version == 2


def test_version_metadata_and_timestamp(mat, rsps):
    meta = mat.get_version_metadata(1)
    assert last(rsps).url == f"{M3}/version/1"
    assert meta["time_stamp"] == datetime(2021, 4, 12, 8, 10, 0, 255735, tzinfo=UTC)
    assert meta["expires_on"].tzinfo is not None
    assert mat.get_timestamp(1) == meta["time_stamp"]


def test_versions_metadata_is_cached(mat, rsps):
    rsps.get(f"{M3}/metadata", json=VERSIONS_METADATA)
    first = mat.get_versions_metadata()
    first[0]["version"] = 99  # callers cannot change the cache
    second = mat.get_versions_metadata()
    assert second[0]["version"] == 1 and second[0]["time_stamp"].tzinfo is not None
    assert len(calls_to(rsps, "/metadata")) == 1
    assert calls_to(rsps, "/metadata")[0].url == f"{M3}/metadata?expired=False"


def test_table_metadata(mat, rsps):
    meta = mat.get_table_metadata(T, version=1)
    assert last(rsps).url == f"{M3}/version/1/table/{T}/metadata"
    assert meta["voxel_resolution"] == [4.0, 4.0, 40.0]
    assert "voxel_resolution_x" not in meta
    # One request whatever the call style (caveclient keys its cache on the literal call).
    assert mat.get_table_metadata(T, DATASTACK, 1) == meta
    assert mat.get_table_metadata(table_name=T, version=1, log_warning=False) == meta
    assert len(rsps.calls) == 1


def test_table_metadata_missing_resolution_is_none(mat, rsps):
    mock_table_metadata(rsps, "bare", {"table_name": "bare"})
    assert mat.get_table_metadata("bare", version=1)["voxel_resolution"] == [None, None, None]


def test_tables_count_and_all_metadata(mat, rsps):
    rsps.get(f"{M2}/version/1/tables", json=["a", "b"])
    rsps.get(f"{M2}/version/1/table/a/count", json=12)
    rsps.get(f"{M3}/version/1/tables/metadata", json=[dict(SYNAPSE_METADATA)])
    assert mat.get_tables(version=1) == ["a", "b"]
    assert mat.get_annotation_count("a", version=1) == 12
    records = mat.get_tables_metadata(version=1)
    assert records[0]["voxel_resolution"] == [4.0, 4.0, 40.0]
    mat.get_tables_metadata(version=1)
    assert len(calls_to(rsps, "/tables/metadata")) == 1


def test_api_3_only_methods_are_gated_on_api_2(server):
    server.upsert(responses.GET, f"{MAT}/api/versions", json=[2])
    m = opencave_client().materialize
    with pytest.raises(ServerIncompatibilityError, match="get_views"):
        m.get_views(version=1)
    with pytest.raises(ServerIncompatibilityError, match="API version 3"):
        m.neuroglancer_annotation_path("t")


def test_ingest_and_lookup(mat, rsps):
    rsps.post(f"{MAT}/api/v2/materialize/run/ingest_annotations/datastack/{DATASTACK}/t", json={"status": "ok"})
    rsps.post(f"{MAT}/api/v2/materialize/run/lookup_svid/datastack/{DATASTACK}/t", json={"status": "ok"})
    assert mat.ingest_annotation_table("t") == {"status": "ok"}
    assert last(rsps).body is None
    mat.lookup_supervoxel_ids("t", annotation_ids=np.array([1, 2]))
    assert request_json(last(rsps)) == {"annotation_ids": [1, 2]}
    assert last(rsps).headers["Accept-Encoding"] == ""
    assert last(rsps).headers["Content-Type"] == "application/json"
    mat.lookup_supervoxel_ids("t")
    assert request_json(last(rsps)) == {}


def test_views_and_other_v3_endpoints(mat, rsps):
    rsps.get(f"{M3}/version/1/views", json={"v": {"description": "d"}})
    rsps.get(f"{M3}/version/1/views/v/metadata", json={"id": 5})
    rsps.get(f"{M3}/version/1/views/v/schema", json={"c": {"type": "integer"}})
    rsps.get(f"{M3}/version/1/views/schemas", json={"v": {"c": {"type": "integer"}}})
    rsps.get(f"{M3}/table/t/unique_string_values", json={"c": ["x"]})
    assert mat.get_views(version=1) == {"v": {"description": "d"}}
    assert mat.get_view_metadata("v", 1) == {"id": 5}
    assert mat.get_view_schema("v", materialization_version=1) == {"c": {"type": "integer"}}
    assert mat.get_view_schemas(1) == {"v": {"c": {"type": "integer"}}}
    assert mat.get_unique_string_values("t") == {"c": ["x"]}


def test_neuroglancer_paths(mat, rsps):
    base = f"{M3}/table/t/precomputed"
    assert mat.neuroglancer_annotation_path("t") == "precomputed://middleauth+" + base
    assert mat.neuroglancer_annotation_path("t", for_neuroglancer=False) == base
    assert mat.neuroglancer_segprop_path("t", materialization_version=7) == (
        f"precomputed://middleauth+{M3}/version/7/table/t"
    )
    rsps.get(base + "/info", json={"@type": "neuroglancer_annotations_v1"})
    rsps.get(f"{M3}/version/7/table/t/info", json={"@type": "neuroglancer_segment_properties"})
    assert mat.neuroglancer_annotation_info("t")["@type"] == "neuroglancer_annotations_v1"
    assert mat.neuroglancer_segprop_info("t", materialization_version=7)["@type"] == "neuroglancer_segment_properties"


def test_homepage(mat):
    html = mat.homepage._repr_html_()
    assert f'href="{LOCAL}/materialize/views/datastack/{DATASTACK}"' in html


# -- query_table ------------------------------------------------------------------------------


def test_query_table_request(mat, rsps):
    df = synapse_frame()
    mock_query(rsps, SIMPLE, df, body=WIRE_BODY)
    out = mat.query_table(T, **FILTERS, limit=1000, offset=0, materialization_version=1)
    request = calls_to(rsps, "/query")[0]
    assert request.url == f"{SIMPLE}?{QUERY_STRING}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept-Encoding"] == "zstd"
    assert request_json(request) == WIRE_BODY
    assert len(out) == 1000
    assert list(out.columns[-3:]) == ["pre_pt_position", "ctr_pt_position", "post_pt_position"]
    assert (
        out.pre_pt_position.iloc[0].tolist()
        == df.loc[0, ["pre_pt_position_x", "pre_pt_position_y", "pre_pt_position_z"]].tolist()
    )
    assert out.attrs["table_id"] == SYNAPSE_METADATA["id"]


def test_query_table_attrs(mat, rsps):
    mock_query(rsps, SIMPLE, synapse_frame(10), headers={"column_names": "{'synapses': {'id': 'id'}}"})
    out = mat.query_table(T, **FILTERS, materialization_version=1, select_columns=["id"])
    assert out.attrs == {
        "datastack_name": DATASTACK,
        "join_query": False,
        "table_aligned_volume": "test_volume",
        "table_id": 474,
        "table_schema": "synapse",
        "table_schema_type": "synapse",
        "table_valid": True,
        "table_created": "2021-04-29T05:58:42.196350",
        "table_name": "synapses",
        "table_description": "test synapse table",
        "table_flat_segmentation_source": "",
        "table_user_id": "56",
        "table_reference_table": None,
        "table_voxel_resolution": [4.0, 4.0, 40.0],
        "dataframe_resolution": [4.0, 4.0, 40.0],
        "filters": {
            "inclusive": {"pre_pt_root_id": [500]},
            "exclusive": {"post_pt_root_id": [501]},
            "equal": {"size": 100},
            "greater": None,
            "less": None,
            "greater_equal": None,
            "less_equal": None,
            "spatial": None,
            "regex": None,
        },
        "select_columns": ["id"],
        "offset": None,
        "limit": None,
        "live_query": False,
        "timestamp": None,
        "materialization_version": 1,
        "column_names": "{'synapses': {'id': 'id'}}",
    }


def test_query_table_spec_example_body(mat, rsps):
    mock_query(rsps, SIMPLE, synapse_frame(5))
    mat.query_table(
        T,
        filter_in_dict={"pre_pt_root_id": [10]},
        filter_spatial_dict={"pre_pt_position": [[0, 0, 0], [1, 1, 1]]},
        select_columns=["id"],
        limit=5,
        desired_resolution=[1, 1, 1],
        materialization_version=1,
    )
    assert request_json(calls_to(rsps, "/query")[0]) == {
        "filter_in_dict": {T: {"pre_pt_root_id": [10]}},
        "filter_spatial_dict": {T: {"pre_pt_position": [[0, 0, 0], [1, 1, 1]]}},
        "select_columns": ["id"],
        "limit": 5,
        "desired_resolution": [1, 1, 1],
    }


@pytest.mark.parametrize("server_converts", [True, False])
def test_desired_resolution(mat, rsps, server_converts):
    df = synapse_frame()
    scaled = df.copy()
    for point in ("pre_pt", "ctr_pt", "post_pt"):
        for axis, factor in zip("xyz", (4, 4, 40)):
            scaled[f"{point}_position_{axis}"] = scaled[f"{point}_position_{axis}"] * factor
    headers = {"dataframe_resolution": "1, 1, 1"} if server_converts else None
    mock_query(
        rsps,
        SIMPLE,
        scaled if server_converts else df,
        headers=headers,
        body={**WIRE_BODY, "desired_resolution": [1, 1, 1]},
    )
    out = mat.query_table(T, **FILTERS, limit=1000, offset=0, desired_resolution=[1, 1, 1], materialization_version=1)
    expected = df[["ctr_pt_position_x", "ctr_pt_position_y", "ctr_pt_position_z"]].to_numpy() * [4, 4, 40]
    assert np.array_equal(np.vstack(out.ctr_pt_position.to_numpy()), expected)
    assert out.attrs["dataframe_resolution"] == [1, 1, 1]


def test_client_default_desired_resolution(mat, rsps):
    mat.desired_resolution = [1, 1, 1]
    mock_query(rsps, SIMPLE, synapse_frame(3))
    out = mat.query_table(T, materialization_version=1)
    assert request_json(calls_to(rsps, "/query")[0]) == {"desired_resolution": [1, 1, 1]}
    assert out.pre_pt_position.iloc[0].dtype == np.float64


def test_desired_resolution_must_have_three_values(mat, rsps):
    mock_query(rsps, SIMPLE, synapse_frame(3))
    with pytest.raises(ValueError, match="desired resolution needs to be of length 3"):
        mat.query_table(T, materialization_version=1, desired_resolution=[1, 1])


def test_query_options(mat, rsps):
    mock_query(rsps, SIMPLE, pd.DataFrame({"count": [3]}))
    mat.query_table(T, materialization_version=1, get_counts=True, random_sample=50, split_positions=True)
    assert calls_to(rsps, "/query")[0].url == (
        f"{SIMPLE}?return_pyarrow=True&arrow_format=True&split_positions=True&random_sample=50&count=True&direct_sql_pandas=True"
    )
    with pytest.raises(ValueError, match="limit"):
        mat.query_table(T, materialization_version=1, limit=0)
    with pytest.raises(ValueError, match="select columns"):
        mat.query_table(T, materialization_version=1, select_columns="id")


def test_query_table_json(mat, rsps):
    rsps.post(SIMPLE, json=[{"id": 1}])
    assert mat.query_table(T, materialization_version=1, return_df=False) == [{"id": 1}]
    request = calls_to(rsps, "/query")[0]
    assert query_of(request)["return_pyarrow"] == ["False"] and query_of(request)["arrow_format"] == ["False"]
    assert request.headers["Accept-Encoding"] == "gzip"


def test_timestamp_and_version_exclusive(mat):
    with pytest.raises(ValueError, match="cannot specify timestamp and materialization version"):
        mat.query_table(T, timestamp=GOOD_TIME, materialization_version=1)


def test_unknown_content_type(mat, rsps):
    rsps.post(SIMPLE, body=b"{}", content_type="application/json")
    with pytest.raises(ValueError, match="Unknown response type: application/json"):
        mat.query_table(T, materialization_version=1)


def test_reference_table_is_joined(mat, rsps):
    mock_table_metadata(rsps, "cell_types", {**SYNAPSE_METADATA, "table_name": "cell_types", "reference_table": T})
    rsps.post(f"{M3}/version/1/query", body=arrow_body(pd.DataFrame({"id": [1]})), content_type="data.arrow")
    out = mat.query_table("cell_types", filter_equal_dict={"cell_type": "BC"}, materialization_version=1)
    assert request_json(calls_to(rsps, "/query")[0]) == {
        "tables": [["cell_types", "target_id"], [T, "id"]],
        "filter_equal_dict": {"cell_types": {"cell_type": "BC"}},
        "suffix_map": {"cell_types": "", T: "_ref"},
    }
    assert out.attrs["join_query"] is True
    assert out.attrs["tables"]["cell_types"]["suffix"] == ""
    assert out.attrs["tables"][T]["suffix"] == "_ref"
    assert out.attrs["dataframe_resolution"] == [4.0, 4.0, 40.0]
    rsps.calls.reset()
    mock_query(rsps, f"{M3}/version/1/table/cell_types/query", pd.DataFrame({"id": [1]}))
    mat.query_table("cell_types", materialization_version=1, merge_reference=False)
    assert calls_to(rsps, "/query")[0].url.startswith(f"{M3}/version/1/table/cell_types/query?")


def test_reference_join_on_api_2_uses_suffix_list(server):
    server.upsert(responses.GET, f"{MAT}/api/versions", json=[2])
    mock_table_metadata(server, "cell_types", {**SYNAPSE_METADATA, "reference_table": T}, api=2)
    server.post(f"{M2}/version/1/query", body=arrow_body(pd.DataFrame({"id": [1]})), content_type="data.arrow")
    m = opencave_client().materialize
    m.query_table("cell_types", materialization_version=1, metadata=False)
    assert request_json(calls_to(server, "/query")[0])["suffixes"] == ["", "ref"]


def test_warnings_and_truncation_in_attrs(mat, rsps, caplog):
    headers = [
        ("Warning", '201 - "Limited query to 3 rows'),
        ("Warning", "Table Owner Notice on synapses: beware, really"),
    ]
    mock_query(rsps, SIMPLE, synapse_frame(3), headers=headers)
    with caplog.at_level(logging.WARNING):
        out = mat.query_table(T, materialization_version=1)
    assert out.attrs["warnings"] == ['201 - "Limited query to 3 rows', "Table Owner Notice on synapses: beware, really"]
    assert out.attrs["truncated"] is True
    assert "Limited query" in caplog.text
    rsps.replace(
        responses.POST,
        SIMPLE,
        body=arrow_body(synapse_frame(3)),
        content_type="data.arrow",
        headers={"Warning": "notice"},
    )
    out = mat.query_table(T, materialization_version=1, metadata=False)
    assert out.attrs == {"warnings": ["notice"], "truncated": False}


def test_no_warning_keys_without_warnings(mat, rsps):
    mock_query(rsps, SIMPLE, synapse_frame(3))
    out = mat.query_table(T, materialization_version=1, metadata=False)
    assert out.attrs == {}


def test_old_server_fails_the_query_gate(server):
    server.upsert(responses.GET, f"{MAT}/version", json="4.13.0")
    m = opencave_client().materialize
    with pytest.raises(ServerIncompatibilityError, match="5.13.0"):
        m.query_table(T)
    server.upsert(responses.GET, f"{MAT}/version", json="5.13.0")


def test_inequality_filters_need_4_34_4(server):
    server.upsert(responses.GET, f"{MAT}/version", json="4.30.0")
    m = opencave_client().materialize
    with pytest.raises(ServerIncompatibilityError):
        m.query_table(T, filter_greater_dict={"size": 1})


def test_query_table_equals_caveclient(server):
    df = synapse_frame(200)
    mock_query(server, SIMPLE, df, headers={"column_names": "{}"})
    kwargs = dict(**FILTERS, limit=1000, offset=0, materialization_version=1)
    ours = opencave_client().materialize.query_table(T, **kwargs)
    theirs = genuine_client().materialize.query_table(T, **kwargs)
    pd.testing.assert_frame_equal(ours, theirs)
    assert ours.attrs == theirs.attrs
    ours = opencave_client().materialize.query_table(T, **kwargs, split_positions=True, desired_resolution=[2, 2, 20])
    theirs = genuine_client().materialize.query_table(T, **kwargs, split_positions=True, desired_resolution=[2, 2, 20])
    pd.testing.assert_frame_equal(ours, theirs)
    assert ours.attrs == theirs.attrs
    queries = calls_to(server, "/query")
    assert {(q.url, q.body) for q in queries[:1]} == {(q.url, q.body) for q in queries[1:2]}


# -- join_query -------------------------------------------------------------------------------


JOIN = [["cells", "target_id"], [T, "id"]]


def test_join_query(mat, rsps):
    mock_table_metadata(rsps, "cells", {**SYNAPSE_METADATA, "table_name": "cells", "id": 9})
    mock_query(rsps, f"{M3}/version/1/query", synapse_frame(4))
    out = mat.join_query(
        JOIN,
        filter_in_dict={T: {"pre_pt_root_id": [1]}},
        select_columns={"cells": ["id"], T: ["id", "pre_pt_position"]},
        suffixes={"cells": "_c", T: ""},
        materialization_version=1,
    )
    request = calls_to(rsps, "/query")[0]
    assert request.url == f"{M3}/version/1/query?{QUERY_STRING}"
    assert request_json(request) == {
        "tables": JOIN,
        "filter_in_dict": {T: {"pre_pt_root_id": [1]}},
        "select_column_map": {"cells": ["id"], T: ["id", "pre_pt_position"]},
        "suffix_map": {"cells": "_c", T: ""},
    }
    assert out.attrs["join_query"] is True
    assert out.attrs["tables"]["cells"] == {
        **{
            f"table_{k}" if not k.startswith("table") else k: v for k, v in SYNAPSE_METADATA.items() if "voxel" not in k
        },
        "table_name": "cells",
        "table_id": 9,
        "table_voxel_resolution": [4.0, 4.0, 40.0],
        "join_column": "target_id",
        "suffix": "_c",  # caveclient: "cells" (it zips the dict's keys)
    }
    assert "pre_pt_position" in out.columns


def test_join_query_lists_and_json(mat, rsps):
    rsps.post(f"{M3}/version/1/query", json=[{"id": 1}])
    assert mat.join_query(
        JOIN, select_columns=["id"], suffixes=["", "_t"], materialization_version=1, return_df=False
    ) == [{"id": 1}]
    body = request_json(calls_to(rsps, "/query")[0])
    assert body["select_columns"] == ["id"] and body["suffixes"] == ["", "_t"]


def test_join_query_mixed_resolutions(mat, rsps):
    mock_table_metadata(rsps, "cells", {**SYNAPSE_METADATA, "voxel_resolution_x": 8.0})
    mock_query(rsps, f"{M3}/version/1/query", pd.DataFrame({"id": [1]}))
    out = mat.join_query(JOIN, materialization_version=1)
    assert out.attrs["dataframe_resolution"] == "mixed_resolutions"
    assert out.attrs["tables"]["cells"]["suffix"] == "_x" and out.attrs["tables"][T]["suffix"] == "_y"


# -- live_query (caveclient-spec §9.8 worked example) ------------------------------------------


@pytest.fixture
def live_server(server):
    server.get(f"{M3}/metadata", json=VERSIONS_METADATA)
    cg_calls: list = []
    mock_live_chunkedgraph(server, cg_calls)
    return server, cg_calls


def _live_query_mock(rsps, body):
    mock_query(rsps, SIMPLE, live_before_frame(), body=body)


@pytest.mark.parametrize(
    ("filters", "body", "expected_ids"),
    [
        (
            {"filter_in_dict": {"pre_pt_root_id": [201, 103]}},
            {"filter_in_dict": {T: {"pre_pt_root_id": [100, 103]}}},
            [2, 3, 4, 5, 6],
        ),
        (
            {"filter_in_dict": {"post_pt_root_id": [201, 203]}},
            {"filter_in_dict": {T: {"post_pt_root_id": [100, 101, 102]}}},
            [1, 2, 3, 4, 5],
        ),
        (
            {"filter_equal_dict": {"post_pt_root_id": 203}},
            {"filter_in_dict": {T: {"post_pt_root_id": [101, 102]}}},
            [1, 2, 4],
        ),
    ],
)
def test_live_query_maps_filters_and_updates_roots(client, live_server, filters, body, expected_ids):
    rsps, cg_calls = live_server
    _live_query_mock(rsps, body)
    out = client.materialize.live_query(T, GOOD_TIME, **filters)
    assert out.id.tolist() == expected_ids
    expected_pre = {1: 200, 2: 201, 3: 103, 4: 201, 5: 103, 6: 103}
    expected_post = {1: 203, 2: 203, 3: 201, 4: 203, 5: 201, 6: 0}
    assert out.pre_pt_root_id.tolist() == [expected_pre[i] for i in expected_ids]
    assert out.post_pt_root_id.tolist() == [expected_post[i] for i in expected_ids]
    assert out.pre_pt_root_id.dtype == np.int64
    # Supervoxel 0 and root 0 never reach the chunkedgraph; roots are looked up in one call.
    assert all(0 not in ids for _, ids in cg_calls)
    assert [name for name, _ in cg_calls].count("roots_binary") == 1
    assert out.attrs["live_query"] is True
    assert out.attrs["timestamp"] == "2021-04-19T00:00:00.000000"
    assert out.attrs["materialization_version"] is None
    assert "column_names" not in out.attrs
    assert isinstance(out.pre_pt_position.iloc[0], np.ndarray)


def test_live_query_equals_caveclient(live_server):
    rsps, _ = live_server
    body = {"filter_in_dict": {T: {"pre_pt_root_id": [100, 103]}}}
    _live_query_mock(rsps, body)
    ours = opencave_client().materialize.live_query(T, GOOD_TIME, filter_in_dict={"pre_pt_root_id": [201, 103]})
    theirs = genuine_client().materialize.live_query(T, GOOD_TIME, filter_in_dict={"pre_pt_root_id": [201, 103]})
    pd.testing.assert_frame_equal(ours, theirs)
    assert ours.attrs == theirs.attrs


def test_live_query_non_root_filter_and_split_positions(client, live_server):
    rsps, _ = live_server
    df = pd.DataFrame(
        {
            "id": [1, 2, 3, 4],
            "pt_supervoxel_id": [1, 3, 6, 8],
            "pt_position_x": [1, 2, 3, 4],
            "pt_position_y": [5, 6, 7, 8],
            "pt_position_z": [9, 10, 11, 12],
            "pt_root_id": [100, 100, 102, 103],
            "cell_type": ["BC", "BC", "MC", "BC"],
        }
    )
    mock_table_metadata(rsps, "cell_types", {**SYNAPSE_METADATA, "table_name": "cell_types"})
    url = f"{M3}/version/1/table/cell_types/query"
    mock_query(rsps, url, df, body={"filter_equal_dict": {"cell_types": {"cell_type": "BC"}}})
    out = client.materialize.live_query(
        "cell_types", GOOD_TIME, filter_equal_dict={"cell_type": "BC"}, split_positions=True
    )
    assert out.pt_root_id.tolist() == [200, 201, 103]
    assert "pt_position_x" in out.columns


def test_live_query_rejects_bad_times_and_ids(client, live_server):
    with pytest.raises(ValueError, match="not recent enough"):
        client.materialize.live_query(T, datetime(2020, 4, 19, tzinfo=UTC), filter_in_dict={"pre_pt_root_id": [600]})
    with pytest.raises(ValueError, match=r"Timestamp incompatible with IDs: \[303\] are too recent"):
        client.materialize.live_query(T, GOOD_TIME, filter_in_dict={"pre_pt_root_id": [303]})
    with pytest.raises(ValueError, match=r"\[100\] are expired"):
        client.materialize.live_query(T, GOOD_TIME, filter_in_dict={"pre_pt_root_id": [100]})


def test_live_query_at_a_version_time_is_a_plain_query(client, live_server):
    rsps, cg_calls = live_server
    mock_query(rsps, SIMPLE, synapse_frame(2))
    version_time = datetime.strptime(VERSION_TIME, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
    out = client.materialize.query_table(T, timestamp=version_time)
    assert cg_calls == [] and out.attrs["live_query"] is False and out.attrs["materialization_version"] == 1


# -- live_live_query, synapse_query, query_view ------------------------------------------------


def test_live_live_query_request(mat, rsps, caplog):
    mock_query(rsps, f"{M3}/query", synapse_frame(3), headers={"dataframe_resolution": "4.0, 4.0, 40.0"})
    with caplog.at_level(logging.WARNING):
        out = mat.live_live_query(
            T,
            datetime(2024, 6, 6, tzinfo=UTC),
            joins=[[T, "id", "cells", "target_id"]],
            filter_in_dict={T: {"pre_pt_root_id": [1]}},
            filter_out_dict={T: {"post_pt_root_id": [2]}},
            select_columns={T: ["id"]},
            suffixes={T: ""},
            limit=10,
            random_sample=5,
            desired_resolution=[4, 4, 40],
        )
    request = calls_to(rsps, "/query")[0]
    assert request.url == (
        f"{M3}/query?return_pyarrow=True&arrow_format=True&merge_reference=False&allow_missing_lookups=False"
        "&allow_invalid_root_ids=False&direct_sql_pandas=True&random_sample=5"
    )
    assert request_json(request) == {
        "table": T,
        "timestamp": "2024-06-06T00:00:00+00:00",
        "join_tables": [[T, "id", "cells", "target_id"]],
        "filter_in_dict": {T: {"pre_pt_root_id": [1]}},
        "filter_notin_dict": {T: {"post_pt_root_id": [2]}},
        "select_columns": {T: ["id"]},
        "limit": 10,
        "suffixes": {T: ""},
        "desired_resolution": [4, 4, 40],
    }
    assert "Deprecation" in caplog.text
    assert out.attrs["dataframe_resolution"] == [4.0, 4.0, 40.0]
    assert out.attrs["filters"]["regex"] is None


def test_live_live_query_metadata_failure_says_what_to_do(mat, rsps):
    mock_query(rsps, f"{M3}/query", synapse_frame(1))
    rsps.get(f"{M3}/version/2/table/gone/metadata", status=404)
    rsps.get(f"{LOCAL}/annotation/api/v2/aligned_volume/test_volume/table/gone", status=404)
    with pytest.raises(requests.HTTPError, match="try with metadata=False"):
        mat.live_live_query("gone", GOOD_TIME)


def test_synapse_query(mat, rsps):
    df = synapse_frame(4)
    df.loc[0, "post_pt_root_id"] = 500  # an autapse
    url = f"{M3}/version/2/table/synapses/query"
    mock_query(rsps, url, df)
    out = mat.synapse_query(
        pre_ids=500, post_ids=np.array([501, 500]), include_zeros=False, bounding_box=[[0, 0, 0], [9, 9, 9]]
    )
    assert request_json(calls_to(rsps, "/query")[0]) == {
        "filter_in_dict": {T: {"post_pt_root_id": [501, 500]}},
        "filter_notin_dict": {T: {"pre_pt_root_id": [0], "post_pt_root_id": [0]}},
        "filter_equal_dict": {T: {"pre_pt_root_id": 500}},
        "filter_spatial_dict": {T: {"post_pt_position": [[0, 0, 0], [9, 9, 9]]}},
    }
    assert len(out) == 3 and out.attrs["remove_autapses"] is True
    rsps.calls.reset()
    out = mat.synapse_query(remove_autapses=False)
    assert request_json(calls_to(rsps, "/query")[0]) == {"filter_in_dict": {T: {}}, "filter_equal_dict": {T: {}}}
    assert len(out) == 4
    mat.synapse_table = None
    with pytest.raises(ValueError, match="Must define synapse table"):
        mat.synapse_query()


def test_query_view(mat, rsps):
    view_meta = {
        "id": 5,
        "description": "v",
        "voxel_resolution_x": 4.0,
        "voxel_resolution_y": 4.0,
        "voxel_resolution_z": 40.0,
    }
    rsps.get(f"{M3}/version/1/views/single/metadata", json=view_meta)
    url = f"{M3}/version/1/views/single/query"
    mock_query(rsps, url, pd.DataFrame({"id": [1], "pt_position_x": [1], "pt_position_y": [2], "pt_position_z": [3]}))
    out = mat.query_view("single", filter_in_dict={"pt_root_id": [1]}, materialization_version=1, get_counts=True)
    request = calls_to(rsps, "/query")[0]
    assert (
        request.url
        == f"{url}?return_pyarrow=True&arrow_format=True&split_positions=True&count=True&direct_sql_pandas=True"
    )
    assert request_json(request) == {"filter_in_dict": {"single": {"pt_root_id": [1]}}}
    assert out.attrs["table_id"] == 5 and out.attrs["join_query"] is False
    # caveclient raises KeyError here: view metadata has no combined voxel_resolution.
    assert out.attrs["dataframe_resolution"] == [4.0, 4.0, 40.0]
    assert out.pt_position.iloc[0].tolist() == [1, 2, 3]
    rsps.post(url, json=[{"id": 1}])
    assert mat.query_view("single", materialization_version=1, return_df=False) == [{"id": 1}]


# -- the framework's version -----------------------------------------------------------------


def test_framework_version_sets_timestamp_everywhere(server):
    client = opencave_client(version=1)
    expected = datetime(2021, 4, 12, 8, 10, 0, 255735, tzinfo=UTC)
    assert client.version == 1 and client.timestamp == expected
    assert any(c.request.url == f"{M3}/versions?expired=True" for c in server.calls)
    assert client.materialize.version == 1
    assert client.chunkedgraph.timestamp == expected
    with pytest.raises(ValueError, match="set at the CAVEclient level"):
        client.materialize.version = 2
    with pytest.raises(ValueError, match="set a version at the CAVEclient level"):
        client.chunkedgraph.timestamp = expected
    client.version = 2
    assert client.materialize.version == 2
    client.version = None
    assert client.timestamp is None and client.chunkedgraph.timestamp is None
    assert client.materialize.version == 2  # the latest


def test_framework_rejects_unknown_versions(server):
    with pytest.raises(ValueError, match="Version 10 is not available for this datastack."):
        opencave_client(version=10)
    client = opencave_client()
    with pytest.raises(ValueError, match="Version 10 is not available"):
        client.version = 10
    assert client.version is None and client.timestamp is None
    client.version = np.int64(1)
    assert client.version == 1 and type(client.version) is int


def test_framework_version_matches_caveclient(server):
    ours, theirs = opencave_client(version=1), genuine_client(version=1)
    assert ours.timestamp == theirs.timestamp
    assert ours.materialize.version == theirs.materialize.version


def test_encoded_bodies_equal_caveclient(server):
    """Bodies are byte-for-byte caveclient's (same key order, same encoder)."""
    mock_query(server, SIMPLE, synapse_frame(2))
    kwargs = {
        "filter_in_dict": {"pre_pt_root_id": np.array([1, 2])},
        "filter_equal_dict": {"size": np.int64(3)},
        "limit": 5,
        "materialization_version": 1,
    }
    opencave_client().materialize.query_table(T, **kwargs)
    genuine_client().materialize.query_table(T, **kwargs)
    ours, theirs = calls_to(server, "/query")
    assert ours.body == theirs.body and ours.url == theirs.url
    assert json.loads(ours.body)["filter_in_dict"] == {T: {"pre_pt_root_id": [1, 2]}}


def test_module_reexports():
    assert mat_module.DEFAULT_COMPRESSION == "zstd"
    for name in mat_module.__all__:
        assert hasattr(mat_module, name)


# -- module helpers --------------------------------------------------------------------------


def _positions_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [1, 2, 3],
            "pt_position_x": np.array([1, 2, 3], dtype=np.int32),
            "pt_position_y": np.array([4, 5, 6], dtype=np.int32),
            "pt_position_z": np.array([7, 8, 9], dtype=np.int32),
            "size": [1.5, 2.5, 3.5],
            "b_x": [1.0, 2.0, 3.0],
            "b_y": np.array([1, 2, 3], dtype=np.uint16),
            "b_z": [0.5, 0.5, 0.5],
            "lone_x": [1, 2, 3],  # not a full triple: kept
            "q_x": pd.array([1, None, 3], dtype="Int64"),
            "q_y": pd.array([1, 2, 3], dtype="Int64"),
            "q_z": pd.array([1, 2, 3], dtype="Int64"),
            "f_x": np.array([1, 2, 3], dtype=np.float32),
            "f_y": np.array([1, 2, 3], dtype=np.float32),
            "f_z": np.array([1, 2, 3], dtype=np.float32),
        }
    )


@pytest.mark.parametrize("inplace", [False, True])
def test_concatenate_position_columns_equals_caveclient(inplace):
    engine = pytest.importorskip("caveclient.materializationengine")
    ours_in, theirs_in = _positions_frame(), _positions_frame()
    ours = mat_module.concatenate_position_columns(ours_in, inplace=inplace)
    theirs = engine.concatenate_position_columns(theirs_in, inplace=inplace)
    pd.testing.assert_frame_equal(ours, theirs)
    for column in ("pt_position", "b", "q", "f"):
        assert [type(v) for v in ours[column]] == [type(v) for v in theirs[column]]
        assert [v.dtype for v in ours[column]] == [v.dtype for v in theirs[column]]
    assert (ours is ours_in) == inplace
    pd.testing.assert_frame_equal(ours_in, theirs_in)
    empty = _positions_frame().iloc[:0]
    pd.testing.assert_frame_equal(
        mat_module.concatenate_position_columns(empty), engine.concatenate_position_columns(empty.copy())
    )


def test_convert_position_columns_equals_caveclient():
    engine = pytest.importorskip("caveclient.materializationengine")
    for resolution in ([4, 4, 40], [1, 1, 1], [8, 8, 40]):
        ours = mat_module.convert_position_columns(_positions_frame(), [4, 4, 40], resolution)
        theirs = engine.convert_position_columns(_positions_frame(), [4, 4, 40], resolution)
        pd.testing.assert_frame_equal(ours, theirs)


def test_convert_timestamp():
    convert = mat_module.convert_timestamp
    naive = datetime(2024, 6, 5, 10, 10, 1, 203215)
    assert convert(naive) == naive.replace(tzinfo=UTC)
    assert convert("2024-06-05T10:10:01.203215") == naive.replace(tzinfo=UTC)
    assert convert("2024-06-05T10:10:01") == naive.replace(microsecond=0, tzinfo=UTC)
    from datetime import timedelta, timezone

    assert convert(datetime(2024, 6, 5, 12, tzinfo=timezone(timedelta(hours=2)))) == datetime(
        2024, 6, 5, 10, tzinfo=UTC
    )
    assert convert(0.0) == datetime(1970, 1, 1, tzinfo=UTC)  # caveclient: naive local time
    assert convert(None) == pd.Timestamp.max.to_pydatetime(warn=False)
    assert (datetime.now(UTC) - convert("now")).total_seconds() < 5
    assert mat_module.string_format_timestamp(naive) == "2024-06-05T10:10:01.203215"
    assert mat_module.string_format_timestamp("x") == "x"


def test_deserialize_query_response():
    def response(content_type: str, body: bytes) -> requests.Response:
        r = requests.Response()
        r.headers["Content-Type"] = content_type
        r._content = body
        return r

    df = pd.DataFrame({"id": np.arange(3), "ok": [True, False, True], "name": ["a", "b", None]})
    for compression in (None, "zstd", "lz4"):
        pd.testing.assert_frame_equal(
            mat_module.deserialize_query_response(response("data.arrow", arrow_body(df, compression))), df
        )
    with pytest.raises(ValueError, match="legacy"):
        mat_module.deserialize_query_response(response("x-application/pyarrow", b""))
    with pytest.raises(ValueError, match="Unknown response type: text/csv"):
        mat_module.deserialize_query_response(response("text/csv", b""))


def test_live_query_root_ids_of_mixed_types_stay_exact():
    """A uint64 array in one filter and a Python int in another must not be mixed into float64
    (caveclient does, losing the low bits of 64-bit root ids)."""
    from opencave.client.live import _filter_root_ids

    big = 288230376151711830
    ids = _filter_root_ids([{"post_pt_root_id": np.array([big, big + 5], dtype=np.uint64)}, None, {"pre_pt_root_id": big + 1}])
    assert ids.dtype == np.int64 and ids.tolist() == [big, big + 1, big + 5]
