"""``client.l2cache``: exact requests and the DataFrame layout of ``get_l2data_table``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import requests

from opencave import CAVEclient
from opencave.client.auth import AuthClient
from opencave.client.l2cache import L2CacheClient

from .helpers import (
    DATASTACK,
    LOCAL,
    SERVER,
    TOKEN,
    datastack_record,
    mock_info_service,
)

V1 = f"{LOCAL}/l2cache/api/v1"
DATA = {
    "11": {
        "area_nm2": 100.0,
        "rep_coord_nm": [1, 2, 3],
        "pca": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        "pca_val": [3.0, 2.0, 1.0],
        "chunk_intersect_count": [[1, 2, 3], [4, 5, 6]],
    },
    "12": {},  # not computed yet
}
SPLIT_COLUMNS = [
    "area_nm2",
    *[f"rep_coord_nm_{a}" for a in "xyz"],
    *[f"pca_{i}_{a}" for i in range(3) for a in "xyz"],
    "pca_val_0",
    "pca_val_1",
    "pca_val_2",
    *[f"chunk_intersect_count_{a}_bottom" for a in "xyz"],
    *[f"chunk_intersect_count_{a}_top" for a in "xyz"],
]


@pytest.fixture
def client(rsps):
    mock_info_service(rsps)
    return CAVEclient(DATASTACK, server_address=SERVER, auth_token=TOKEN)


@pytest.fixture
def l2(client, rsps) -> L2CacheClient:
    cache = client.l2cache
    rsps.calls.reset()
    return cache


def last(rsps) -> requests.PreparedRequest:
    return rsps.calls[-1].request


def test_construction_makes_no_requests(client, rsps):
    before = len(rsps.calls)
    l2 = client.l2cache
    assert len(rsps.calls) == before
    assert client.l2cache is l2
    assert l2.api_version == 1 and l2.server_version is None
    assert l2.server_address == LOCAL
    assert l2.default_url_mapping == {"l2cache_server_address": LOCAL, "table_id": "test_v1"}
    assert l2.fc is client


def test_get_l2data(l2, rsps):
    rsps.post(f"{V1}/table/test_v1/attributes", json=DATA)
    assert l2.get_l2data(np.array([11, 12], dtype=np.uint64), attributes=["area_nm2", "pca"]) == DATA
    request = last(rsps)
    assert request.method == "POST"
    assert request.url == f"{V1}/table/test_v1/attributes?int64_as_str=False&attribute_names=area_nm2%2Cpca"
    assert request.body == '{"l2_ids": [11, 12]}'
    assert "Content-Type" not in request.headers
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Cookie"] == f"middle_auth_token={TOKEN}"
    l2.get_l2data([2**63 + 1])
    assert last(rsps).url == f"{V1}/table/test_v1/attributes?int64_as_str=False"
    assert last(rsps).body == f'{{"l2_ids": [{2**63 + 1}]}}'


def test_get_l2data_table_split(l2, rsps):
    rsps.post(f"{V1}/table/test_v1/attributes", json=DATA)
    df = l2.get_l2data_table([11, 12])
    assert df.index.name == "l2_id"
    assert df.index.tolist() == [11, 12] and df.index.dtype == np.int64
    assert list(df.columns) == SPLIT_COLUMNS
    row = df.loc[11]
    assert row[[f"rep_coord_nm_{a}" for a in "xyz"]].tolist() == [1, 2, 3]
    assert row[[f"pca_{i}_{a}" for i in range(3) for a in "xyz"]].tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 1]
    assert row[["pca_val_0", "pca_val_1", "pca_val_2"]].tolist() == [3.0, 2.0, 1.0]
    assert row["chunk_intersect_count_x_bottom"] == 1 and row["chunk_intersect_count_z_top"] == 6
    assert row["area_nm2"] == 100.0
    # An id without data has NaN everywhere (caveclient: uninitialised numbers).
    assert df.loc[12].isna().all()


def test_get_l2data_table_unsplit(l2, rsps):
    rsps.post(f"{V1}/table/test_v1/attributes", json=DATA)
    df = l2.get_l2data_table([11, 12], split_columns=False)
    assert list(df.columns) == ["area_nm2", "rep_coord_nm", "pca", "pca_val", "chunk_intersect_count"]
    assert df.loc[11, "rep_coord_nm"] == [1, 2, 3]


def test_get_l2data_table_only_some_attributes(l2, rsps):
    rsps.post(f"{V1}/table/test_v1/attributes", json={"11": {"size_nm3": 5, "rep_coord_nm": [1, 2, 3]}})
    df = l2.get_l2data_table([11], attributes=["size_nm3", "rep_coord_nm"])
    assert list(df.columns) == ["size_nm3", "rep_coord_nm_x", "rep_coord_nm_y", "rep_coord_nm_z"]


def test_metadata_and_attributes_are_cached(l2, rsps):
    rsps.get(f"{V1}/attribute_metadata", json={"area_nm2": "float32", "pca": "float32"})
    assert l2.cache_metadata() == {"area_nm2": "float32", "pca": "float32"}
    assert last(rsps).url == f"{V1}/attribute_metadata"
    assert l2.attributes == ["area_nm2", "pca"]
    assert l2.attributes == ["area_nm2", "pca"]
    assert len(rsps.calls) == 2


def test_table_mapping_and_has_cache(l2, rsps):
    rsps.get(f"{V1}/table_mapping", json={"test_v1": {"l2cache_id": "cache1", "cv_path": "gs://bucket"}})
    assert l2.has_cache() is True
    assert l2.table_mapping() == {"test_v1": {"l2cache_id": "cache1", "cv_path": "gs://bucket"}}
    assert [c.request.url for c in rsps.calls] == [f"{V1}/table_mapping"]  # cached


def test_has_cache_other_table(l2, rsps):
    rsps.get(f"{V1}/table_mapping", json={"another_table": {}})
    assert l2.has_cache() is False


def test_has_cache_without_mapping_endpoint(l2, rsps):
    rsps.get(f"{V1}/table_mapping", status=404)
    with pytest.warns(UserWarning, match=f"^L2cache deployment '{LOCAL}/l2cache' does not have a l2 cache table"):
        assert l2.has_cache() is False


def test_has_cache_raises_other_errors(l2, rsps):
    rsps.get(f"{V1}/table_mapping", status=500, json={"message": "down"})
    with pytest.raises(requests.HTTPError, match="500 Server Error: down"):
        l2.has_cache()


def test_has_cache_non_graphene_segmentation(rsps):
    record = datastack_record(segmentation_source="precomputed://gs://bucket/seg")
    mock_info_service(rsps, datastacks={DATASTACK: record})
    l2 = CAVEclient(DATASTACK, server_address=SERVER, auth_token=TOKEN).l2cache
    rsps.calls.reset()
    assert l2.has_cache() is False
    assert len(rsps.calls) == 0


def test_has_cache_of_another_datastack(rsps):
    other = datastack_record(name="other", segmentation_source=f"graphene://{LOCAL}/segmentation/table/other_v2")
    mock_info_service(rsps, datastacks={DATASTACK: datastack_record(), "other": other})
    rsps.get(f"{V1}/table_mapping", json={"other_v2": {}})
    l2 = CAVEclient(DATASTACK, server_address=SERVER, auth_token=TOKEN).l2cache
    assert l2.has_cache("other") is True
    assert l2.has_cache() is False


def test_standalone_client(rsps):
    l2 = L2CacheClient(server_address=LOCAL, table_name="test_v1", auth_client=AuthClient(token=TOKEN), timeout=3)
    assert len(rsps.calls) == 0
    rsps.get(f"{V1}/table_mapping", json={"test_v1": {}})
    assert l2.has_cache() is True
    assert last(rsps).req_kwargs["timeout"] == 3.0


def test_l2data_error(l2, rsps):
    rsps.post(f"{V1}/table/test_v1/attributes", status=400, body=b"bad ids")
    with pytest.raises(requests.HTTPError, match="400 Client Error: Bad Request .* content: b'bad ids'"):
        l2.get_l2data([1])


def test_table_matches_caveclient_for_complete_rows(rsps):
    l2cache = pytest.importorskip("caveclient.l2cache")
    complete = {"11": DATA["11"], "13": {**DATA["11"], "area_nm2": 5.0}}
    genuine_client = l2cache.L2CacheClient.__new__(l2cache.L2CacheClient)
    genuine_client.get_l2data = lambda l2_ids, attributes=None: complete
    ours = L2CacheClient(server_address=LOCAL, table_name="test_v1", auth_client=AuthClient(token=TOKEN))
    ours.get_l2data = lambda l2_ids, attributes=None: complete  # type: ignore[method-assign]
    expected = l2cache.L2CacheClient.get_l2data_table(genuine_client, [11, 13])
    pd.testing.assert_frame_equal(ours.get_l2data_table([11, 13]), expected)


def test_global_client_has_no_l2cache(rsps):
    client = CAVEclient(server_address=SERVER)
    with pytest.raises(AttributeError):
        client.l2cache  # noqa: B018
