"""Bad input to the materialization service gets a clear 4xx JSON answer (``code``, ``message``
saying what to fix), never a 500 or a cut connection: over raw HTTP and through the genuine
caveclient. Each request uses a fresh connection, so one failure cannot hide behind another."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import requests

from tests.support.http import no_unhandled_errors
from tests.support.materialize import DS, caveclient_for

V2 = f"/materialize/api/v2/datastack/{DS}"
V3 = f"/materialize/api/v3/datastack/{DS}"
TABLE_QUERY = f"{V3}/version/3/table/synapses/query"
LIVE = f"{V3}/query"
CREATE = f"/materialize/api/v2/materialize/run/create_frozen/datastack/{DS}"


@pytest.fixture(scope="module", autouse=True)
def no_server_errors(server):
    """No request of this module may hit an unhandled error (a 500 or a cut stream)."""
    with no_unhandled_errors(server):
        yield


@pytest.fixture(scope="module")
def call(server, admin_token):
    def send(method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {admin_token}", **kwargs.pop("headers", {})}
        return requests.request(method, server.url + path, headers=headers, timeout=60, **kwargs)

    return send


def error(response: requests.Response, status: int, *words: str, code: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert body["code"] == status and isinstance(body["message"], str) and body["message"], body
    for word in words:
        assert word.lower() in body["message"].lower(), (word, body["message"])
    if code is not None:
        assert body["error"] == code, body
    return body


def live(**body) -> dict:
    return {"table": "synapses", "timestamp": "2025-02-01T00:00:00+00:00", **body}


def test_unknown_datastack_table_version_and_view(call):
    error(call("GET", "/materialize/api/v3/datastack/nope/versions"), 404, "nope")
    error(call("GET", "/materialize/api/v2/datastack/nope/version/1/tables"), 404, "nope")
    error(call("POST", "/materialize/api/v3/datastack/nope/version/1/table/synapses/query", json={}), 404, "nope")
    error(call("POST", "/materialize/api/v3/datastack/nope/query", json=live()), 404, "nope")
    error(call("POST", f"{V3}/version/3/table/nope/query", json={}), 404, "nope", "synapses", code="unknown_table")
    error(call("GET", f"{V3}/version/3/table/nope/metadata"), 404, "nope")
    error(call("GET", f"{V2}/version/3/table/nope/count"), 404, "nope")
    error(call("POST", LIVE, json=live(table="nope")), 404, "nope", code="unknown_table")
    error(call("GET", f"{V3}/table/nope/unique_string_values"), 404, "nope")
    for version in ("9", "0", "-1", "2147483648", "99999999999999999999999"):
        error(call("GET", f"{V3}/version/{version}"), 404, "version", code="unknown_version")
        error(call("GET", f"{V2}/version/{version}/tables"), 404, "version", code="unknown_version")
        error(call("POST", f"{V3}/version/{version}/table/synapses/query", json={}), 404, "version", code="unknown_version")
    error(call("GET", f"{V2}/version/9/tables"), 404, "available versions are [1, 2, 3]")
    for version in ("abc", "1.5", "1e3"):
        error(call("POST", f"{V3}/version/{version}/table/synapses/query", json={}), 400, "integer", code="bad_version")
    error(call("POST", f"{V3}/version/3/views/nope/query", json={}), 404, "nope", code="unknown_view")
    error(call("GET", f"{V3}/version/3/views/nope/schema"), 404, "nope")
    error(call("GET", f"{V3}/version/3/views/nope/metadata"), 404, "nope")
    join = {"tables": [["cell_types", "target_id"], ["nope", "id"]]}
    error(call("POST", f"{V3}/version/3/query", json=join), 404, "nope")


def test_unknown_columns(call):
    error(call("POST", TABLE_QUERY, json={"filter_in_dict": {"synapses": {"nope": [1]}}}), 400, "nope", code="unknown_column")
    error(call("POST", TABLE_QUERY, json={"filter_equal_dict": {"synapses": {"pre_pt_position": 1}}}), 400, "filter_spatial_dict")
    error(call("POST", TABLE_QUERY, json={"filter_spatial_dict": {"synapses": {"size": [[0, 0, 0], [1, 1, 1]]}}}), 400, "position column")
    error(call("POST", TABLE_QUERY, json={"select_columns": ["id", "nope"]}), 400, "nope", code="unknown_column")
    error(call("POST", TABLE_QUERY, json={"filter_in_dict": {"cell_types": {"id": [1]}}}), 400, "cell_types", code="unknown_table")
    join = {"tables": [["cell_types", "nope"], ["nucleus_detection", "id"]]}
    error(call("POST", f"{V3}/version/3/query", json=join), 400, "nope", code="unknown_column")
    join = {"tables": [["cell_types", "target_id"], ["nucleus_detection", "id"]], "select_column_map": {"cell_types": ["nope"]}}
    error(call("POST", f"{V3}/version/3/query", json=join), 400, "nope", code="unknown_column")
    view = f"{V3}/version/3/views/synapse_connections/query"
    error(call("POST", view, json={"filter_equal_dict": {"synapse_connections": {"nope": 1}}}), 400, "nope")
    error(call("POST", view, json={"select_columns": ["nope"]}), 400, "nope")
    error(call("POST", LIVE, json=live(filter_in_dict={"synapses": {"nope": [1]}})), 400, "nope")
    error(call("POST", LIVE, json=live(select_columns={"synapses": ["nope"]})), 400, "nope")
    error(call("POST", LIVE, json=live(select_columns={"cell_types": ["id"]})), 400, "cell_types", code="unknown_table")
    error(call("POST", LIVE, json=live(join_tables=[["synapses", "nope", "cell_types", "id"]])), 400, "nope")


def test_filters_of_the_wrong_type(call):
    cases = [
        ({"filter_in_dict": {"synapses": {"id": ["x"]}}}, "integer"),
        ({"filter_in_dict": {"synapses": {"id": [1.5]}}}, "integer"),
        ({"filter_in_dict": {"synapses": {"id": [2**70]}}}, "64-bit"),
        ({"filter_in_dict": {"synapses": {"id": [[1]]}}}, "plain values"),
        ({"filter_in_dict": {"synapses": {"id": 1}}}, "list"),
        ({"filter_in_dict": {"synapses": "x"}}, "object"),
        ({"filter_in_dict": ["synapses"]}, "table names"),
        ({"filter_equal_dict": {"synapses": {"id": "1"}}}, "integer"),
        ({"filter_equal_dict": {"synapses": {"id": [1, 2]}}}, "single value"),
        ({"filter_equal_dict": {"synapses": {"id": None}}}, "single value"),
        ({"filter_equal_dict": {"synapses": {"valid": 1}}}, "true or false"),
        ({"filter_greater_dict": {"synapses": {"size": "big"}}}, "number"),
        ({"filter_less_dict": {"synapses": {"size": True}}}, "number"),
        ({"filter_regex_dict": {"synapses": {"size": "1.*"}}}, "string columns"),
        ({"filter_regex_dict": {"synapses": {"id": "1"}}}, "string columns"),
        ({"filter_spatial_dict": {"synapses": {"pre_pt_position": [[5, 5, 5], [1, 1, 1]]}}}, "min bounds"),
        ({"filter_spatial_dict": {"synapses": {"pre_pt_position": [[0, 0, 0], [1, 1, 2]], "ctr_pt_position": [[0, 0, 9], [1, 1, 1]]}}}, "min bounds"),
        ({"filter_spatial_dict": {"synapses": {"pre_pt_position": [[0, 0], [1, 1]]}}}, "[[min_x"),
        ({"filter_spatial_dict": {"synapses": {"pre_pt_position": "box"}}}, "[[min_x"),
    ]
    for body, word in cases:
        error(call("POST", TABLE_QUERY, json=body), 400, word)
        error(call("POST", LIVE, json=live(**body)), 400, word)
    # non-finite numbers (Python's JSON reader accepts NaN and Infinity)
    for text, word in [
        ('{"filter_equal_dict": {"synapses": {"id": NaN}}}', "integer"),
        ('{"filter_in_dict": {"synapses": {"id": [Infinity]}}}', "integer"),
        ('{"filter_spatial_dict": {"synapses": {"pre_pt_position": [[0, 0, 0], [1, 1, Infinity]]}}}', "finite"),
        ('{"filter_spatial_dict": {"synapses": {"pre_pt_position": [[NaN, 0, 0], [1, 1, 1]]}}}', "finite"),
        ('{"desired_resolution": [1, 1, Infinity]}', "desired_resolution"),
        ('{"desired_resolution": [1, 1, NaN]}', "desired_resolution"),
    ]:
        error(call("POST", TABLE_QUERY, data=text, headers={"Content-Type": "application/json"}), 400, word)
    # regular expressions DuckDB (RE2) cannot compile: before streaming, never mid-answer
    types = f"{V3}/version/3/table/cell_types/query"
    for pattern in ["(", "[a-", "(?=5)", "a{2,1}", "\\"]:
        error(call("POST", types, json={"filter_regex_dict": {"cell_types": {"cell_type": pattern}}}), 400, "regular expression")
        body = {"table": "cell_types", "timestamp": "2025-02-01T00:00:00", "filter_regex_dict": {"cell_types": {"cell_type": pattern}}}
        error(call("POST", LIVE, json=body), 400, "regular expression")
    view = f"{V3}/version/3/views/single_neurons/query"
    error(call("POST", view, json={"filter_regex_dict": {"single_neurons": {"cell_type": "("}}}), 400, "regular expression")
    assert call("POST", view, json={"filter_regex_dict": {"single_neurons": {"cell_type": "P$"}}}).status_code == 200


def test_malformed_bodies_and_parameters(call):
    for data in [b"{bad", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000, b'{"limit": 1,}']:
        error(call("POST", TABLE_QUERY, data=data), 400, "json", code="invalid_json")
        error(call("POST", LIVE, data=data), 400, "json", code="invalid_json")
    error(call("POST", TABLE_QUERY, json=[1, 2]), 400, "object")
    error(call("POST", TABLE_QUERY, json={"filter_in_dcit": {}}), 400, "filter_in_dcit", code="unknown_body_key")
    error(call("POST", TABLE_QUERY, json={"select_column": ["id"]}), 400, "select_column", code="unknown_body_key")
    error(call("POST", f"{V3}/version/3/query", json={"tables": [["cell_types", "target_id"], ["nucleus_detection", "id"]], "join": 1}), 400, "join")
    error(call("POST", LIVE, json=live(version=3)), 400, "version", code="unknown_body_key")
    for paging, word in [
        ({"limit": -1}, "limit"),
        ({"limit": 0}, "limit"),
        ({"limit": "10"}, "limit"),
        ({"limit": 1.5}, "limit"),
        ({"limit": True}, "limit"),
        ({"offset": -5}, "offset"),
        ({"limit": 10**30}, "limit"),
        ({"offset": 2**63}, "offset"),
    ]:
        error(call("POST", TABLE_QUERY, json=paging), 400, word, code="bad_paging")
        error(call("POST", LIVE, json=live(**paging)), 400, word, code="bad_paging")
        error(call("POST", f"{V3}/version/3/views/synapse_connections/query", json=paging), 400, word, code="bad_paging")
    error(call("POST", TABLE_QUERY, json={"desired_resolution": [1, 1]}), 400, "desired_resolution")
    error(call("POST", TABLE_QUERY, json={"desired_resolution": [0, 1, 1]}), 400, "desired_resolution")
    error(call("POST", TABLE_QUERY, json={"select_columns": "id"}), 400, "select_columns")
    error(call("POST", TABLE_QUERY, json={"select_columns": [1]}), 400, "select_columns")
    error(call("POST", TABLE_QUERY, params={"random_sample": "-4"}, json={}), 400, "random_sample")
    error(call("POST", TABLE_QUERY, params={"random_sample": "many"}, json={}), 400, "random_sample")
    error(call("POST", TABLE_QUERY, params={"count": "maybe"}, json={}), 400, "count")
    error(call("POST", f"{V3}/version/3/query", json={"tables": [["cell_types", "target_id"]]}), 400, "tables", code="bad_join")
    join = {"tables": [["cell_types", "target_id"], ["nucleus_detection", "id"]], "suffix_map": {"cell_types": "", "nucleus_detection": ""}}
    error(call("POST", f"{V3}/version/3/query", json=join), 400, "suffix", code="bad_suffixes")
    # the biggest join, the largest paging values and empty selections are answered, not errors
    for body in [{"limit": 2**63 - 1, "offset": 19_790}, {"select_columns": []}]:
        r = call("POST", TABLE_QUERY, params={"return_pyarrow": "false"}, json=body)
        assert r.status_code == 200, r.text
    assert len(call("POST", TABLE_QUERY, params={"return_pyarrow": "false"}, json={"limit": 2**63 - 1, "offset": 19_790}).json()) == 10
    assert len(call("POST", TABLE_QUERY, params={"return_pyarrow": "false"}, json={"select_columns": [], "limit": 1}).json()[0]) == 16


def test_oversized_bodies(call):
    huge = b" " * (64 * 1024 * 1024 + 1)
    for path in (TABLE_QUERY, LIVE, f"{V3}/version/3/query", CREATE):
        error(call("POST", path, data=huge, headers={"Content-Type": "application/json"}), 413, "limit", code="payload_too_large")


def test_live_queries_with_bad_roots_and_times(call, client):
    now = dt.datetime.now(dt.timezone.utc)
    error(call("POST", LIVE, json={"timestamp": now.isoformat()}), 400, "table")
    error(call("POST", LIVE, json={"table": "synapses"}), 400, "timestamp")
    for stamp in ["yesterday", "2025-13-45", "99999-01-01", 1e20, [2025], True]:
        error(call("POST", LIVE, json=live(timestamp=stamp)), 400, "timestamp", code="bad_timestamp")
    future = (now + dt.timedelta(days=1)).isoformat()
    error(call("POST", LIVE, json=live(timestamp=future)), 400, "future", code="timestamp_in_future")
    # root ids: unknown ids, supervoxel ids and roots that are not roots at T
    sv = int(client.materialize.query_table("synapses", limit=1, materialization_version=3)["pre_pt_supervoxel_id"].iloc[0])
    before = client.chunkedgraph.get_roots([sv], timestamp=dt.datetime(2025, 1, 6, 12, tzinfo=dt.timezone.utc))[0]
    after = client.chunkedgraph.get_roots([sv])[0]
    bad_ids = [5, sv] + ([int(before)] if before != after else [])
    body = error(call("POST", LIVE, json=live(timestamp=now.isoformat(), filter_in_dict={"synapses": {"pre_pt_root_id": bad_ids}})), 400, "not valid at the query timestamp", code="invalid_root_ids")
    assert body["data"]["invalid_root_ids"] == sorted(bad_ids)
    error(call("POST", LIVE, json=live(filter_equal_dict={"synapses": {"post_pt_root_id": -5}})), 400, "not valid", code="invalid_root_ids")
    error(call("POST", LIVE, params={"allow_invalid_root_ids": "true"}, json=live(filter_in_dict={"synapses": {"pre_pt_root_id": [5, 6]}})), 400, "ALL root id", code="invalid_root_ids")
    mixed = live(timestamp=now.isoformat(), filter_in_dict={"synapses": {"pre_pt_root_id": [5, int(after)]}})
    r = call("POST", LIVE, params={"allow_invalid_root_ids": "true", "return_pyarrow": "false"}, json=mixed)
    assert r.status_code == 200 and "Dropped root ids" in r.headers.get("warning", "")
    assert all(row["pre_pt_root_id"] == int(after) for row in r.json())
    error(call("POST", LIVE, json=live(join_tables=[["synapses", "id", "cell_types", "id"], ["cell_types", "target_id", "nucleus_detection", "id"]])), 400, "join")
    error(call("POST", LIVE, json=live(join_tables=[["synapses", "id"]])), 400, "join_tables")


def test_version_creation_input(call, server):
    versions = call("GET", f"{V3}/versions").json()
    error(call("POST", CREATE, json={"timestamp": "2999-01-01T00:00:00"}), 400, "future", code="timestamp_in_future")
    error(call("POST", CREATE, json={"timestamp": "soon"}), 400, "timestamp")
    error(call("POST", CREATE, json={"nope": 1}), 400, "timestamp")
    error(call("POST", CREATE, json=[1]), 400, "timestamp")
    for days in (-1, 0, "7", True, 10**9):
        error(call("POST", CREATE, json={"days_to_expire": days}), 400, "days_to_expire")
    error(call("POST", CREATE, data=b"{bad"), 400, "json")
    error(call("POST", "/materialize/api/v2/materialize/run/create_frozen/datastack/nope", json={}), 404, "nope")
    email = f"viewer-{uuid.uuid4().hex[:8]}@example.org"
    server.cli("user", "add", email)
    user_token = server.new_token(email)
    r = requests.post(server.url + CREATE, json={}, headers={"Authorization": f"Bearer {user_token}"}, timeout=30)
    error(r, 403, "admin")
    r = requests.post(server.url + CREATE, json={}, timeout=30)
    assert r.status_code == 401 and r.json()["code"] == 401
    assert call("GET", f"{V3}/versions").json() == versions  # nothing was created


@pytest.fixture(scope="module")
def client(server, admin_token):
    return caveclient_for(server, admin_token)


def test_caveclient_surfaces_the_messages(client):
    """The genuine client raises HTTPError whose text carries the server's message."""
    m = client.materialize
    with pytest.raises(requests.HTTPError, match="nope.{0,4} not found in synapses"):
        m.query_table("synapses", filter_in_dict={"nope": [1]}, materialization_version=3)
    with pytest.raises(requests.HTTPError, match="min bounds"):
        m.query_table("synapses", filter_spatial_dict={"pre_pt_position": [[9, 9, 9], [1, 1, 1]]}, materialization_version=3)
    with pytest.raises(requests.HTTPError, match="Regex filter is only supported on string columns"):
        m.query_table("synapses", filter_regex_dict={"size": "1"}, materialization_version=3)
    with pytest.raises(requests.HTTPError, match="not valid at the query timestamp"):
        m.live_live_query("synapses", dt.datetime(2025, 2, 1, tzinfo=dt.timezone.utc), filter_in_dict={"synapses": {"pre_pt_root_id": [5]}})
    with pytest.raises(requests.HTTPError, match="Version 42 not found"):
        m.query_table("synapses", materialization_version=42)
    with pytest.raises(requests.HTTPError, match="Table .{0,4}nope.{0,4} not found"):
        m.get_table_metadata("nope", version=3)
