"""Bad input to the chunkedgraph, L2 cache, meshing and volume routes gets a clear 4xx JSON answer,
never a 500: huge bounds, long delimiters, ids beyond uint64, non-finite points, writes to
read-only volume files. Every input is declared, so the OpenAPI document lists it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests

from tests.support.demo import demo_world

TABLE = "opencave_demo"
T = f"/segmentation/api/v1/table/{TABLE}"
M = f"/meshing/api/v1/table/{TABLE}"
L2 = f"/l2cache/api/v1/table/{TABLE}/attributes"
EDGE = 2**40  # the largest coordinate magnitude bounds may have
HUGE_BOUNDS = ["0-1e300_0-10_0-10", "0-99999999999999999999999_0-1_0-1", f"0-{EDGE + 1}_0-1_0-1", "0-inf_0-1_0-1", "nan-1_0-1_0-1"]


@pytest.fixture(scope="module")
def http(server, admin_token):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {admin_token}"

    def call(method: str, path: str, **kwargs) -> requests.Response:
        return session.request(method, server.url + path, **kwargs)

    return call


@pytest.fixture(scope="module")
def ids(http, server) -> dict[str, int]:
    """A supervoxel, its root and one of the root's L2 nodes."""
    sv = int(demo_world(server).soma_supervoxels[0])
    root = http("GET", f"{T}/node/{sv}/root").json()["root_id"]
    l2 = http("GET", f"{T}/node/{root}/leaves", params={"stop_layer": 2}).json()["leaf_ids"][0]
    return {"sv": sv, "root": int(root), "l2": int(l2)}


def _error(response: requests.Response, status: int, code: str, *words: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == status and body["error"] == code, body
    for word in words:
        assert word.lower() in body["message"].lower(), body["message"]
    return body


def test_huge_bounds_are_refused(http, ids):
    root = ids["root"]
    for bounds in HUGE_BOUNDS:
        for path in ("leaves", "subgraph", "lvl2_graph", "contact_sites"):
            _error(http("GET", f"{T}/node/{root}/{path}", params={"bounds": bounds}), 400, "bad_bounds", "x0-x1_y0-y1_z0-z1")
        _error(http("POST", f"{T}/node/leaves_many", params={"bounds": bounds}, json={"node_ids": [root]}), 400, "bad_bounds")
        _error(http("GET", f"{M}/manifest/{root}:0", params={"bounds": bounds, "verify": 1}), 400, "bad_bounds")
    widest = f"{-EDGE}-{EDGE}_{-EDGE}-{EDGE}_{-EDGE}-{EDGE}"
    everything = http("GET", f"{T}/node/{root}/leaves").json()["leaf_ids"]
    assert http("GET", f"{T}/node/{root}/leaves", params={"bounds": widest}).json()["leaf_ids"] == everything
    for path in ("subgraph", "lvl2_graph", "contact_sites"):
        assert http("GET", f"{T}/node/{root}/{path}", params={"bounds": widest}).status_code == 200
    manifest = http("GET", f"{M}/manifest/{root}:0", params={"bounds": widest, "return_seg_ids": 1})
    assert manifest.status_code == 200 and ids["l2"] in manifest.json()["seg_ids"]


def test_delimiter_is_one_printable_character(http, ids):
    for path in ("/oldest_timestamp", f"/root/{ids['root']}/last_edit"):
        for delimiter in ("ab", "--", "\x00", "\n"):
            _error(http("GET", T + path, params={"delimiter": delimiter}), 400, "bad_delimiter", "one printable character")
        assert "T" in http("GET", T + path, params={"delimiter": "T"}).json()["iso"]
        assert " " in http("GET", T + path).json()["iso"]


def test_ids_beyond_int64_and_uint64(http, ids):
    signed_overflow, largest, too_big = 2**63, 2**64 - 1, 2**64
    for node in (signed_overflow, largest):
        _error(http("GET", f"{T}/node/{node}/root"), 404, "unknown_node", str(node))
        _error(http("GET", f"{T}/node/{node}/leaves"), 404, "unknown_node")
        latest = http("POST", f"{T}/is_latest_roots", json={"node_ids": [node, 0, ids["root"]]})
        assert latest.status_code == 200 and latest.json()["is_latest"] == [False, False, True]  # unknown ids are not latest
        _error(http("GET", f"{M}/manifest/{node}:0"), 404, "unknown_node")
        _error(http("POST", f"{M}/remeshing", json={"new_lvl2_ids": [node]}), 400, "not_level2")
        _error(http("POST", f"{T}/merge", json=[[node, 0, 0, 0], [ids["sv"], 0, 0, 0]]), 400, "unknown_node")
    roots = http("POST", f"{T}/roots", json={"node_ids": [signed_overflow, largest, ids["sv"]]}).json()["root_ids"]
    assert roots == [0, 0, ids["root"]]
    binary = http("POST", f"{T}/roots_binary", data=np.array([largest, ids["sv"]], "<u8").tobytes())
    assert np.frombuffer(binary.content, "<u8").tolist() == [0, ids["root"]]
    attributes = http("POST", L2, json={"l2_ids": [signed_overflow, largest, ids["l2"]]}).json()
    assert attributes[str(largest)] == {} and attributes[str(ids["l2"])]["size_nm3"] > 0

    _error(http("GET", f"{T}/node/{too_big}/root"), 400, "bad_node_id", "out of range")
    _error(http("GET", f"{T}/node/{too_big}/lvl2_graph"), 400, "bad_node_id")
    _error(http("GET", f"{T}/node/-1/children"), 400, "bad_node_id")
    _error(http("GET", f"{M}/manifest/{too_big}:0"), 400, "bad_node_id")
    _error(http("POST", f"{T}/is_latest_roots", json={"node_ids": [too_big]}), 400, "invalid_ids", "out of range")
    _error(http("POST", L2, json={"l2_ids": [too_big]}), 400, "invalid_ids")
    _error(http("POST", f"{M}/remeshing", json={"new_lvl2_ids": [too_big]}), 400, "invalid_ids")
    _error(http("POST", f"{T}/merge", json=[[too_big, 0, 0, 0], [ids["sv"], 0, 0, 0]]), 400, "bad_node_id")
    _error(http("POST", f"{T}/undo", json={"operation_id": signed_overflow}), 400, "bad_id", "out of range")
    _error(http("GET", f"{T}/operation_details", params={"operation_ids": f"[{signed_overflow}]"}), 400, "invalid_ids")
    _error(http("GET", f"{T}/operation_details", params={"operation_ids": f"[{signed_overflow - 1}]"}), 404, "unknown_operation")


def test_edit_points_must_be_finite(http, ids):
    sv = ids["sv"]
    for value in ("NaN", "Infinity", "1e400", str(2**41)):
        body = f"[[{sv}, {value}, 0, 0], [{sv}, 0, 0, 0]]"
        _error(http("POST", f"{T}/merge", data=body, headers={"Content-Type": "application/json"}), 400, "bad_number", "finite")
        split = f'{{"sources": [[{sv}, 0, {value}, 0]], "sinks": [[{sv}, 0, 0, 0]]}}'
        _error(http("POST", f"{T}/graph/split_preview", data=split), 400, "bad_number")
        _error(http("POST", f"{T}/graph/find_path", data=f"[[{sv}, 0, 0, {value}], [{sv}, 0, 0, 0]]"), 400, "bad_number")
    far = 2**40
    response = http("POST", f"{T}/graph/split_preview", json={"sources": [[ids["root"], -far, 0, 0]], "sinks": [[ids["root"], far, far, far]]})
    _error(response, 400, "supervoxel_lookup_failed")
    _error(http("POST", f"{T}/merge", json=[[sv, 0, 0], [sv, 0, 0, 0]]), 400, "bad_body", "[node_id, x, y, z]")
    _error(http("POST", f"{T}/merge", json={"sources": []}), 400, "bad_body", "exactly two")


def test_layers_and_times_out_of_range(http, ids):
    for layer in (0, -5, 256, 2**31, "two"):
        response = http("GET", f"{T}/node/{ids['sv']}/root", params={"stop_layer": layer})
        assert response.status_code == 400 and response.json()["error"] in ("bad_layer", "bad_number"), response.text
        assert "stop_layer" in response.json()["message"]
    assert http("GET", f"{T}/node/{ids['sv']}/root", params={"stop_layer": 2}).json()["root_id"] != ids["root"]
    for stamp in ("1e300", "-1", "nan", "yesterday"):
        _error(http("GET", f"{T}/delta_roots", params={"timestamp_past": stamp}), 400, "bad_timestamp")
        _error(http("POST", f"{T}/root_timestamps", params={"timestamp": stamp}, json={"node_ids": [ids["root"]]}), 400, "bad_timestamp")
    _error(http("GET", f"{M}/manifest/{ids['root']}:{2**40}"), 400, "bad_number", "lod")


def test_bodies_without_content_type_and_with_get(http, ids):
    """caveclient sends JSON bodies without a Content-Type, some of them with GET."""
    root = ids["root"]
    response = http("GET", f"{T}/tabular_change_log_many", data=json.dumps({"root_ids": [root]}))
    assert response.status_code == 200 and str(root) in response.json()
    response = http("GET", f"{T}/valid_nodes", data=json.dumps({"node_ids": [root, 2**64 - 1]}))
    assert response.json() == {"valid_roots": [root]}
    response = http("POST", f"{T}/minimal_covering_nodes", params={"as_array": True}, data=json.dumps({"node_ids": [root]}))
    assert np.frombuffer(response.content, "<u8").tolist() == [root]
    _error(http("POST", f"{T}/minimal_covering_nodes", data=b"not json"), 400, "invalid_json")
    _error(http("POST", f"{T}/minimal_covering_nodes", params={"is_binary": True}, data=b"123"), 400, "bad_body", "uint64")
    _error(http("POST", L2, data=json.dumps({"l2_ids": [ids["l2"]]}), params={"attribute_names": "x" * 2000}), 400, "unknown_attribute")


def test_volume_files_are_read_only(http):
    for method in ("PUT", "POST", "DELETE", "PATCH"):
        for path in (
            f"/volumes/{TABLE}/ws/info",
            f"/volumes/{TABLE}/ws/graphene_meshes/1:0:0-1_0-1_0-1",
            f"/volumes/{TABLE}/access/u1-{'0' * 32}/ws/info",
            f"/volumes/{TABLE}/image/info",
            f"/volumes/{TABLE}/access/u1-{'0' * 32}/image/8_8_40/0-128_0-128_0-16",
        ):
            response = http(method, path)
            _error(response, 405, "method_not_allowed", method)
            assert response.headers["allow"] == "GET, HEAD"
    head = http("HEAD", f"/volumes/{TABLE}/ws/info")
    assert head.status_code == 200 and head.headers["content-type"] == "application/json"


def test_openapi_declares_every_input(server):
    document = requests.get(server.url + "/api/openapi.json").json()
    operations = {
        (method.upper(), path): operation
        for path, methods in document["paths"].items()
        if path.startswith(("/segmentation", "/l2cache", "/meshing", "/volumes"))
        for method, operation in methods.items()
    }

    def inputs(method: str, path: str) -> tuple[set[str], set[str]]:
        operation = operations[(method, path)]
        body = operation.get("requestBody", {}).get("content", {})
        return {p["name"] for p in operation.get("parameters", [])}, set(body)

    table = "/segmentation/api/v1/table/{table_id}"
    assert inputs("GET", table + "/node/{root_id}/leaves") == ({"table_id", "root_id", "stop_layer", "bounds", "int64_as_str"}, set())
    assert inputs("POST", table + "/roots_binary") == ({"table_id", "timestamp", "stop_layer", "assert_roots"}, {"application/octet-stream"})
    assert inputs("POST", table + "/minimal_covering_nodes")[1] == {"application/json", "application/octet-stream"}
    assert inputs("GET", table + "/past_id_mapping") == ({"table_id", "timestamp_past", "timestamp_future", "int64_as_str"}, {"application/json"})
    assert inputs("GET", table + "/oldest_timestamp")[0] == {"table_id", "delimiter"}
    assert {"verify", "return_seg_ids", "prepend_seg_ids", "bounds", "node_id", "lod"} <= inputs("GET", "/meshing/api/v1/table/{table_id}/manifest/{node_id}:{lod}")[0]
    assert inputs("POST", "/l2cache/api/v1/table/{table_id}/attributes")[1] == {"application/json"}
    for (method, path), operation in operations.items():
        if "{" in path:
            assert operation.get("parameters"), f"{method} {path} declares no parameters"
        if method == "POST":
            assert "requestBody" in operation, f"{method} {path} declares no body"
