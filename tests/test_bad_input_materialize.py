"""Regression tests: input that once made the materialization service answer 500 gets a clear 4xx
JSON answer on both storage engines — joins on columns of different types (DuckDB could not
cast), text no layer can hold, and the declared query string and bodies of every query."""

from __future__ import annotations

import pytest
import requests

from tests.support.http import error, json_caller, no_unhandled_errors
from tests.support.materialize import DS

V3 = f"/materialize/api/v3/datastack/{DS}"
JOIN = f"{V3}/version/3/query"
LIVE = f"{V3}/query"
TYPES = f"{V3}/version/3/table/cell_types/query"


@pytest.fixture(scope="module", autouse=True)
def no_server_errors(server):
    with no_unhandled_errors(server):
        yield


@pytest.fixture(scope="module")
def call(server, admin_token):
    return json_caller(server, admin_token)


def live(**body) -> dict:
    return {"table": "cell_types", "timestamp": "2025-02-01T00:00:00+00:00", **body}


def test_joins_on_columns_of_different_types(call):
    for params in ({}, {"return_pyarrow": "false"}, {"count": "true"}):
        join = {"tables": [["cell_types", "cell_type"], ["nucleus_detection", "id"]]}
        error(call("POST", JOIN, join, params=params), 400, "cell_types.cell_type", "nucleus_detection.id", "do not match", code="bad_join")
        body = live(join_tables=[["cell_types", "cell_type", "nucleus_detection", "id"]])
        error(call("POST", LIVE, body, params=params), 400, "do not match", code="bad_join")
    # numbers of different widths still join (an int64 id with a float column compares exactly)
    ok = call("POST", JOIN, {"tables": [["cell_types", "target_id"], ["nucleus_detection", "id"]], "limit": 2}, params={"return_pyarrow": "false"})
    assert ok.status_code == 200 and len(ok.json()) == 2


def test_text_no_layer_can_hold(call):
    for bad in ("\ud800", "a\x00b"):
        error(call("POST", TYPES, {"filter_equal_dict": {"cell_types": {"cell_type": bad}}}), 400, code="bad_text")
        error(call("POST", TYPES, {"filter_in_dict": {"cell_types": {"cell_type": ["x", bad]}}}), 400, code="bad_text")
        error(call("POST", TYPES, {"filter_regex_dict": {"cell_types": {"cell_type": bad}}}), 400, code="bad_text")
        error(call("POST", TYPES, {"select_columns": ["id", bad]}), 400, code="bad_text")
        error(call("POST", TYPES, {"filter_in_dict": {bad: {"id": [1]}}}), 400, code="bad_text")
        error(call("POST", LIVE, live(filter_equal_dict={"cell_types": {"cell_type": bad}})), 400, code="bad_text")
        error(call("POST", LIVE, live(table=bad)), 400, code="bad_text")
    error(call("POST", TYPES, {"filter_equal_dict": {"cell_types": {"cell_type": "x" * 70_000}}}), 400, "longer than")


def test_resolutions_whose_factors_overflow(call):
    for resolution in ([5e-324, 5e-324, 5e-324], [1e-300, 1, 1], [1, 1, 1e300]):
        error(call("POST", TYPES, {"desired_resolution": resolution}), 400, "desired_resolution", code="bad_resolution")
        error(call("POST", LIVE, live(desired_resolution=resolution)), 400, "desired_resolution", code="bad_resolution")
    assert call("POST", TYPES, {"desired_resolution": [1, 1, 1], "limit": 1}, params={"return_pyarrow": "false"}).status_code == 200


def test_declared_query_string(call):
    for name in ("return_pyarrow", "count", "ipc_compress", "allow_missing_lookups", "allow_invalid_root_ids", "split_positions", "arrow_format"):
        error(call("POST", TYPES, {}, params={name: "maybe"}), 400, name, code="bad_flag")
    for sample in ("0", "-4", "many", str(2**64)):
        error(call("POST", TYPES, {}, params={"random_sample": sample}), 400, "random_sample")
    # caveclient's spellings are accepted
    answer = call("POST", TYPES, {"limit": 1}, params={"return_pyarrow": "False", "split_positions": "True", "direct_sql_pandas": "True", "random_sample": "None"})
    assert answer.status_code == 200 and len(answer.json()) == 1
    error(call("GET", f"{V3}/versions", params={"expired": "sometimes"}), 400, "expired", code="bad_flag")
    assert call("GET", f"{V3}/versions", params={"expired": "True"}).status_code == 200


def test_openapi_declares_every_query_input(server):
    document = requests.get(server.url + "/api/openapi.json", timeout=30).json()
    for path, operations in document["paths"].items():
        if not path.startswith(("/materialize", "/annotation")):
            continue
        for method, operation in operations.items():
            if method == "post" and path.endswith("/query"):
                names = {p["name"] for p in operation["parameters"]}
                assert {"return_pyarrow", "count", "random_sample", "allow_invalid_root_ids", "split_positions"} <= names, path
                assert "application/json" in operation["requestBody"]["content"], path
                assert "application/vnd.apache.arrow.stream" in operation["responses"]["200"]["content"], path
            if method in ("post", "put", "delete") and path.startswith("/annotation") and (path.endswith("/annotations") or path.endswith("/table")):
                assert "application/json" in operation["requestBody"]["content"], (method, path)
