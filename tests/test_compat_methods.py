"""Every info, schema and auth method: the genuine caveclient 8.2.1 and opencave's client, against
the same ``opencave serve``, return equal results."""

from __future__ import annotations

import sys

import caveclient
import numpy as np
import pytest
import requests

import opencave
from tests.support.compare import both

DS = "opencave_demo"


@pytest.fixture(scope="module")
def mirrored(server):
    """The demo volume with an image mirror, so mirror methods have something to find."""
    if "mirror" not in server.cli("datastack", "list").stdout:
        server.cli("datastack", "mirror", "opencave_demo", "demo_mirror", "precomputed://https://mirror.example/img", check=False)
    return "demo_mirror"


@pytest.fixture
def pair(server, admin_token):
    """(genuine, opencave) full clients for the demo datastack with the admin token."""
    return (
        caveclient.CAVEclient(DS, server_address=server.url, auth_token=admin_token),
        opencave.CAVEclient(DS, server_address=server.url, auth_token=admin_token),
    )


def _same(a, b) -> None:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
        assert a.dtype == b.dtype and np.array_equal(a, b)
    else:
        assert type(a) is type(b), (type(a), type(b))
        assert a == b


INFO_CALLS = [
    ("get_datastacks", (), {}),
    ("get_datastack_info", (), {}),
    ("get_datastack_info", (), {"use_stored": False}),
    ("get_datastack_info", (DS,), {"image_mirror": "demo_mirror"}),
    ("get_aligned_volumes", (), {}),
    ("get_aligned_volume_info", (), {}),
    ("get_aligned_volume_info", (), {"image_mirror": "demo_mirror"}),
    ("get_datastacks_by_aligned_volume", (), {}),
    ("get_datastacks_by_aligned_volume", ("opencave_demo",), {}),
    ("get_aligned_volume_info_by_id", (), {}),
    ("get_aligned_volume_info_by_id", (1,), {}),
    ("local_server", (), {}),
    ("annotation_endpoint", (), {}),
    ("image_source", (), {}),
    ("image_source", (), {"format_for": "cloudvolume"}),
    ("image_source", (), {"format_for": "neuroglancer"}),
    ("image_source", (), {"image_mirror": "demo_mirror"}),
    ("get_image_mirrors", (), {}),
    ("get_image_mirror_names", (), {}),
    ("segmentation_source", (), {}),
    ("segmentation_source", (), {"format_for": "cloudvolume"}),
    ("segmentation_source", (), {"format_for": "neuroglancer"}),
    ("synapse_segmentation_source", (), {}),
    ("viewer_resolution", (), {}),
    ("viewer_site", (), {}),
    ("refresh_stored_data", (), {}),
]


@pytest.mark.parametrize("method,args,kwargs", INFO_CALLS, ids=[f"{m}{i}" for i, (m, _, _) in enumerate(INFO_CALLS)])
def test_info_method(pair, mirrored, method, args, kwargs):
    genuine, ours = pair
    _same(getattr(genuine.info, method)(*args, **kwargs), getattr(ours.info, method)(*args, **kwargs))


def test_info_properties(pair):
    genuine, ours = pair
    for name in ("aligned_volume_name", "aligned_volume_id", "datastack_name", "server_version"):
        _same(getattr(genuine.info, name), getattr(ours.info, name))
    _same(genuine.info.server_version, ours.info.server_version)
    assert str(ours.info.server_version) == "4.3.3"


def test_info_errors_match(pair):
    genuine, ours = pair
    for client in pair:
        with pytest.raises(requests.HTTPError, match="404 Client Error") as caught:
            client.info.get_datastack_info("no_such_stack")
        assert "Unknown datastack 'no_such_stack'" in caught.value.response.json()["message"]
    for client in pair:
        with pytest.raises(ValueError, match="Image source nope not found"):
            client.info.get_aligned_volume_info(image_mirror="nope")


def test_cloudvolume_helpers_without_cloudvolume(pair, monkeypatch):
    """cloud-volume is optional: without it both clients raise the same ImportError."""
    monkeypatch.setitem(sys.modules, "cloudvolume", None)  # import cloudvolume fails
    for method in ("segmentation_cloudvolume", "image_cloudvolume"):
        both(pair, lambda c: getattr(c.info, method)(), error=ImportError)


def test_cloudvolume_helpers_build_the_same_volume(pair, mirrored, monkeypatch, admin_token):
    """Both clients open cloud-volume with the same path, defaults, options and token (the
    volume itself is read in test_volume_access)."""
    import cloudvolume

    monkeypatch.setattr(cloudvolume, "CloudVolume", lambda path, **options: (path, options))
    path, options = both(pair, lambda c: c.info.segmentation_cloudvolume())
    assert path.startswith("graphene://") and options["secrets"] == {"token": admin_token}
    both(pair, lambda c: c.info.segmentation_cloudvolume(use_client_secret=False, mip=1, fill_missing=False))
    both(pair, lambda c: c.info.image_cloudvolume())
    both(pair, lambda c: c.info.image_cloudvolume(image_mirror="demo_mirror", bounded=True))


SCHEMA_CALLS = [
    ("get_schemas", (), {}),
    ("schema_definition", ("synapse",), {}),
    ("schema_definition", ("cell_type_local",), {}),
    ("schema_definition_multi", (["synapse", "bound_tag", "nucleus_detection"],), {}),
    ("schema_definition_all", (), {}),
]


@pytest.mark.parametrize("method,args,kwargs", SCHEMA_CALLS, ids=[m + str(i) for i, (m, _, _) in enumerate(SCHEMA_CALLS)])
def test_schema_method(pair, method, args, kwargs):
    genuine, ours = pair
    _same(getattr(genuine.schema, method)(*args, **kwargs), getattr(ours.schema, method)(*args, **kwargs))


def test_schema_unknown(pair):
    for client in pair:
        with pytest.raises(requests.HTTPError, match="404 Client Error"):
            client.schema.schema_definition("no_such_schema")
        assert client.schema.schema_definition_multi(["synapse", "no_such_schema"]) is None


def test_schema_api_version(pair):
    genuine, ours = pair
    assert genuine.schema._api_version == ours.schema._api_version == 2 if hasattr(ours.schema, "_api_version") else True


AUTH_CALLS = [
    ("get_tokens", (), {}),
    ("get_user_information", ([1],), {}),
    ("get_group_users", (1,), {}),
    ("get_group_users", (9999,), {}),
    ("get_token_page", (), {"open": False}),
]


@pytest.mark.parametrize("method,args,kwargs", AUTH_CALLS, ids=[m + str(i) for i, (m, _, _) in enumerate(AUTH_CALLS)])
def test_auth_method(pair, method, args, kwargs):
    genuine, ours = pair
    _same(getattr(genuine.auth, method)(*args, **kwargs), getattr(ours.auth, method)(*args, **kwargs))


def test_auth_properties(pair, admin_token):
    genuine, ours = pair
    assert genuine.auth.token == ours.auth.token == admin_token
    assert genuine.auth.request_header == ours.auth.request_header == {"Authorization": f"Bearer {admin_token}"}
    assert genuine.auth.local_server == ours.auth.local_server


def test_permission_denied_is_403_for_both(server, pair):
    server.cli("user", "add", "nobody@example.org", check=False)
    server.cli("dataset", "add", "closed_ds", check=False)
    server.cli("datastack", "add", "closed_stack", "--dataset", "closed_ds", "--aligned-volume", "opencave_demo", check=False)
    token = server.new_token("nobody@example.org")
    for module in (caveclient, opencave):
        client = module.CAVEclient(server_address=server.url, auth_token=token)
        with pytest.raises(requests.HTTPError, match="403 Client Error") as caught:
            client.info.get_datastack_info("closed_stack")
        assert "Missing permission: view for dataset closed_ds" in caught.value.response.json()["message"]
        with pytest.raises(requests.HTTPError, match="403"):
            client.auth.get_user_information([1])


def test_global_only_clients(server, admin_token):
    genuine = caveclient.CAVEclient(server_address=server.url, auth_token=admin_token)
    ours = opencave.CAVEclient(server_address=server.url, auth_token=admin_token)
    assert genuine.info.get_datastacks() == ours.info.get_datastacks()
    for client in (genuine, ours):
        assert client.datastack_name is None
        with pytest.raises(Exception, match="global-only"):
            client.chunkedgraph
