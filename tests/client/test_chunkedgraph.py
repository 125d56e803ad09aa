"""``client.chunkedgraph``: exact requests (URL, query string, body, content type) and decoding,
plus the JSON encoder its bodies go through."""

from __future__ import annotations

import json
import logging
import struct
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import requests
import responses
from packaging.version import Version

from opencave import CAVEclient
from opencave.client.chunkedgraph import ChunkedGraphClient, package_timestamp
from opencave.client.errors import ServerIncompatibilityError
from opencave.wire.json_encoding import CaveJSONEncoder, dumps
from opencave.wire.node_ids import NodeIdLayout

from .helpers import DATASTACK, LOCAL, SERVER, TOKEN, mock_info_service

SEG = f"{LOCAL}/segmentation"
P = f"{SEG}/api/v1/table/test_v1"
T = datetime(2024, 6, 6, tzinfo=UTC)
TS = "1717632000.0"  # T as sent on the wire
T0 = T - timedelta(days=2)
BOUNDS = np.array([[0, 100], [0, 200], [0, 300]])
LAYOUT = NodeIdLayout.for_layers(6)
SEG_INFO = {
    "graph": {
        "n_layers": 6,
        "chunk_size": [256, 256, 512],
        "spatial_bit_masks": {str(k): v for k, v in LAYOUT.bits.items()},
    },
    "scales": [{"resolution": [8, 8, 40], "size": [1000, 1000, 100], "voxel_offset": [0, 0, 0]}],
    "app": {"supported_api_versions": [0, 1]},
}


def mock_cg_server(rsps, version: str | None = "2.18.0", api_versions=(0, 1)) -> None:
    rsps.get(f"{SEG}/api/versions", json=list(api_versions))
    if version is None:
        rsps.get(f"{SEG}/api/version", status=404)
    else:
        rsps.get(f"{SEG}/api/version", json=version)


@pytest.fixture
def client(rsps):
    mock_info_service(rsps)
    return CAVEclient(DATASTACK, server_address=SERVER, auth_token=TOKEN)


@pytest.fixture
def make_cg(client, rsps):
    def make(version: str | None = "2.18.0", api_versions=(0, 1)) -> ChunkedGraphClient:
        mock_cg_server(rsps, version, api_versions)
        client._reset_services()
        cg = client.chunkedgraph
        rsps.calls.reset()
        return cg

    return make


@pytest.fixture
def cg(make_cg) -> ChunkedGraphClient:
    return make_cg()


def last(rsps) -> requests.PreparedRequest:
    return rsps.calls[-1].request


def text(request) -> str:
    return request.body.decode() if isinstance(request.body, bytes) else request.body


def assert_json_request(request, method: str, url: str, body: str, content_type: bool) -> None:
    assert request.method == method
    assert request.url == url
    assert text(request) == body
    assert ("Content-Type" in request.headers) is content_type
    if content_type:
        assert request.headers["Content-Type"] == "application/json"


def posix_param(request, name: str) -> float:
    from urllib.parse import parse_qs, urlsplit

    return float(parse_qs(urlsplit(request.url).query)[name][0])


def squash(message: str) -> str:
    return " ".join(message.split())


# --------------------------------------------------------------------------------------------
# Construction and framework wiring


def test_construction_requests_and_properties(client, rsps):
    mock_cg_server(rsps)
    before = len(rsps.calls)
    cg = client.chunkedgraph
    probe, version = (call.request for call in rsps.calls[before:])
    assert probe.url == f"{SEG}/api/versions"
    assert "Cookie" not in probe.headers and probe.headers["Authorization"] == f"Bearer {TOKEN}"
    assert version.url == f"{SEG}/api/version"
    assert version.headers["Cookie"] == f"middle_auth_token={TOKEN}"
    assert cg.api_version == 1
    assert cg.server_version == Version("2.18.0")
    assert cg.table_name == "test_v1"
    assert cg.server_address == LOCAL
    assert cg.default_url_mapping == {"cg_server_address": LOCAL, "table_id": "test_v1"}
    assert cg.fc is client
    assert client.chunkedgraph is cg
    assert cg.cloudvolume_path == f"graphene://{LOCAL}/segmentation/api/v1/test_v1"


def test_legacy_api_and_fallback(make_cg, rsps):
    legacy = make_cg(api_versions=(0,))
    assert legacy.api_version == 0
    assert legacy.cloudvolume_path == f"graphene://{LOCAL}/segmentation/1.0/test_v1"
    rsps.get(f"{SEG}/1.0/segment/10/children", json={"children_ids": [1]})
    assert legacy.get_children(10).tolist() == [1]

    rsps.replace(responses.GET, f"{SEG}/api/versions", status=404)
    assert make_cg().api_version == 1  # the server cannot say: newest known


def test_missing_version_endpoint_gives_none(make_cg):
    assert make_cg(version=None).server_version is None


def test_requests_use_client_timeout(rsps):
    mock_info_service(rsps)
    mock_cg_server(rsps)
    cg = CAVEclient(DATASTACK, server_address=SERVER, auth_token=TOKEN, timeout=7).chunkedgraph
    rsps.get(f"{P}/node/10/children", json={"children_ids": []})
    cg.get_children(10)
    assert cg.timeout == 7.0
    assert last(rsps).req_kwargs["timeout"] == 7.0


def test_standalone_client(rsps):
    mock_cg_server(rsps)
    cg = ChunkedGraphClient(server_address=LOCAL, table_name="test_v1", auth_client=_auth(), timestamp=T)
    assert cg.fc is None and cg.timestamp == T
    rsps.post(f"{P}/is_latest_roots", json={"is_latest": [True]})
    cg.is_latest_roots([1])
    assert last(rsps).url == f"{P}/is_latest_roots?timestamp={TS}"


def _auth():
    from opencave.client.auth import AuthClient

    return AuthClient(token=TOKEN)


# --------------------------------------------------------------------------------------------
# Timestamps


def test_package_timestamp_forms():
    assert package_timestamp(None) == {}
    assert package_timestamp(T) == {"timestamp": 1717632000.0}
    assert package_timestamp(datetime(2024, 6, 6), "x") == {"x": 1717632000.0}  # naive = UTC
    plus_two = datetime(2024, 6, 6, 2, tzinfo=timezone(timedelta(hours=2)))
    assert package_timestamp(plus_two) == {"timestamp": 1717632000.0}


def test_timestamp_property_and_setter(client, cg):
    assert cg.timestamp is None
    cg.timestamp = T
    assert cg.timestamp == T
    with pytest.raises(TypeError, match="`timestamp` must be a datetime object or None."):
        cg.timestamp = "2024-06-06"
    cg.timestamp = None
    assert cg.timestamp is None


def test_framework_timestamp_wins(client, cg, rsps):
    cg.timestamp = T0
    client._timestamp = T  # what setting a materialization version does
    assert cg.timestamp == T
    with pytest.raises(ValueError, match="Cannot set `timestamp` when attached to a CAVEclient with a version"):
        cg.timestamp = T0
    rsps.post(f"{P}/roots_binary", body=b"")
    cg.get_roots([])
    assert last(rsps).url == f"{P}/roots_binary?timestamp={TS}"


def test_default_timestamp_is_now(cg, rsps):
    rsps.post(f"{P}/roots_binary", body=b"")
    before = datetime.now(UTC).timestamp()
    cg.get_roots([1])
    assert before <= posix_param(last(rsps), "timestamp") <= datetime.now(UTC).timestamp()


# --------------------------------------------------------------------------------------------
# Roots and leaves


def test_get_roots_binary(cg, rsps):
    ids = [1, 2, 2**63 + 5]
    answer = [10, 10, 2**64 - 1]
    rsps.post(f"{P}/roots_binary", body=struct.pack("<3Q", *answer))
    roots = cg.get_roots(ids, timestamp=T, stop_layer=3)
    request = last(rsps)
    assert request.method == "POST"
    assert request.url == f"{P}/roots_binary?timestamp={TS}&stop_layer=3"
    assert request.body == struct.pack("<3Q", *ids)
    assert "Content-Type" not in request.headers
    assert roots.dtype == np.uint64 and roots.tolist() == answer


def test_get_root_id(cg, rsps):
    rsps.get(f"{P}/node/123/root", json={"root_id": 456})
    root = cg.get_root_id(123, timestamp=T)
    assert last(rsps).url == f"{P}/node/123/root?timestamp={TS}"
    assert type(root) is np.int64 and root == 456
    cg.get_root_id(123, timestamp=datetime(2024, 6, 6), level2=True)
    assert last(rsps).url == f"{P}/node/123/root?timestamp={TS}&stop_layer=2"


def test_get_leaves(cg, rsps):
    rsps.get(f"{P}/node/10/leaves", json={"leaf_ids": [1, 2, 3]})
    leaves = cg.get_leaves(10, bounds=BOUNDS, stop_layer=2)
    assert last(rsps).url == f"{P}/node/10/leaves?bounds=0-100_0-200_0-300&stop_layer=2"
    assert leaves.dtype == np.int64 and leaves.tolist() == [1, 2, 3]
    cg.get_leaves(10)
    assert last(rsps).url == f"{P}/node/10/leaves"


def test_bad_bounds(cg, rsps):
    with pytest.raises(
        ValueError,
        match=r"^Bounds must be a 3x2 matrix \(x,y,z\) x \(min,max\) in chunkedgraph resolution voxel units$",
    ):
        cg.get_leaves(10, bounds=np.array([0, 100]))
    assert len(rsps.calls) == 0


def test_get_leaves_many(cg, rsps):
    rsps.post(f"{P}/node/leaves_many", json={"10": [1, 2], "11": [3]})
    leaves = cg.get_leaves_many(np.array([10, 11], dtype=np.uint64), bounds=BOUNDS, stop_layer=2)
    assert_json_request(
        last(rsps),
        "POST",
        f"{P}/node/leaves_many?bounds=0-100_0-200_0-300&stop_layer=2",
        '{"node_ids": [10, 11]}',
        content_type=True,
    )
    assert list(leaves) == [10, 11] and all(type(k) is np.int64 for k in leaves)
    assert leaves[np.int64(10)].dtype == np.int64 and leaves[np.int64(10)].tolist() == [1, 2]


def test_get_children(cg, rsps):
    rsps.get(f"{P}/node/10/children", json={"children_ids": [1, 2]})
    children = cg.get_children(10)
    assert last(rsps).url == f"{P}/node/10/children"
    assert children.dtype == np.int64 and children.tolist() == [1, 2]


def test_minimal_covering_nodes(cg, rsps):
    rsps.post(f"{P}/minimal_covering_nodes", body=struct.pack("<2Q", 7, 2**63 + 8))
    nodes = cg.get_minimal_covering_nodes(np.array([1, 2], dtype=np.uint64))
    assert_json_request(
        last(rsps), "POST", f"{P}/minimal_covering_nodes?as_array=True", '{"node_ids": [1, 2]}', content_type=True
    )
    assert nodes.dtype == np.uint64 and nodes.tolist() == [7, 2**63 + 8]


def test_minimal_covering_nodes_checks_status(cg, rsps):
    rsps.post(f"{P}/minimal_covering_nodes", status=500, json={"message": "no"})
    with pytest.raises(requests.HTTPError, match="500 Server Error: no"):
        cg.get_minimal_covering_nodes([1])


@pytest.mark.parametrize("version", ["2.17.9", "3.0.4", "4.0.0"])
def test_minimal_covering_nodes_version_gate(make_cg, rsps, version):
    cg = make_cg(version)
    with pytest.raises(ServerIncompatibilityError) as caught:
        cg.get_minimal_covering_nodes([1])
    assert squash(str(caught.value)) == (
        "Use of method `get_minimal_covering_nodes` is only permitted for server version "
        f"<3,>=2.18.0 or <4,>=3.0.5. Your server version is {version}. Contact your system "
        "administrator to update the server version."
    )
    assert len(rsps.calls) == 0


def test_minimal_covering_nodes_on_3_0_5(make_cg, rsps):
    cg = make_cg("3.0.5")
    rsps.post(f"{P}/minimal_covering_nodes", body=b"")
    assert cg.get_minimal_covering_nodes([1]).size == 0


# --------------------------------------------------------------------------------------------
# Edit history


def test_merge_and_change_log(cg, rsps):
    merge_log = {"merge_edges": [[[1, 2]]], "merge_edge_coords": [[[[1, 2, 3]], [[4, 5, 6]]]]}
    change_log = {"n_mergers": 1, "n_splits": 0, "operations_ids": [5], "past_ids": [9], "user_info": {}}
    rsps.get(f"{P}/root/10/merge_log", json=merge_log)
    rsps.get(f"{P}/root/10/change_log", json=change_log)
    assert cg.get_merge_log(10) == merge_log
    assert last(rsps).url == f"{P}/root/10/merge_log"
    assert cg.get_change_log(10) == change_log
    assert last(rsps).url == f"{P}/root/10/change_log?filtered=True"
    cg.get_change_log(10, filtered=False)
    assert last(rsps).url == f"{P}/root/10/change_log?filtered=False"


def test_get_user_operations(cg, rsps):
    rsps.get(
        f"{P}/user_operations",
        json=[{"operation_id": 1, "timestamp": 1717632000000, "user_id": 5}],
    )
    df = cg.get_user_operations(5, T0, timestamp_end=T)
    t0 = T0.timestamp()
    assert last(rsps).url == f"{P}/user_operations?include_undo=True&user_id=5&start_time={t0}&end_time={TS}"
    assert list(df.columns) == ["operation_id", "timestamp", "user_id"]
    assert str(df["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert df["timestamp"].iloc[0] == pd.Timestamp("2024-06-06", tz="UTC")

    cg.get_user_operations(0, T0, include_undo=False)
    assert last(rsps).url == f"{P}/user_operations?include_undo=False&start_time={t0}"


def test_get_user_operations_empty(cg, rsps):
    rsps.get(f"{P}/user_operations", json=[])
    assert cg.get_user_operations(0, T0).empty


def test_get_tabular_change_log(cg, rsps):
    table = pd.DataFrame(
        {"operation_id": [1], "timestamp": [1717632000000], "user_id": [5], "is_merge": [True]}
    ).to_json()
    rsps.get(f"{P}/tabular_change_log_many", json={"3": table, "5": table})
    logs = cg.get_tabular_change_log([5, 3, 5])
    assert_json_request(
        last(rsps), "GET", f"{P}/tabular_change_log_many?filtered=True", '{"root_ids": [3, 5]}', content_type=False
    )
    assert sorted(logs) == [3, 5] and all(type(k) is int for k in logs)
    assert list(logs[5].columns) == ["operation_id", "timestamp", "user_id", "is_merge"]
    assert logs[5]["operation_id"].tolist() == [1]
    cg.get_tabular_change_log(np.array([3]), filtered=False)
    assert last(rsps).url == f"{P}/tabular_change_log_many?filtered=False"


@pytest.mark.parametrize("ids", [[1, 2], np.array([1, 2]), (1, 2)])
def test_get_operation_details(cg, rsps, ids):
    details = {"1": {"user": "5", "timestamp": "2024-06-06T00:00:00"}}
    rsps.get(f"{P}/operation_details", json=details)
    assert cg.get_operation_details(ids) == details
    request = last(rsps)
    assert request.url == f"{P}/operation_details?operation_ids=%5B1%2C+2%5D"  # "[1, 2]"
    assert request.body is None


def test_get_operation_details_single_id_and_error(cg, rsps):
    rsps.get(f"{P}/operation_details", json={})
    cg.get_operation_details(np.int64(3))
    assert last(rsps).url == f"{P}/operation_details?operation_ids=%5B3%5D"
    rsps.replace(responses.GET, f"{P}/operation_details", status=400, body=b"bad ids")
    with pytest.raises(requests.HTTPError, match="400 Client Error: Bad Request for url: .* content: b'bad ids'"):
        cg.get_operation_details([1])


# --------------------------------------------------------------------------------------------
# Lineage


def _node(node_id: int, when: datetime) -> dict:
    return {"id": node_id, "timestamp": when.timestamp(), "operation_id": None}


LINEAGE = {
    "directed": True,
    "multigraph": False,
    "graph": {},
    "nodes": [_node(100, T0), _node(200, T - timedelta(days=1)), _node(300, T + timedelta(days=1))],
    "links": [{"source": 100, "target": 200}, {"source": 200, "target": 300}],
}


def test_get_lineage_graph_request(cg, rsps):
    rsps.post(f"{P}/lineage_graph_multiple", json=LINEAGE)
    assert cg.get_lineage_graph([300, 100, 300], timestamp_past=T0, timestamp_future=T) == LINEAGE
    assert_json_request(
        last(rsps),
        "POST",
        f"{P}/lineage_graph_multiple?timestamp_past={T0.timestamp()}&timestamp_future={TS}",
        '{"root_ids": [100, 300]}',
        content_type=False,
    )


def test_get_lineage_graph_default_future(cg, rsps):
    rsps.post(f"{P}/lineage_graph_multiple", json=LINEAGE)
    cg.get_lineage_graph(100)
    assert last(rsps).url == f"{P}/lineage_graph_multiple"  # the server's default: now
    cg.timestamp = T
    cg.get_lineage_graph(100)
    assert last(rsps).url == f"{P}/lineage_graph_multiple?timestamp_future={TS}"
    assert text(last(rsps)) == '{"root_ids": [100]}'


def test_get_lineage_graph_exclusions(cg, rsps):
    rsps.post(f"{P}/lineage_graph_multiple", json=LINEAGE)
    future_cut = cg.get_lineage_graph(100, timestamp_future=T, exclude_links_to_future=True)
    assert [n["id"] for n in future_cut["nodes"]] == [100, 200]
    assert future_cut["links"] == [{"source": 100, "target": 200}]
    past_cut = cg.get_lineage_graph(
        100, timestamp_past=datetime(2024, 6, 4, 12), exclude_links_to_past=True  # naive: UTC
    )
    assert [n["id"] for n in past_cut["nodes"]] == [200, 300]
    assert past_cut["links"] == [{"source": 200, "target": 300}]
    # Without the matching timestamp there is nothing to cut.
    assert cg.get_lineage_graph(100, exclude_links_to_past=True) == LINEAGE
    assert cg.get_lineage_graph(100, exclude_links_to_future=True) == LINEAGE
    cg.timestamp = T  # the default future, for the request and the cut alike
    default_cut = cg.get_lineage_graph(100, exclude_links_to_future=True)
    assert [n["id"] for n in default_cut["nodes"]] == [100, 200]


def test_get_lineage_graph_as_nx(cg, rsps):
    nx = pytest.importorskip("networkx")
    rsps.post(f"{P}/lineage_graph_multiple", json=LINEAGE)
    graph = cg.get_lineage_graph(100, as_nx_graph=True)
    assert isinstance(graph, nx.DiGraph)
    assert list(graph.nodes) == [100, 200, 300]
    assert list(graph.edges) == [(100, 200), (200, 300)]


def test_get_latest_roots_forward(cg, rsps):
    rsps.post(f"{P}/root_timestamps", json={"timestamp": [T0.timestamp()]})
    rsps.post(f"{P}/lineage_graph_multiple", json=LINEAGE)
    latest = cg.get_latest_roots(100, timestamp=T)
    assert latest.tolist() == [200]  # 300 is newer than T and cut off
    stamps, lineage = (call.request for call in rsps.calls)
    assert stamps.url.startswith(f"{P}/root_timestamps?latest=False&timestamp=")
    assert text(stamps) == '{"node_ids": [100]}'
    assert lineage.url == f"{P}/lineage_graph_multiple?timestamp_past={T0.timestamp()}&timestamp_future={TS}"


def test_get_latest_roots_backward_and_deprecated_name(cg, rsps, caplog):
    created = T + timedelta(days=1)
    rsps.post(f"{P}/root_timestamps", json={"timestamp": [created.timestamp()]})
    rsps.post(f"{P}/lineage_graph_multiple", json=LINEAGE)
    with caplog.at_level(logging.WARNING):
        roots = cg.get_latest_roots(300, timestamp_future=datetime(2024, 6, 6))
    assert "timestamp_future is deprecated, use timestamp instead" in caplog.text
    assert roots.tolist() == [100]
    assert last(rsps).url == (
        f"{P}/lineage_graph_multiple?timestamp_past={TS}&timestamp_future={created.timestamp()}"
    )


def test_get_original_roots(cg, rsps):
    created = T + timedelta(days=1)
    rsps.post(f"{P}/root_timestamps", json={"timestamp": [created.timestamp()]})
    rsps.post(f"{P}/lineage_graph_multiple", json=LINEAGE)
    assert cg.get_original_roots(300).tolist() == [100]
    assert last(rsps).url == f"{P}/lineage_graph_multiple?timestamp_future={created.timestamp()}"


def test_lineage_degrees_match_networkx():
    nx = pytest.importorskip("networkx")
    from opencave.client.chunkedgraph import _lineage_degrees

    graph = {
        "directed": True,
        "multigraph": False,
        "graph": {},
        "nodes": [{"id": 5}, {"id": 1}, {"id": 9}],
        "links": [{"source": 1, "target": 5}, {"source": 1, "target": 5}, {"source": 7, "target": 1}],
    }
    reference = nx.node_link_graph(graph, edges="links")
    nodes, in_degree, out_degree = _lineage_degrees(graph)
    assert nodes.tolist() == list(reference.nodes)
    assert in_degree.tolist() == [d for _, d in reference.in_degree]
    assert out_degree.tolist() == [d for _, d in reference.out_degree]


# --------------------------------------------------------------------------------------------
# Root status


def test_is_latest_roots(cg, rsps):
    rsps.post(f"{P}/is_latest_roots", json={"is_latest": [True, False]})
    result = cg.is_latest_roots([1, 2])
    assert_json_request(last(rsps), "POST", f"{P}/is_latest_roots", '{"node_ids": [1, 2]}', content_type=False)
    assert result.dtype == bool and result.tolist() == [True, False]
    cg.is_latest_roots(np.array([2**63 + 1], dtype=np.uint64), timestamp=T)
    assert_json_request(
        last(rsps), "POST", f"{P}/is_latest_roots?timestamp={TS}", f'{{"node_ids": [{2**63 + 1}]}}', content_type=False
    )
    cg.timestamp = T
    cg.is_latest_roots(7)
    assert last(rsps).url == f"{P}/is_latest_roots?timestamp={TS}"
    assert text(last(rsps)) == '{"node_ids": [7]}'


def test_root_id_checks(cg, rsps):
    rsps.post(f"{P}/is_latest_roots", json={"is_latest": [True]})
    cg.is_latest_roots("12")
    assert text(last(rsps)) == '{"node_ids": [12]}'
    with pytest.raises(ValueError, match="make sure the string can be converted to a uint64"):
        cg.is_latest_roots("abc")
    with pytest.raises(ValueError, match="^root_id has to be list or uint64$"):
        cg.is_latest_roots({1, 2})


def test_suggest_latest_roots(cg, rsps):
    rsps.get(f"{SEG}/table/test_v1/info", json=SEG_INFO)
    rsps.get(f"{P}/node/10/leaves", json={"leaf_ids": list(range(1, 11))})
    roots = [201] * 7 + [202] * 2 + [203]
    rsps.post(f"{P}/roots_binary", body=np.array(roots, dtype=np.uint64).tobytes())

    best = cg.suggest_latest_roots(10, timestamp=T)
    assert type(best) is int and best == 201
    info, leaves, lookup = (call.request for call in rsps.calls)
    assert info.url == f"{SEG}/table/test_v1/info"
    assert leaves.url == f"{P}/node/10/leaves?stop_layer=2"  # 6 layers - 4
    assert lookup.url == f"{P}/roots_binary?timestamp={TS}"
    assert lookup.body == np.arange(1, 11, dtype=np.uint64).tobytes()

    best, fraction = cg.suggest_latest_roots(10, return_fraction_overlap=True)
    assert (best, fraction) == (201, 0.7) and type(fraction) is float
    assert cg.suggest_latest_roots(10, return_all=True).tolist() == [201, 202, 203]
    ids, fractions = cg.suggest_latest_roots(10, return_all=True, return_fraction_overlap=True)
    assert ids.tolist() == [201, 202, 203]
    np.testing.assert_allclose(fractions, [0.7, 0.2, 0.1])
    cg.suggest_latest_roots(10, stop_layer=0)
    assert any(c.request.url == f"{P}/node/10/leaves?stop_layer=1" for c in rsps.calls)


def test_is_valid_nodes(cg, rsps):
    rsps.get(f"{P}/valid_nodes", json={"valid_roots": [5]})
    result = cg.is_valid_nodes([5, 0, -1, 6])
    assert_json_request(
        last(rsps), "GET", f"{P}/valid_nodes?start_timestamp=946684800.0", '{"node_ids": [5, 6]}', content_type=False
    )
    assert result.dtype == bool and result.tolist() == [True, False, False, False]
    cg.is_valid_nodes([5], start_timestamp=T0, end_timestamp=T)
    assert last(rsps).url == f"{P}/valid_nodes?start_timestamp={T0.timestamp()}&end_timestamp={TS}"
    cg.timestamp = T
    cg.is_valid_nodes([5])
    assert last(rsps).url == f"{P}/valid_nodes?start_timestamp=946684800.0&end_timestamp={TS}"


def test_is_valid_nodes_without_candidates_asks_nothing(cg, rsps):
    assert cg.is_valid_nodes([0, -3]).tolist() == [False, False]
    assert len(rsps.calls) == 0


def test_get_root_timestamps(cg, rsps):
    rsps.post(f"{P}/root_timestamps", json={"timestamp": [1717632000.5]})
    stamps = cg.get_root_timestamps([1], timestamp=T)
    assert_json_request(
        last(rsps), "POST", f"{P}/root_timestamps?latest=False&timestamp={TS}", '{"node_ids": [1]}', content_type=False
    )
    assert stamps.tolist() == [datetime(2024, 6, 6, 0, 0, 0, 500000, tzinfo=UTC)]
    latest = cg.get_root_timestamps(np.array([1]), latest=True, timestamp=T)
    assert last(rsps).url == f"{P}/root_timestamps?latest=True&timestamp={TS}"
    assert latest.tolist() == [datetime(2024, 6, 6, 0, 0, 0, 499000, tzinfo=UTC)]


def test_get_root_timestamps_version_gate(make_cg, rsps):
    cg = make_cg("2.16.0")
    rsps.post(f"{P}/root_timestamps", json={"timestamp": [1717632000.0]})
    assert len(cg.get_root_timestamps([1])) == 1  # defaults are not checked
    assert posix_param(last(rsps), "timestamp") > 1717632000  # timestamp always sent
    for kwargs in ({"latest": True}, {"timestamp": T}, {"latest": False}):
        with pytest.raises(ServerIncompatibilityError, match="Use of keyword argument"):
            cg.get_root_timestamps([1], **kwargs)
    with pytest.raises(ServerIncompatibilityError, match="`latest`"):
        cg.get_root_timestamps([1], True)


def test_get_past_ids(cg, rsps):
    rsps.get(f"{P}/past_id_mapping", json={"past_id_map": {"5": [1, 2]}, "future_id_map": {"5": [9]}})
    result = cg.get_past_ids([5, 5], timestamp_past=T0, timestamp_future=T)
    assert_json_request(
        last(rsps),
        "GET",
        f"{P}/past_id_mapping?timestamp_past={T0.timestamp()}&timestamp_future={TS}",
        '{"root_ids": [5]}',
        content_type=False,
    )
    assert result == {"past_id_map": {5: [1, 2]}, "future_id_map": {5: [9]}}
    cg.get_past_ids(5)
    assert last(rsps).url == f"{P}/past_id_mapping"


def test_get_delta_roots(cg, rsps):
    rsps.get(f"{P}/delta_roots", json={"old_roots": [1], "new_roots": [2, 3]})
    old, new = cg.get_delta_roots(T0, T)
    assert last(rsps).url == f"{P}/delta_roots?timestamp_past={T0.timestamp()}&timestamp_future={TS}"
    assert old.tolist() == [1] and new.tolist() == [2, 3]
    before = datetime.now(UTC).timestamp()
    cg.get_delta_roots(T0)
    assert posix_param(last(rsps), "timestamp_future") >= before


def test_get_oldest_timestamp(cg, rsps):
    rsps.get(f"{P}/oldest_timestamp", json={"iso": "2020-01-01T00:00:00+00:00"})
    assert cg.get_oldest_timestamp() == datetime(2020, 1, 1, tzinfo=UTC)


def test_label_roots_and_supervoxels(cg, rsps):
    big = 2**63 + 5
    answer = {"label": big, "root_ids": [2**60 + 3, 2**60 + 1], "voxels": [90, 10], "supervoxel_ids": [2**56 + 1, 2**56 + 2]}
    rsps.get(f"{P}/label/{big}/roots", json=answer)
    roots = cg.get_label_roots(big, timestamp=T)
    assert last(rsps).url == f"{P}/label/{big}/roots?timestamp={TS}"
    assert roots.dtype == np.uint64 and roots.tolist() == [2**60 + 3, 2**60 + 1]
    roots, voxels = cg.get_label_roots(big, return_voxels=True)
    assert voxels.tolist() == [90, 10]
    svs = cg.get_label_supervoxels(big)
    assert svs.dtype == np.uint64 and svs.tolist() == [2**56 + 1, 2**56 + 2]
    rsps.get(f"{P}/label/7/roots", status=404, json={"code": 404, "error": "unknown_label", "message": "Label 7 is not in the segmentation"})
    with pytest.raises(requests.HTTPError, match="not in the segmentation"):
        cg.get_label_roots(7)


# --------------------------------------------------------------------------------------------
# Proofreading


def test_do_merge(cg, rsps):
    rsps.post(f"{P}/merge", json={"operation_id": 7, "new_root_ids": [99]})
    big = 2**63 + 1
    result = cg.do_merge(np.array([big, 2], dtype=np.uint64), [[10, 20, 30], [11, 21, 31]])
    assert_json_request(
        last(rsps),
        "POST",
        f"{P}/merge?priority=False",
        f"[[{big}, 40, 80, 1200], [2, 44, 84, 1240]]",
        content_type=True,
    )
    assert result == {"operation_id": 7, "new_root_ids": [99]}
    cg.do_merge([1, 2], np.array([[1.5, 2, 3], [1, 2, 3]]), resolution=(1, 1, 1))
    assert text(last(rsps)) == "[[1, 1.5, 2.0, 3.0], [2, 1.0, 2.0, 3.0]]"


def test_undo_operation(cg, rsps):
    rsps.post(f"{P}/undo", json={"operation_id": 8})
    assert cg.undo_operation(np.int64(7)) == {"operation_id": 8}
    assert_json_request(last(rsps), "POST", f"{P}/undo?priority=False", '{"operation_id": 7}', content_type=True)


def test_execute_split(cg, rsps):
    rsps.post(f"{P}/split", json={"operation_id": 7, "new_root_ids": [101, 102]})
    result = cg.execute_split([[1, 2, 3]], np.array([[4, 5, 6], [7, 8, 9]]), 100, sink_supervoxels=[None, 55])
    assert result == (7, [101, 102])
    assert_json_request(
        last(rsps),
        "POST",
        f"{P}/split?priority=False",
        '{"sources": [[100, 1, 2, 3]], "sinks": [[100, 4, 5, 6], [55, 7, 8, 9]]}',
        content_type=True,
    )


def test_split_length_mismatch(cg, rsps):
    message = "^If supervoxels are provided, they must have the same length as points$"
    with pytest.raises(ValueError, match=message):
        cg.execute_split([[1, 2, 3]], [[4, 5, 6]], 100, source_supervoxels=[1, 2])
    with pytest.raises(ValueError, match=message):
        cg.preview_split([[1, 2, 3]], [[4, 5, 6]], 100, sink_supervoxels=[])
    assert len(rsps.calls) == 0


def test_preview_split(cg, rsps):
    rsps.post(
        f"{P}/graph/split_preview",
        json={"supervoxel_connected_components": [[1], [2], [3, 4]], "illegal_split": False},
    )
    assert cg.preview_split([[1, 2, 3]], [[4, 5, 6]], 100, source_supervoxels=[11]) == ([1], [2], True)
    assert_json_request(
        last(rsps),
        "POST",
        f"{P}/graph/split_preview",
        '{"sources": [[11, 1, 2, 3]], "sinks": [[100, 4, 5, 6]]}',
        content_type=True,
    )
    assert cg.preview_split([[1, 2, 3]], [[4, 5, 6]], 100, return_additional_ccs=True) == ([1], [2], True, [[3, 4]])


def test_remesh_level2_chunks(cg, rsps):
    url = f"{LOCAL}/meshing/api/v1/table/test_v1/remeshing"
    rsps.post(url)
    assert cg.remesh_level2_chunks(np.array([1, 2], dtype=np.uint64)) is None
    assert_json_request(last(rsps), "POST", url, '{"new_lvl2_ids": [1, 2]}', content_type=True)
    rsps.replace(responses.POST, url, status=500, json={"message": "meshing down"})
    with pytest.raises(requests.HTTPError, match="500 Server Error: meshing down for url"):
        cg.remesh_level2_chunks([1])


# --------------------------------------------------------------------------------------------
# Geometry


def test_get_contact_sites(cg, rsps):
    rsps.get(f"{P}/node/10/contact_sites", json={"11": [[1, 2, 3]]})
    contacts = cg.get_contact_sites(np.int64(10), BOUNDS)
    assert_json_request(
        last(rsps),
        "GET",
        f"{P}/node/10/contact_sites?bounds=0-100_0-200_0-300&partners=False",
        "[10]",
        content_type=True,
    )
    assert contacts == {11: [[1, 2, 3]]}
    cg.get_contact_sites(10, None, calc_partners=True)
    assert last(rsps).url == f"{P}/node/10/contact_sites?partners=True"


def test_find_path(cg, rsps):
    rsps.post(
        f"{P}/graph/find_path",
        json={"centroids_list": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], "l2_path": [5, 6], "failed_l2_ids": []},
    )
    centroids, path, failed = cg.find_path(10, np.array([1, 2, 3]), np.array([4, 5, 6]))
    assert_json_request(
        last(rsps),
        "POST",
        f"{P}/graph/find_path?precision_mode=False",
        "[[10, 1, 2, 3], [10, 4, 5, 6]]",
        content_type=True,
    )
    assert centroids.shape == (2, 3) and centroids.dtype == np.float64
    assert path.tolist() == [5, 6]
    assert failed.dtype == np.uint64 and failed.size == 0
    cg.find_path(10, [1, 2, 3], [4, 5, 6], precision_mode=True)
    assert last(rsps).url == f"{P}/graph/find_path?precision_mode=True"


def test_get_subgraph(cg, rsps):
    rsps.get(f"{P}/node/10/subgraph", json={"nodes": [[1, 2]], "affinities": [0.5], "areas": [3]})
    nodes, affinities, areas = cg.get_subgraph(10, BOUNDS)
    assert last(rsps).url == f"{P}/node/10/subgraph?bounds=0-100_0-200_0-300"
    assert nodes.dtype == np.int64 and nodes.tolist() == [[1, 2]]
    assert affinities.dtype == np.float64 and areas.dtype == np.int32


@pytest.mark.parametrize("header", ["True", "true"])
def test_level2_chunk_graph(cg, rsps, header):
    rsps.get(f"{P}/node/10/lvl2_graph", json={"edge_graph": [[1, 2]]}, headers={"Used-Bounds": header})
    assert cg.level2_chunk_graph(10) == [[1, 2]]
    assert last(rsps).url == f"{P}/node/10/lvl2_graph"
    assert cg.level2_chunk_graph(10, bounds=BOUNDS) == [[1, 2]]
    assert last(rsps).url == f"{P}/node/10/lvl2_graph?bounds=0-100_0-200_0-300"


def test_level2_chunk_graph_bounds_ignored(cg, rsps):
    rsps.get(f"{P}/node/10/lvl2_graph", json={"edge_graph": []}, headers={"Used-Bounds": "False"})
    assert cg.level2_chunk_graph(10) == []  # no bounds asked: the header does not matter
    with pytest.raises(ValueError, match="^Bounds were not used for this query, even though it was requested"):
        cg.level2_chunk_graph(10, bounds=BOUNDS)


def test_level2_chunk_graph_bounds_need_2_15(make_cg, rsps):
    cg = make_cg("1.0.0")
    rsps.get(f"{P}/node/10/lvl2_graph", json={"edge_graph": []})
    for call in (lambda: cg.level2_chunk_graph(10, bounds=BOUNDS), lambda: cg.level2_chunk_graph(10, BOUNDS)):
        with pytest.raises(ServerIncompatibilityError) as caught:
            call()
        assert squash(str(caught.value)) == (
            "Use of keyword argument `bounds` in `level2_chunk_graph` is only permitted for server "
            "version >=2.15.0. Your server version is 1.0.0. Contact your system administrator to "
            "update the server version."
        )
    assert len(rsps.calls) == 0
    assert cg.level2_chunk_graph(10) == []


# --------------------------------------------------------------------------------------------
# Segmentation metadata and node ids


def test_segmentation_info_is_cached(cg, rsps):
    rsps.get(f"{SEG}/table/test_v1/info", json=SEG_INFO)
    assert cg.segmentation_info == SEG_INFO
    assert cg.base_resolution == [8, 8, 40]
    assert [c.request.url for c in rsps.calls] == [f"{SEG}/table/test_v1/info"]


def test_node_id_decoding(cg, rsps):
    rsps.get(f"{SEG}/table/test_v1/info", json=SEG_INFO)
    supervoxel = LAYOUT.node_id(1, 3, 4, 5, 77)
    level2 = LAYOUT.node_id(2, 1, 2, 3, 9)
    root = LAYOUT.node_id(6, 0, 0, 0, 12345)
    ids = np.array([supervoxel, level2, root], dtype=np.uint64)

    assert cg.get_chunk_layer(supervoxel) == 1 and type(cg.get_chunk_layer(supervoxel)) is int
    assert cg.get_chunk_layer(ids).tolist() == [1, 2, 6]
    assert cg.get_segment_id(np.uint64(level2)) == 9 and type(cg.get_segment_id(level2)) is int
    assert cg.get_segment_id(ids).tolist() == [77, 9, 12345]
    assert cg.get_chunk_coordinates(supervoxel).tolist() == [3, 4, 5]
    assert cg.get_chunk_coordinates(ids).tolist() == [[3, 4, 5], [1, 2, 3], [0, 0, 0]]
    assert cg.get_chunk_coordinates([level2]).shape == (1, 3)
    assert len(rsps.calls) == 1  # the layout comes from the cached info


# --------------------------------------------------------------------------------------------
# Errors


def test_server_error_message(cg, rsps):
    rsps.get(f"{P}/node/1/root", status=500, json={"message": "table missing"})
    with pytest.raises(requests.HTTPError) as caught:
        cg.get_root_id(1, timestamp=T)
    assert str(caught.value) == (
        f"500 Server Error: table missing for url: {P}/node/1/root?timestamp={TS} "
        "content:b'{\"message\": \"table missing\"}'"
    )


def test_client_error_on_binary_endpoint(cg, rsps):
    rsps.post(f"{P}/roots_binary", status=403, body=b"forbidden")
    with pytest.raises(requests.HTTPError, match="403 Client Error: Forbidden"):
        cg.get_roots([1], timestamp=T)


# --------------------------------------------------------------------------------------------
# JSON encoding of bodies


def test_encoder_values():
    assert dumps({"ids": np.array([2**64 - 1, 1], dtype=np.uint64)}) == '{"ids": [18446744073709551615, 1]}'
    assert dumps([np.uint64(2**63 + 1), np.int64(-2), np.float32(0.5), np.bool_(True)]) == (
        f"[{2**63 + 1}, -2, 0.5, true]"
    )
    assert dumps({"s": pd.Series([1, 2]), "i": pd.Index([3])}) == '{"s": [1, 2], "i": [3]}'
    assert json.loads(dumps({"set": {3}})) == {"set": [3]}
    assert dumps([datetime(2024, 6, 6, tzinfo=UTC), T.date()]) == '["2024-06-06T00:00:00+00:00", "2024-06-06"]'
    assert dumps(np.datetime64("2024-06-06T00:00:00")) == '"2024-06-06T00:00:00"'
    with pytest.raises(TypeError):
        dumps(object())


def test_encoder_matches_caveclient():
    caveclient_base = pytest.importorskip("caveclient.base")
    value = {
        "a": np.array([[1, 2], [3, 4]], dtype=np.uint64),
        "b": [np.int64(5), 6.5, None, "x"],
        "c": pd.Series([1.5, 2.5]),
        "d": pd.Index([7, 8]),
        "e": datetime(2024, 6, 6, 1, 2, 3, tzinfo=UTC),
        "f": {"nested": np.array([2**63 + 7], dtype=np.uint64)},
    }
    assert json.dumps(value, cls=CaveJSONEncoder) == json.dumps(value, cls=caveclient_base.BaseEncoder)
