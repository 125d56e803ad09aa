"""Every state-service method: the genuine caveclient 8.2.1 and opencave's client, against the
same ``opencave serve``, give equal results and raise the same kinds of errors; documents
uploaded by either client read back identically through the other."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import caveclient
import numpy as np
import pytest
import requests
from caveclient.auth import AuthClient as GenuineAuth
from caveclient.jsonservice import JSONService as GenuineJSONService

import opencave
from opencave.client import AuthClient, JSONService

DS = "opencave_demo"
NGL_INFO = {"version": "2024.10.1", "build": "a1b2c3"}

STATES = [
    {"layers": [{"type": "segmentation", "name": "Zellkörper 細胞 🧠", "segments": ["648518346349538235"]}]},
    {
        "numpy_int": np.int64(648518346349538235),
        "python_int": 648518346349538235,
        "uint64_array": np.array([1, 2**64 - 1], dtype=np.uint64),
        "float32": np.float32(0.5),
        "float64": np.float64(2.25),
        "matrix": np.arange(6, dtype=np.int32).reshape(2, 3),
        "set": {3},
        "frozenset": frozenset(),
        "nested": [[None, True, 1.5e-300, "ü"]],
    },
    {},
    [1, "two", {"three": 3}],
]
# What every state above reads back as (numpy integers become strings, as caveclient sends them).
DECODED = [
    STATES[0],
    {
        "numpy_int": "648518346349538235",
        "python_int": 648518346349538235,
        "uint64_array": ["1", str(2**64 - 1)],
        "float32": 0.5,
        "float64": 2.25,
        "matrix": [["0", "1", "2"], ["3", "4", "5"]],
        "set": [3],
        "frozenset": [],
        "nested": [[None, True, 1.5e-300, "ü"]],
    },
    {},
    [1, "two", {"three": 3}],
]
PROPERTIES = {
    "@type": "neuroglancer_segment_properties",
    "inline": {
        "ids": [str(i) for i in range(1, 4)],
        "properties": [{"id": "cell_type", "type": "label", "values": ["pyramidal", "basket", "chandelier"]}],
    },
}


@pytest.fixture(scope="module")
def pair(server, admin_token):
    """(genuine, opencave) full clients of the demo datastack."""
    return (
        caveclient.CAVEclient(DS, server_address=server.url, auth_token=admin_token),
        opencave.CAVEclient(DS, server_address=server.url, auth_token=admin_token),
    )


@pytest.fixture(scope="module")
def states(pair):
    return pair[0].state, pair[1].state


@pytest.fixture(scope="module")
def reader_states(server):
    """State clients of a user without administrator roles."""
    email = "state-reader@example.org"
    if email not in server.cli("user", "list").stdout:
        server.cli("user", "add", email)
    token = server.new_token(email)
    return (
        caveclient.CAVEclient(server_address=server.url, auth_token=token).state,
        opencave.CAVEclient(server_address=server.url, auth_token=token).state,
    )


@pytest.fixture(scope="module")
def neuroglancer_site():
    """A local web server: ``/current`` is a deployment with a version.json, ``/legacy`` one
    without (404), ``/broken`` one that fails (500)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            if self.path == "/current/version.json":
                body, status = json.dumps(NGL_INFO).encode(), 200
            elif self.path == "/broken/version.json":
                body, status = b"broken", 500
            else:
                body, status = b"not found", 404
            self.server.seen_auth.append(self.headers.get("Authorization"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.seen_auth = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _same_error(calls, exception_type=Exception) -> list[BaseException]:
    """Run each call, expecting each to raise; the exceptions are of the same class (or, for the
    clients' own error classes, of classes with the same name)."""
    raised = []
    for call in calls:
        with pytest.raises(exception_type) as info:
            call()
        raised.append(info.value)
    names = {type(e).__name__ for e in raised}
    assert len(names) == 1, raised
    return raised


# --- properties of the client ----------------------------------------------------------------


def test_client_attributes(server, pair, states):
    genuine, ours = states
    assert ours.state_service_endpoint == genuine.state_service_endpoint == f"{server.url}/nglstate/api/v1/post"
    viewer = pair[0].info.viewer_site()
    assert ours.ngl_url == genuine.ngl_url == viewer
    assert str(ours.server_version) == str(genuine.server_version) == "0.7.2"
    assert ours.api_version == genuine.api_version == 1
    assert ours.server_address == genuine.server_address == server.url


def test_ngl_url_of_global_clients_and_setter(server, admin_token):
    genuine = caveclient.CAVEclient(server_address=server.url, auth_token=admin_token).state
    ours = opencave.CAVEclient(server_address=server.url, auth_token=admin_token).state
    assert genuine.ngl_url is None and ours.ngl_url is None
    for client in (genuine, ours):
        client.ngl_url = "https://ngl.example.org"
    assert genuine.ngl_url == ours.ngl_url == "https://ngl.example.org"
    assert genuine.build_neuroglancer_url(7, target_site="mainline") == ours.build_neuroglancer_url(7, target_site="mainline")


# --- states and properties ---------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(STATES)))
def test_states_round_trip_between_the_clients(server, states, index):
    genuine, ours = states
    for uploader in (genuine, ours):
        state_id = uploader.upload_state_json(STATES[index])
        assert type(state_id) is int and 0 < state_id < 2**53
        for reader in (genuine, ours):
            assert reader.get_state_json(state_id) == DECODED[index]
            assert reader.get_state_json(str(state_id)) == DECODED[index]
            url = f"{server.url}/nglstate/api/v1/{state_id}"
            assert reader.get_state_json(url) == DECODED[index]


def test_large_state(states):
    genuine, ours = states
    state = {"layers": [{"type": "segmentation", "segments": np.arange(2**40, 2**40 + 400_000, dtype=np.uint64)}]}
    expected = {"layers": [{"type": "segmentation", "segments": [str(2**40 + i) for i in range(400_000)]}]}
    for uploader in (genuine, ours):
        state_id = uploader.upload_state_json(state)
        assert genuine.get_state_json(state_id) == ours.get_state_json(state_id) == expected


def test_properties_round_trip_between_the_clients(states):
    genuine, ours = states
    for uploader in (genuine, ours):
        prop_id = uploader.upload_property_json(PROPERTIES)
        assert type(prop_id) is int
        assert genuine.get_property_json(prop_id) == ours.get_property_json(prop_id) == PROPERTIES
    big = {**PROPERTIES, "padding": "x" * 3_000_000}
    errors = _same_error([lambda: genuine.upload_property_json(big), lambda: ours.upload_property_json(big)], ValueError)
    assert str(errors[0]) == str(errors[1])
    assert "exceeds maximum size of 2500000 bytes" in str(errors[0])
    errors = _same_error(
        [lambda: genuine.upload_property_json(PROPERTIES, max_size=10), lambda: ours.upload_property_json(PROPERTIES, max_size=10)],
        ValueError,
    )
    assert str(errors[0]) == str(errors[1])
    for uploader in (genuine, ours):
        prop_id = uploader.upload_property_json(big, max_size=None)
        assert genuine.get_property_json(prop_id) == ours.get_property_json(prop_id) == big


def test_admins_choose_ids(states, reader_states):
    genuine, ours = states
    base = 2**52 + int.from_bytes(os.urandom(4), "big") * 8
    assert genuine.upload_state_json({"by": "genuine"}, state_id=base) == base
    assert ours.upload_state_json({"by": "ours"}, state_id=base + 1) == base + 1
    assert ours.get_state_json(base) == {"by": "genuine"} and genuine.get_state_json(base + 1) == {"by": "ours"}
    assert genuine.upload_property_json(PROPERTIES, state_id=base + 2) == base + 2
    assert ours.upload_property_json(PROPERTIES, state_id=base + 3) == base + 3
    assert genuine.get_property_json(base + 3) == ours.get_property_json(base + 2) == PROPERTIES
    for calls, status in [
        ([lambda: genuine.upload_state_json({}, state_id=base + 1), lambda: ours.upload_state_json({}, state_id=base)], 409),
        ([lambda: genuine.upload_property_json({}, state_id=base + 3), lambda: ours.upload_property_json({}, state_id=base + 2)], 409),
        ([lambda c=c: c.upload_state_json({}, state_id=base + 4) for c in reader_states], 403),
        ([lambda c=c: c.upload_property_json({}, state_id=base + 5) for c in reader_states], 403),
    ]:
        for error in _same_error(calls, requests.HTTPError):
            assert error.response.status_code == status


def test_readers_use_every_state(states, reader_states):
    genuine, ours = states
    state_id = ours.upload_state_json({"shared": True})
    for client in reader_states:
        assert client.get_state_json(state_id) == {"shared": True}
        own = client.upload_state_json({"mine": 1})
        assert genuine.get_state_json(own) == {"mine": 1}


def test_errors(server, states):
    genuine, ours = states
    for calls, status in [
        ([lambda c=c: c.get_state_json(1) for c in states], 404),
        ([lambda c=c: c.get_property_json(1) for c in states], 404),
        ([lambda c=c: c.get_state_json(f"{server.url}/nglstate/api/v1/not-an-id") for c in states], 400),
    ]:
        for error in _same_error(calls, requests.HTTPError):
            assert error.response.status_code == status
            assert error.response.json()["code"] == status
    _same_error([lambda c=c: c.get_state_json("not a url") for c in states], requests.exceptions.MissingSchema)
    _same_error([lambda c=c: c.get_state_json(None) for c in states], TypeError)
    _same_error([lambda c=c: c.upload_state_json({"a": object()}) for c in states], TypeError)
    _same_error([lambda c=c: c.upload_state_json({"a": np.bool_(True)}) for c in states], TypeError)


def test_legacy_api_version(server, admin_token):
    genuine = GenuineJSONService(server.url, GenuineAuth(token=admin_token, server_address=server.url), api_version=0)
    ours = JSONService(server.url, AuthClient(token=admin_token, server_address=server.url), api_version=0)
    assert genuine.api_version == ours.api_version == 0
    assert genuine.server_version is None and ours.server_version is None
    assert genuine.state_service_endpoint == ours.state_service_endpoint == f"{server.url}/nglstate/post"
    for uploader in (genuine, ours):
        state_id = uploader.upload_state_json(STATES[0])
        assert genuine.get_state_json(state_id) == ours.get_state_json(state_id) == DECODED[0]
    _same_error([lambda c=c: c.get_property_json(1) for c in (genuine, ours)])
    _same_error([lambda c=c: c.upload_property_json(PROPERTIES) for c in (genuine, ours)])


# --- local files ---------------------------------------------------------------------------------


def test_save_state_json_local(tmp_path, states):
    genuine, ours = states
    written = []
    for name, client in (("genuine", genuine), ("ours", ours)):
        path = tmp_path / f"{name}.json"
        assert client.save_state_json_local(STATES[1], str(path)) is None
        written.append(path.read_bytes())
        with pytest.raises(ValueError, match="File exists and overwrite is False"):
            client.save_state_json_local(STATES[0], str(path))
        assert path.read_bytes() == written[-1]
        client.save_state_json_local(STATES[0], str(path), overwrite=True)
        assert json.loads(path.read_text()) == DECODED[0]
    assert written[0] == written[1]
    assert json.loads(written[0]) == DECODED[1]


# --- Neuroglancer links ----------------------------------------------------------------------------

SITES = ["seunglab", "spelunker", "mainline", "cave-explorer"]


@pytest.mark.parametrize("ngl_url", ["https://ngl.example.org", "https://ngl.example.org/app/"])
def test_build_neuroglancer_url_for_every_site_and_flag(states, ngl_url):
    genuine, ours = states
    for target_site in SITES:
        for static_url in (False, True):
            for format_properties in (False, True):
                state_id = "https://my-site.com/myjsonfile.json" if static_url else 1234
                kwargs = {"ngl_url": ngl_url, "target_site": target_site, "static_url": static_url, "format_properties": format_properties}
                expected = genuine.build_neuroglancer_url(state_id, **kwargs)
                assert ours.build_neuroglancer_url(state_id, **kwargs) == expected
                assert ours.build_neuroglancer_url(state_id=state_id, **kwargs) == expected
    base = ngl_url.rstrip("/")
    assert ours.build_neuroglancer_url(5, ngl_url=ngl_url, target_site="seunglab") == f"{base}/?json_url={ours.server_address}/nglstate/api/v1/5"
    assert ours.build_neuroglancer_url(5, ngl_url=ngl_url, target_site="mainline") == f"{base}/#!middleauth+{ours.server_address}/nglstate/api/v1/5"
    errors = _same_error([lambda c=c: c.build_neuroglancer_url(5, ngl_url=ngl_url, target_site="elsewhere") for c in states], ValueError)
    assert str(errors[0]) == str(errors[1])
    _same_error([lambda c=c: c.build_neuroglancer_url(5, ngl_url=ngl_url, target_site="seunglab", static_url=True) for c in states], TypeError)


def test_build_neuroglancer_url_defaults(server, admin_token, states):
    genuine, ours = states
    for target_site in SITES:
        assert genuine.build_neuroglancer_url(9, target_site=target_site) == ours.build_neuroglancer_url(9, target_site=target_site)
    global_genuine = caveclient.CAVEclient(server_address=server.url, auth_token=admin_token).state
    global_ours = opencave.CAVEclient(server_address=server.url, auth_token=admin_token).state
    for target_site in SITES:
        url = global_ours.build_neuroglancer_url(9, target_site=target_site)
        assert url == global_genuine.build_neuroglancer_url(9, target_site=target_site)
        assert url.startswith("https://neuroglancer.neuvue.io/")


def test_neuroglancer_info_and_site_detection(states, neuroglancer_site):
    genuine, ours = states
    httpd, site = neuroglancer_site
    current, legacy, broken = f"{site}/current", f"{site}/legacy", f"{site}/broken"
    assert genuine.get_neuroglancer_info(current) == ours.get_neuroglancer_info(current) == NGL_INFO
    assert genuine.get_neuroglancer_info(legacy) == ours.get_neuroglancer_info(legacy) == {}
    for error in _same_error([lambda c=c: c.get_neuroglancer_info(broken) for c in states], requests.HTTPError):
        assert error.response.status_code == 500
    for ngl_url, marker in ((current, "/#!middleauth+"), (legacy, "/?json_url=")):
        for kwargs in ({}, {"format_properties": True}):
            url = ours.build_neuroglancer_url(1234, ngl_url=ngl_url, **kwargs)
            assert url == genuine.build_neuroglancer_url(1234, ngl_url=ngl_url, **kwargs)
        assert marker in ours.build_neuroglancer_url(1234, ngl_url=ngl_url)
        static = "https://my-site.com/myjsonfile.json"
        assert ours.build_neuroglancer_url(static, ngl_url=ngl_url, static_url=True) == genuine.build_neuroglancer_url(
            static, ngl_url=ngl_url, static_url=True
        )
    # The client's own ngl_url is the default deployment.
    saved = genuine.ngl_url, ours.ngl_url
    try:
        genuine.ngl_url = ours.ngl_url = current
        assert genuine.get_neuroglancer_info() == ours.get_neuroglancer_info() == NGL_INFO
        assert genuine.build_neuroglancer_url(3) == ours.build_neuroglancer_url(3)
    finally:
        genuine.ngl_url, ours.ngl_url = saved
    # opencave does not hand the CAVE token to a Neuroglancer deployment.
    httpd.seen_auth.clear()
    ours.get_neuroglancer_info(current)
    assert httpd.seen_auth == [None]
