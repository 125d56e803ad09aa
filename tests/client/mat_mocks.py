"""Mocked annotation, materialization and chunkedgraph servers for the client tests, and the
genuine caveclient built against the same mocks (for side-by-side comparisons)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import responses

from opencave import CAVEclient

from .helpers import DATASTACK, LOCAL, SERVER, TOKEN, mock_info_service

MAT = f"{LOCAL}/materialize"
M2 = f"{MAT}/api/v2/datastack/{DATASTACK}"
M3 = f"{MAT}/api/v3/datastack/{DATASTACK}"
SEG = f"{LOCAL}/segmentation"
CG = f"{SEG}/api/v1/table/test_v1"
ANNO = f"{LOCAL}/annotation/api/v2/aligned_volume/test_volume"
SCHEMA = f"{SERVER}/schema/api/v2"

QUERY_STRING = "return_pyarrow=True&arrow_format=True&split_positions=True&direct_sql_pandas=True"

SYNAPSE_METADATA = {
    "aligned_volume": "test_volume",
    "id": 474,
    "schema": "synapse",
    "schema_type": "synapse",
    "valid": True,
    "created": "2021-04-29T05:58:42.196350",
    "table_name": "synapses",
    "description": "test synapse table",
    "flat_segmentation_source": "",
    "user_id": "56",
    "reference_table": None,
    "voxel_resolution_x": 4.0,
    "voxel_resolution_y": 4.0,
    "voxel_resolution_z": 40.0,
}

VERSION_TIME = "2021-04-12T08:10:00.255735"
VERSIONS_METADATA = [
    {
        "version": 1,
        "expires_on": "2021-04-19T08:10:00.255735",
        "id": 84,
        "valid": True,
        "time_stamp": VERSION_TIME,
        "datastack": DATASTACK,
    }
]


def arrow_body(df: pd.DataFrame, compression: str | None = "zstd") -> bytes:
    """``df`` as the materialization engine sends it: one IPC stream, compressed buffers."""
    batch = pa.RecordBatch.from_pandas(df)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema, options=pa.ipc.IpcWriteOptions(compression=compression)) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def synapse_frame(n: int = 1000, seed: int = 0) -> pd.DataFrame:
    """A synapse table answer with split positions (int32 voxels), as servers send it."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "id": np.arange(1, n + 1, dtype=np.int64),
            "valid": np.ones(n, dtype=bool),
            "pre_pt_supervoxel_id": rng.integers(1, 10**6, n),
            "pre_pt_root_id": np.full(n, 500, dtype=np.int64),
            "post_pt_supervoxel_id": rng.integers(1, 10**6, n),
            "post_pt_root_id": np.full(n, 501, dtype=np.int64),
            "size": np.full(n, 100, dtype=np.int64),
        }
    )
    for point in ("pre_pt", "ctr_pt", "post_pt"):
        for axis in "xyz":
            df[f"{point}_position_{axis}"] = rng.integers(0, 10**5, n).astype(np.int32)
    return df


def mock_materialize(rsps: responses.RequestsMock, version: str | None = "5.13.0", api_versions=(2, 3)) -> None:
    rsps.upsert(responses.GET, f"{MAT}/api/versions", json=list(api_versions))
    if version is None:
        rsps.upsert(responses.GET, f"{MAT}/version", status=404)
    else:
        rsps.upsert(responses.GET, f"{MAT}/version", json=version)


def mock_versions(rsps: responses.RequestsMock, versions=(1, 2), api: int = 3) -> None:
    base = M3 if api == 3 else M2
    rsps.upsert(responses.GET, f"{base}/versions", json=list(versions))
    for v in versions:
        rsps.upsert(
            responses.GET,
            f"{base}/version/{v}",
            json={"version": v, "time_stamp": VERSION_TIME, "expires_on": "2080-06-05T10:10:01.203215", "valid": True},
        )


def mock_segmentation(rsps: responses.RequestsMock) -> None:
    rsps.upsert(responses.GET, f"{SEG}/api/versions", json=[0, 1])
    rsps.upsert(responses.GET, f"{SEG}/api/version", json="2.18.0")


def mock_schema_service(rsps: responses.RequestsMock) -> None:
    rsps.upsert(responses.GET, f"{SERVER}/schema/versions", json=[1, 2])


def mock_local_services(rsps: responses.RequestsMock, **materialize: Any) -> None:
    """Info, schema, materialization (server 5.13.0, API 3) and segmentation version endpoints."""
    mock_info_service(rsps)
    mock_schema_service(rsps)
    mock_materialize(rsps, **materialize)
    mock_segmentation(rsps)


def opencave_client(**kwargs: Any) -> Any:
    return CAVEclient(DATASTACK, server_address=SERVER, auth_token=TOKEN, **kwargs)


def genuine_client(**kwargs: Any) -> Any:
    """caveclient 8.2.1's CAVEclient against the same mocks (its module-level caches cleared)."""
    caveclient = pytest.importorskip("caveclient")
    from caveclient import materializationengine
    from caveclient.tools import table_manager

    materializationengine.MaterializationClient.get_tables_metadata.cache.clear()
    for cache in (table_manager._schema_cache, table_manager._table_cache, table_manager._metadata_cache):
        cache.clear()
    return caveclient.CAVEclient(DATASTACK, server_address=SERVER, auth_token=TOKEN, write_server_cache=False, **kwargs)


def request_json(request: Any) -> Any:
    body = request.body
    return json.loads(body.decode() if isinstance(body, bytes) else body)


def query_of(request: Any) -> dict[str, list[str]]:
    return parse_qs(urlparse(request.url).query, keep_blank_values=True)


# --------------------------------------------------------------------------------------------
# A chunkedgraph whose history makes the live-query example of caveclient-spec §9.8.

GOOD_TIME = datetime(2021, 4, 19, tzinfo=UTC)
BAD_TIME = datetime(2020, 4, 19, tzinfo=UTC)
SV_ROOT_NOW = {1: 200, 2: 200, 3: 201, 4: 201, 5: 203, 6: 203, 7: 203, 8: 103, 9: 103, 10: 103,
               11: 200, 12: 103, 13: 203, 14: 201, 15: 201}  # fmt: skip
SV_ROOT_PAST = {1: 100, 2: 100, 3: 100, 4: 100, 5: 101, 6: 102, 7: 102, 8: 103, 9: 103, 10: 103,
                11: 100, 12: 103, 13: 102, 14: 100, 15: 100}  # fmt: skip
LATEST_NOW = {100: False, 101: False, 102: False, 103: True, 200: True, 201: True, 202: True, 203: True, 303: True}
ROOT_CREATED = {
    **{r: BAD_TIME - timedelta(days=1) for r in (100, 101, 102, 103)},
    **{r: GOOD_TIME - timedelta(days=1) for r in (200, 201, 202, 203)},
    303: GOOD_TIME + timedelta(days=1),
}
PAST_IDS = {201: [100], 103: [103], 203: [101, 102], 200: [100]}


def live_before_frame() -> pd.DataFrame:
    """The version-1 synapse rows (past roots), split positions; one post side unsegmented."""
    pre = [1, 3, 8, 4, 9, 10]
    post = [5, 6, 14, 13, 15, 0]
    df = pd.DataFrame(
        {
            "id": np.arange(1, 7, dtype=np.int64),
            "valid": np.ones(6, dtype=bool),
            "pre_pt_supervoxel_id": np.array(pre, dtype=np.int64),
            "pre_pt_root_id": np.array([SV_ROOT_PAST[s] for s in pre], dtype=np.int64),
            "post_pt_supervoxel_id": np.array(post, dtype=np.int64),
            "post_pt_root_id": np.array([SV_ROOT_PAST.get(s, 0) for s in post], dtype=np.int64),
            "size": np.arange(6, dtype=np.float64) * 10,
        }
    )
    for point in ("pre_pt", "post_pt"):
        for i, axis in enumerate("xyz"):
            df[f"{point}_position_{axis}"] = (np.arange(6) * 10 + i).astype(np.int32)
    return df


def _time_param(request: Any, name: str = "timestamp") -> datetime:
    return datetime.fromtimestamp(float(query_of(request)[name][0]), UTC)


def mock_live_chunkedgraph(rsps: responses.RequestsMock, calls: list[tuple[str, Any]]) -> None:
    """Chunkedgraph endpoints for live queries; ``calls`` records (endpoint, ids) and any
    lookup of id 0 fails the request."""

    def reply(body: Any, status: int = 200) -> tuple[int, dict[str, str], Any]:
        return status, {"content-type": "application/json"}, json.dumps(body)

    def is_latest(request):
        ids = request_json(request)["node_ids"]
        calls.append(("is_latest_roots", ids))
        if 0 in ids or _time_param(request) != GOOD_TIME:
            return reply({"message": "unexpected"}, 400)
        return reply({"is_latest": [LATEST_NOW[i] for i in ids]})

    def root_timestamps(request):
        ids = request_json(request)["node_ids"]
        calls.append(("root_timestamps", ids))
        return reply({"timestamp": [ROOT_CREATED[i].timestamp() for i in ids]})

    def past_ids(request):
        ids = request_json(request)["root_ids"]
        calls.append(("past_id_mapping", ids))
        return reply({"past_id_map": {str(i): PAST_IDS[i] for i in ids}, "future_id_map": {}})

    def roots(request):
        svids = np.frombuffer(request.body, dtype=np.uint64).tolist()
        calls.append(("roots_binary", svids))
        if 0 in svids or _time_param(request) != GOOD_TIME:
            return 400, {}, b"unexpected"
        return (200, {}, np.array([SV_ROOT_NOW[s] for s in svids], dtype=np.uint64).tobytes())

    rsps.add_callback(responses.POST, f"{CG}/is_latest_roots", callback=is_latest)
    rsps.add_callback(responses.POST, f"{CG}/root_timestamps", callback=root_timestamps)
    rsps.add_callback(responses.GET, f"{CG}/past_id_mapping", callback=past_ids)
    rsps.add_callback(responses.POST, f"{CG}/roots_binary", callback=roots)


def mock_table_metadata(rsps: responses.RequestsMock, table: str, metadata: dict[str, Any], api: int = 3) -> None:
    """Serve a table's metadata at every version."""
    base = M3 if api == 3 else M2
    pattern = re.compile(re.escape(f"{base}/version/") + r"\d+" + re.escape(f"/table/{table}/metadata") + r"$")
    rsps.upsert(responses.GET, pattern, json=metadata)


def mock_query(
    rsps: responses.RequestsMock,
    url: str,
    df: pd.DataFrame,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    body: Any = None,
) -> None:
    """Answer POSTs to ``url`` (any query string) with ``df`` as Arrow; with ``body``, only
    requests whose JSON body equals it."""
    match = [responses.matchers.json_params_matcher(body)] if body is not None else []
    header_list = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    body_bytes = arrow_body(df)
    rsps.add_callback(
        responses.POST,
        url,
        callback=lambda request: (200, [("Content-Type", "data.arrow"), *header_list], body_bytes),
        content_type=None,
        match=match,
    )
