"""Regression tests: input that once made the annotation engine answer 500 gets a clear 4xx JSON
answer on both storage engines — text PostgreSQL cannot hold (lone surrogates, NUL) and ids
beyond the signed 64-bit range SQL stores."""

from __future__ import annotations

import uuid

import pytest

from tests.support.http import error, json_caller, no_unhandled_errors

AV = "opencave_demo"
BASE = f"/annotation/api/v2/aligned_volume/{AV}/table"
SURROGATE = "bad \ud800 text"
TOO_BIG = 2**63


@pytest.fixture(scope="module", autouse=True)
def no_server_errors(server):
    with no_unhandled_errors(server):
        yield


@pytest.fixture(scope="module")
def call(server, admin_token):
    return json_caller(server, admin_token)


def table(call, schema: str = "bound_tag", **metadata) -> str:
    name = f"t_{uuid.uuid4().hex[:8]}"
    meta = {"description": "regression", "voxel_resolution_x": 8, "voxel_resolution_y": 8, "voxel_resolution_z": 40, **metadata}
    response = call("POST", BASE, {"table_name": name, "schema_type": schema, "metadata": meta})
    assert response.status_code == 200, response.text
    return name


def tag(text: str, **extra) -> dict:
    return {"pt": {"position": [1, 1, 1]}, "tag": text, **extra}


def test_text_postgresql_cannot_hold(call):
    name = table(call)
    rows = f"{BASE}/{name}/annotations"
    for bad in (SURROGATE, "nul\x00byte"):
        error(call("POST", rows, {"annotations": [tag(bad)]}), 400, "text", code="bad_text")
        error(call("POST", rows, {"annotations": [{**tag("fine"), bad: 1}]}), 400, code="bad_text")  # keys too
        error(call("POST", BASE, {"table_name": "x_" + uuid.uuid4().hex[:6], "schema_type": "bound_tag", "metadata": {"description": bad, "voxel_resolution_x": 8, "voxel_resolution_y": 8, "voxel_resolution_z": 40}}), 400, code="bad_text")
        error(call("PUT", BASE, {"table_name": name, "metadata": {"notice_text": bad}}), 400, code="bad_text")
    [first] = call("POST", rows, {"annotations": [tag("fine")]}).json()
    error(call("PUT", rows, {"annotations": [tag(SURROGATE, id=first)]}), 400, code="bad_text")
    assert call("GET", f"{BASE}/{name}/count").json() == 1  # nothing else was written


def test_ids_beyond_64_bits(call):
    name = table(call)
    rows = f"{BASE}/{name}/annotations"
    [first] = call("POST", rows, {"annotations": [tag("a")]}).json()
    for ids in (str(TOO_BIG), f"1,{2**64}", "-1", "99999999999999999999999999"):
        error(call("GET", rows, params={"annotation_ids": ids}), 400, "id", code="invalid_ids")
    error(call("DELETE", rows, {"annotation_ids": [TOO_BIG]}), 400, "id", code="invalid_ids")
    error(call("DELETE", rows, {"annotation_ids": [first, 2**70]}), 400, "id", code="invalid_ids")
    body = error(call("PUT", rows, {"annotations": [tag("b", id=TOO_BIG)]}), 422, "not an annotation id")
    assert set(body["data"]["errors"]) == {"0"}
    error(call("POST", rows, {"annotations": [tag("c", id=TOO_BIG)]}), 422, "out of range")
    reference = table(call, "simple_reference", table_metadata={"reference_table": name})
    error(call("POST", f"{BASE}/{reference}/annotations", {"annotations": [{"target_id": TOO_BIG}]}), 422, "target_id")
    assert [r["id"] for r in call("GET", rows, params={"annotation_ids": str(first)}).json()] == [first]


def test_declared_bodies_name_what_is_wrong(call):
    name = table(call)
    rows = f"{BASE}/{name}/annotations"
    error(call("POST", rows, [tag("a")]), 400, "JSON object", code="invalid_body")
    error(call("POST", rows, {"annotations": [tag("a")], "extra": 1}), 400, "extra", "allowed", code="invalid_body")
    error(call("DELETE", rows, {"ids": [1]}), 400, "annotation_ids", code="invalid_body")
    error(call("POST", BASE, {"table_name": "x", "schema_type": "bound_tag", "metadata": {"voxel_resolution_x": "wide", "voxel_resolution_y": 8, "voxel_resolution_z": 40}}), 400, "voxel_resolution_x")
    error(call("POST", BASE, {"table_name": "x", "schema_type": "bound_tag", "metadata": {"voxel_resolution_x": float("inf"), "voxel_resolution_y": 8, "voxel_resolution_z": 40}}), 400, "voxel_resolution_x")
    error(call("GET", f"{BASE}", params={"timestamp": "soon"}), 400, "timestamp", code="bad_timestamp")
    assert name in call("GET", BASE, params={"timestamp": "2999-01-01T00:00:00"}).json()
