"""``client.info`` and the cloud-path formatters."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import responses

from opencave import CAVEclient
from opencave.client.errors import ServerIncompatibilityError
from opencave.client.formats import format_path

from .helpers import DATASTACK, LOCAL, SERVER, TOKEN, datastack_record, mock_info_service

V2 = f"{SERVER}/info/api/v2"
MIRRORS = [
    {"name": "default", "image_source": "precomputed://gs://bucket/images", "id": 1, "description": ""},
    {"name": "aws", "image_source": "precomputed://s3://bucket/images", "id": 2, "description": ""},
]


@pytest.fixture
def client(rsps):
    mock_info_service(rsps)
    rsps.add(responses.GET, f"{V2}/datastack/{DATASTACK}/image_sources", json=MIRRORS)
    return CAVEclient(DATASTACK, server_address=SERVER, auth_token=TOKEN)


def _calls(rsps, url: str) -> int:
    return sum(1 for call in rsps.calls if call.request.url.split("?")[0] == url)


def test_full_client_construction(client, rsps):
    assert [c.request.url for c in rsps.calls] == [f"{SERVER}/info/version", f"{V2}/datastack/full/{DATASTACK}"]
    assert client.local_server == LOCAL
    assert client.auth.local_server == LOCAL
    assert client.info.aligned_volume_name == "test_volume"
    assert client.info.aligned_volume_id == 1
    assert client.info.datastack_name == DATASTACK


def test_datastack_info_is_cached(client, rsps):
    url = f"{V2}/datastack/full/{DATASTACK}"
    assert client.info.get_datastack_info()["synapse_table"] == "synapses"
    assert client.info.viewer_site() == "https://neuroglancer.example.org"
    assert _calls(rsps, url) == 1
    client.info.get_datastack_info(use_stored=False)
    assert _calls(rsps, url) == 2
    client.info.refresh_stored_data()
    assert _calls(rsps, url) == 3


def test_properties(client):
    info = client.info
    assert info.local_server() == LOCAL
    assert info.annotation_endpoint() == f"{LOCAL}/annotation"
    assert info.segmentation_source() == f"graphene://{LOCAL}/segmentation/table/test_v1"
    assert info.segmentation_source(format_for="cloudvolume") == f"graphene://{LOCAL}/segmentation/table/test_v1"
    assert info.segmentation_source(format_for="spelunker") == (
        f"graphene://middleauth+{LOCAL}/segmentation/table/test_v1"
    )
    assert info.synapse_segmentation_source() is None
    assert info.image_source() == "precomputed://gs://bucket/images"
    assert info.image_source(format_for="neuroglancer") is None  # caveclient's result
    np.testing.assert_array_equal(info.viewer_resolution(), np.array([4.0, 4.0, 40]))
    assert info.get_aligned_volume_info()["name"] == "test_volume"
    with pytest.raises(ValueError, match="format_for must be one of"):
        info.image_source(format_for="nonsense")


def test_listings(client, rsps):
    rsps.add(responses.GET, f"{V2}/aligned_volume", json=[{"name": "test_volume"}])
    rsps.add(responses.GET, f"{V2}/aligned_volume/test_volume/datastacks", json=[DATASTACK])
    rsps.add(responses.GET, f"{V2}/aligned_volume/id/1", json={"name": "test_volume", "id": 1})
    assert client.info.get_datastacks() == [DATASTACK]
    assert client.info.get_aligned_volumes() == [{"name": "test_volume"}]
    assert client.info.get_datastacks_by_aligned_volume() == [DATASTACK]
    assert client.info.get_aligned_volume_info_by_id() == {"name": "test_volume", "id": 1}


def test_global_client_needs_a_datastack(rsps):
    mock_info_service(rsps)
    info = CAVEclient(server_address=SERVER).info
    with pytest.raises(ValueError, match="No Dataset set"):
        info.get_datastack_info()
    with pytest.raises(ValueError, match="Must specify aligned_volume_id"):
        info.get_aligned_volume_info_by_id()
    assert info.get_datastack_info(DATASTACK)["local_server"] == LOCAL


def test_image_mirrors(client, rsps):
    assert client.info.get_image_mirror_names() == ["default", "aws"]
    assert client.info.get_aligned_volume_info(image_mirror="aws")["id"] == 2
    assert client.info.image_source(image_mirror="aws", format_for="raw") == "precomputed://s3://bucket/images"
    with pytest.raises(ValueError, match="Image source nope not found in aligned volumes"):
        client.info.get_aligned_volume_info(image_mirror="nope")

    client.info.get_datastack_info(image_mirror="aws")
    assert rsps.calls[-1].request.url == f"{V2}/datastack/full/{DATASTACK}?image_source_name=aws"


def test_image_mirrors_need_info_4_3_1(rsps):
    mock_info_service(rsps, version="4.2.0")
    client = CAVEclient(DATASTACK, server_address=SERVER)
    with pytest.raises(ServerIncompatibilityError, match="get_image_mirrors"):
        client.info.get_image_mirrors()
    with pytest.raises(ServerIncompatibilityError, match="keyword argument `image_mirror`"):
        client.info.get_datastack_info(image_mirror="aws")
    assert client.info.get_datastack_info()["local_server"] == LOCAL


def test_info_cache_spares_requests(rsps):
    rsps.add(responses.GET, f"{SERVER}/info/version", json="4.3.3")
    cache = {DATASTACK: datastack_record()}
    client = CAVEclient(DATASTACK, server_address=SERVER, info_cache=cache)
    assert client.local_server == LOCAL
    assert [c.request.url for c in rsps.calls] == [f"{SERVER}/info/version"]


def test_cloudvolume_missing(client, monkeypatch):
    monkeypatch.setitem(sys.modules, "cloudvolume", None)
    with pytest.raises(ImportError, match="pypi.org/project/cloud-volume"):
        client.info.segmentation_cloudvolume()


def test_cloudvolume_arguments(client, monkeypatch):
    made = []
    fake = types.ModuleType("cloudvolume")
    fake.CloudVolume = lambda path, **kwargs: made.append((path, kwargs)) or "cv"
    monkeypatch.setitem(sys.modules, "cloudvolume", fake)

    assert client.info.segmentation_cloudvolume(mip=1) == "cv"
    path, kwargs = made[-1]
    assert path == f"graphene://{LOCAL}/segmentation/table/test_v1"
    assert kwargs == {"use_https": True, "bounded": False, "fill_missing": True, "mip": 1, "secrets": {"token": TOKEN}}

    client.info.image_cloudvolume(bounded=True)
    path, kwargs = made[-1]
    assert path == "precomputed://gs://bucket/images"
    assert kwargs["bounded"] is True and kwargs["secrets"] is None

    client.info.segmentation_cloudvolume(use_client_secret=False)
    assert made[-1][1]["secrets"] is None


@pytest.mark.parametrize(
    "path, format_for, expected",
    [
        ("gs://bucket/p", "raw", "gs://bucket/p"),
        ("gs://bucket/p", "cloudvolume", "precomputed://https://storage.googleapis.com/p"),  # sic
        ("https://h/p", "cloudvolume", "precomputed://https://h/p"),
        ("precomputed://gs://b/p", "cloudvolume", "precomputed://gs://b/p"),
        ("graphene://https://h/t", "cloudvolume", "graphene://https://h/t"),
        ("s3://b/p", "cloudvolume", None),
        ("https://h/t", "neuroglancer", "graphene://https://h/t"),
        ("graphene://https://h/t", "neuroglancer", "graphene://https://h/t"),
        ("precomputed://gs://b/p", "neuroglancer", None),  # sic
        ("graphene://https://h/t", "cave_explorer", "graphene://middleauth+https://h/t"),
        ("https://h/t", "cave-explorer", "graphene://middleauth+https://h/t"),
        ("precomputed://gs://b/p", "spelunker", None),  # sic
        ("ftp://x", "spelunker", None),
        (None, "cloudvolume", None),
    ],
)
def test_formats_match_caveclient(path, format_for, expected):
    assert format_path(path, format_for) == expected


def test_formats_equal_caveclient_everywhere():
    format_utils = pytest.importorskip("caveclient.format_utils")
    inputs = [None, "gs://b/p/q", "https://h/p", "http://h:8/p?x=1", "precomputed://gs://b/p", "graphene://https://h/t"]
    inputs += ["graphene://middleauth+https://h/t", "s3://b/p", "just/a/path"]
    for format_for, formatter in format_utils.output_map.items():
        for path in inputs:
            assert format_path(path, format_for) == formatter(path), (format_for, path)
