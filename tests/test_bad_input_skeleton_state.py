"""Declared inputs of the skeleton and JSON state services, on both storage engines.

Every path, query, header and body input is in the OpenAPI document with its limits; bad values
answer a clear 4xx JSON (never a 500), while every form caveclient 8.2.1 sends keeps working.
"""

from __future__ import annotations

import numpy as np
import pytest
import requests

from opencave.wire import skeletons as wire
from tests.support.demo import demo_world

DS = "opencave_demo"
S1 = f"/skeletoncache/api/v1/{DS}"
NGL = "/nglstate/api/v1"


@pytest.fixture(scope="module")
def http(server, admin_token):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {admin_token}"

    def call(method: str, path: str, **kwargs) -> requests.Response:
        return session.request(method, server.url + path, timeout=120, **kwargs)

    return call


@pytest.fixture(scope="module")
def root(http, server) -> int:
    """A root id of the demo datastack (the object of a soma supervoxel)."""
    sv = demo_world(server).soma_supervoxels[:1]
    r = http("POST", f"/segmentation/api/v1/table/{DS}/roots_binary", data=sv.astype("<u8").tobytes())
    assert r.status_code == 200, r.text
    return int(np.frombuffer(r.content, dtype="<u8")[0])


def _error(response: requests.Response, status: int, code: str, *words: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == status and body["error"] == code, body
    for word in words:
        assert word.lower() in body["message"].lower(), body["message"]
    return body


# -- the OpenAPI document -------------------------------------------------------------------------------


def test_openapi_declares_every_input(http):
    spec = http("GET", "/api/openapi.json").json()
    operations = {
        (method.upper(), path): op
        for path, ops in spec["paths"].items()
        if path.startswith(("/skeletoncache", "/nglstate"))
        for method, op in ops.items()
    }
    for (method, path), op in operations.items():
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert declared == set(path.replace("}", "{").split("{")[1::2]), (method, path)
        if method == "POST":
            assert op.get("requestBody", {}).get("content"), (method, path)
        if "{datastack_name}" in path and "info" not in path.rsplit("/", 1)[-1]:
            assert any(p["name"] == "verbose_level" for p in op.get("parameters", [])) or method == "POST", (method, path)
    fmt = f"/skeletoncache/api/v1/{{datastack_name}}/precomputed/skeleton/{{skeleton_version}}/{{root_id}}/{{output_format}}"
    params = {p["name"]: p["schema"] for p in operations[("GET", fmt)]["parameters"]}
    assert params["skeleton_version"]["enum"] == wire.SKELETON_VERSIONS
    assert "h5" in params["output_format"]["enum"] and "meshwork" not in params["output_format"]["enum"]
    assert params["root_id"]["type"] == "integer" and params["root_id"]["maximum"] == 2**63 - 1
    assert set(operations[("GET", fmt)]["responses"]["200"]["content"]) == {"application/json", "application/octet-stream"}
    assert set(operations[("GET", "/nglstate/api/v1/raw/{state_id}")]["responses"]["200"]["content"]) == {"application/octet-stream"}
    assert "application/json" in operations[("POST", "/nglstate/api/v1/post")]["requestBody"]["content"]
    # always-501 URLs and GET-with-body twins stay out of the document
    assert not any("get_skeleton_token" in path for _, path in operations)
    assert ("GET", "/nglstate/api/v1/post") not in operations
    assert "/volumes" not in spec["paths"] and "/volumes/{path}" not in spec["paths"]  # the 501 catch-all of pending.py


# -- skeletons ------------------------------------------------------------------------------------------


def test_root_ids_out_of_range_or_malformed(http, root):
    for bad in (2**63, 2**64, 0, -5):
        _error(http("GET", f"{S1}/precomputed/skeleton/4/{bad}/flatdict"), 400, "bad_root_id", "out of range")
    _error(http("GET", f"{S1}/precomputed/skeleton/4/1e5/flatdict"), 400, "bad_root_id", "decimal")
    _error(http("GET", f"{S1}/bulk/get_skeletons/4/flatdict/True/{root},{2**64}"), 400, "bad_root_id", "out of range")
    _error(http("GET", f"{S1}/precomputed/skeleton/exists/4/,"), 400, "bad_root_ids", "non-empty")
    _error(http("POST", f"{S1}/precomputed/skeleton/exists", json={"root_ids": [root, True]}), 400, "bad_root_id")
    _error(http("POST", f"{S1}/precomputed/skeleton/exists", json={"root_ids": [root, 1.5]}), 400, "bad_root_id")
    _error(http("POST", f"{S1}/precomputed/skeleton/exists", json={"root_ids": []}), 400, "bad_root_ids")


def test_body_strings_are_single_ids(http, root):
    """A bare id (int or string) in a body is a list of one with a bare answer; a comma-separated
    string is not an id."""
    for single in (root, str(root)):
        r = http("POST", f"{S1}/precomputed/skeleton/exists", json={"root_ids": single})
        assert r.status_code == 200 and isinstance(r.json(), bool), r.text
    r = http("POST", f"{S1}/precomputed/skeleton/exists", json={"root_ids": [root, str(root + 1)]})
    assert r.status_code == 200 and set(r.json()) == {str(root), str(root + 1)}
    _error(http("POST", f"{S1}/precomputed/skeleton/exists", json={"root_ids": f"{root},{root}"}), 400, "bad_root_id", "decimal")


def test_bodies(http, root):
    _error(http("POST", f"{S1}/bulk/gen_skeletons", json=[root]), 400, "bad_body", "JSON object")
    _error(http("POST", f"{S1}/bulk/gen_skeletons", data=b"[1,", headers={"Content-Type": "application/json"}), 400, "invalid_json", "JSON")
    _error(http("POST", f"{S1}/bulk/gen_skeletons", data=b'{"root_ids": [1]}'), 400, "bad_body", "Content-Type: application/json")
    _error(http("POST", f"{S1}/bulk/gen_skeletons", json={"skeleton_version": 4}), 422, "invalid_request", "root_ids")
    _error(http("POST", f"{S1}/bulk/gen_skeletons", json={"root_ids": [root], "skeleton_version": 9}), 400, "bad_skeleton_version", "Valid options")
    _error(http("POST", f"{S1}/bulk/get_cached_skeletons/4/flatdict", json={"root_ids": [root], "generate_missing": "maybe"}), 400, "bad_flag")
    # caveclient's bodies (verbose_level included) and unknown keys are accepted
    r = http("POST", f"{S1}/bulk/gen_skeletons?verbose_level=0", json={"root_ids": [root], "skeleton_version": -1, "verbose_level": 0, "x": 1})
    assert r.status_code == 200 and isinstance(r.json(), float), r.text
    r = http("POST", f"{S1}/bulk/get_skeleton_token/4", json={"verbose_level": 0})
    _error(r, 501, "no_bucket", "bucket")
    _error(http("POST", f"{S1}/bulk/get_skeleton_token/4", json={"verbose_level": "loud"}), 400, "bad_verbose_level")


def test_verbose_level_as_caveclient_sends_it(http, root):
    for value in ("0", "2", "None"):
        r = http("GET", f"{S1}/async/get_skeleton/4/{root}/none?verbose_level={value}")
        assert r.status_code == 200 and r.json() is None, r.text
    _error(http("GET", f"{S1}/async/get_skeleton/4/{root}/none?verbose_level=high"), 400, "bad_verbose_level", "integer")
    _error(http("GET", f"{S1}/async/get_skeleton/4/{root}/none?verbose_level={2**40}"), 400, "bad_verbose_level")


def test_versions_formats_prefixes_limits(http, root):
    _error(http("GET", f"{S1}/precomputed/skeleton/4.0/{root}"), 400, "bad_skeleton_version", "Unknown skeleton version")
    _error(http("GET", f"{S1}/precomputed/skeleton/{'9' * 5000}/info"), 400, "bad_skeleton_version")
    _error(http("GET", f"{S1}/async/get_skeleton/4/{root}/H5"), 400, "bad_format", "output format")
    _error(http("GET", f"{S1}/async/get_skeleton/4/{root}/meshwork"), 501, "no_meshworks")
    _error(http("GET", f"{S1}/precomputed/skeleton/query_cache/4/{'1' * 21}/0"), 400, "bad_prefix", "20 decimal digits")
    _error(http("GET", f"{S1}/precomputed/skeleton/query_cache/4/1/{2**40}"), 400, "bad_limit")
    r = http("GET", f"{S1}/precomputed/skeleton/query_cache/4/{str(root)[:3]},{root}/5")
    assert r.status_code == 200 and set(r.json()) == {"num_found", "files"}, r.text


def test_datastack_names(http, root):
    _error(http("GET", f"/skeletoncache/api/v1/no_such_stack/precomputed/skeleton/4/{root}"), 404, "unknown_resource", "no_such_stack")
    r = http("GET", f"/skeletoncache/api/v1/{'x' * 300}/precomputed/skeleton/info")
    assert r.status_code == 422 and "datastack_name" in r.json()["message"], r.text
    _error(http("GET", "/skeletoncache/api/v1/a%00b/precomputed/skeleton/info"), 400, "bad_text", "NUL")


# -- JSON states ----------------------------------------------------------------------------------------


def test_state_ids_and_timestamps(http):
    for bad in ("1e3", "%2B5", "١٢"):  # exponent, +5, Arabic-Indic digits
        _error(http("GET", f"{NGL}/{bad}"), 400, "invalid_id", "positive integers")
    _error(http("GET", f"{NGL}/{'9' * 50}"), 400, "invalid_id")
    for value in ("-1", "1e12", "253402300800"):
        _error(http("POST", f"{NGL}/post/{2**55 + 11}", data=b"{}", params={"timestamp": value}), 400, "invalid_timestamp", "seconds since 1970")


def test_state_posts_as_caveclient_and_neuroglancer_send_them(http):
    """POST and the GET-with-body form store the raw body; an explicit id takes a timestamp."""
    for method in ("POST", "GET"):
        r = http(method, f"{NGL}/post", data=b'{"layers": []}', headers={"Content-Type": "text/plain"})
        assert r.status_code == 200, r.text
        doc_id = int(r.json().rsplit("/", 1)[1])
        assert http("GET", f"{NGL}/{doc_id}").content == b'{"layers": []}'
    doc_id = 2**55 + 17
    r = http("POST", f"{NGL}/property/post/{doc_id}", data=b"{}", params={"timestamp": "1700000000.5"})
    assert r.status_code == 200, r.text
    deflated = http("GET", f"{NGL}/property/{doc_id}/info", headers={"Accept-Encoding": "deflate"})
    assert deflated.status_code == 200 and deflated.json() == {}
    r = http("GET", f"{NGL}/{doc_id}", headers={"Accept-Encoding": "deflate;q=nan, " + "x" * 2000})
    _error(r, 404, "unknown_state")
