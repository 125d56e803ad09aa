"""The JSON state service over HTTP, on both storage engines: states and segment-property
documents round-trip byte for byte, are served compressed or plain as the client asks, survive a
restart, and bad requests get clear 4xx JSON answers."""

from __future__ import annotations

import base64
import http.client
import json
import os
import zlib
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from opencave.storage.sql import create_store_engine
from opencave.storage.state import as_utc
from opencave.storage.tables import ngl_documents
from tests.support.server import ServerProcess

V1 = "/nglstate/api/v1"
MIB = 1024 * 1024
UNICODE_STATE = {
    "layers": [{"type": "segmentation", "name": "Zellkörper — 細胞 🧠", "segments": ["648518346349538235", "7"]}],
    "position": [1.5, 2, 3],
    "title": "naïve\u2028line",
}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _text(document) -> bytes:
    """Posted text with non-ASCII characters and unusual spacing, to show it is stored as sent."""
    return json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8")


def _post(server, token: str, path: str, body: bytes, method: str = "POST", **kwargs) -> requests.Response:
    return requests.request(method, server.url + path, data=body, headers=_auth(token), **kwargs)


def _posted_id(response: requests.Response, server_url: str, kind_path: str = "", new: bool = True) -> int:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    url = response.json()
    assert isinstance(url, str) and url.startswith(f"{server_url}{V1}/{kind_path}"), url
    doc_id = int(url.rsplit("/", 1)[1])
    assert url == f"{server_url}{V1}/{kind_path}{doc_id}"
    assert 0 < doc_id < 2**53 or not new  # new ids are exact as JavaScript numbers
    return doc_id


def _get(server, token: str, path: str, encoding: str) -> requests.Response:
    """A GET whose body is kept exactly as sent (not decoded by requests)."""
    response = requests.get(server.url + path, headers={**_auth(token), "Accept-Encoding": encoding}, stream=True)
    response.wire_body = response.raw.read(decode_content=False)
    return response


def _assert_error(response: requests.Response, status: int, error: str, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == status and body["error"] == error, body
    for word in words:
        assert word.lower() in body["message"].lower(), body["message"]


def _stored_row(server, kind: str, doc_id: int):
    url = server.database or f"sqlite:///{Path(server.data_dir) / 'opencave.db'}"
    engine = create_store_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                select(ngl_documents).where(ngl_documents.c.kind == kind, ngl_documents.c.id == doc_id)
            ).first()
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def reader_token(server) -> str:
    """A user without any administrator role."""
    email = "state-reader@example.org"
    if email not in server.cli("user", "list").stdout:
        server.cli("user", "add", email)
    return server.new_token(email)


# --- round trips ------------------------------------------------------------------------------


def _vary(response) -> list[str]:
    """The names an answer varies by (the CORS layer adds ``Origin``)."""
    return [name.strip() for name in response.headers.get("vary", "").split(",")]


@pytest.mark.parametrize("post_path, get_paths", [
    (f"{V1}/post", [f"{V1}/{{id}}", "/nglstate/{id}"]),
    ("/nglstate/post", [f"{V1}/{{id}}", "/nglstate/{id}"]),
])
def test_state_round_trip_plain_and_deflate(server, admin_token, post_path, get_paths):
    text = _text(UNICODE_STATE)
    doc_id = _posted_id(_post(server, admin_token, post_path, text), server.url)
    for template in get_paths:
        path = template.format(id=doc_id)
        plain = _get(server, admin_token, path, "identity")
        assert plain.status_code == 200
        assert plain.headers["content-type"] == "application/json"
        assert "Accept-Encoding" in _vary(plain)
        assert "content-encoding" not in plain.headers
        assert plain.wire_body == text
        assert int(plain.headers["content-length"]) == len(text)
        for accept in ("deflate", "gzip, deflate, br", "br;q=1.0, deflate;q=0.5"):
            packed = _get(server, admin_token, path, accept)
            assert packed.headers["content-encoding"] == "deflate"
            assert packed.headers["content-type"] == "application/json"
            assert "Accept-Encoding" in _vary(packed)
            assert int(packed.headers["content-length"]) == len(packed.wire_body)
            assert zlib.decompress(packed.wire_body) == text
        for refused in ("gzip", "deflate;q=0", "br, gzip;q=0.8"):
            assert _get(server, admin_token, path, refused).wire_body == text
        # What a client sees after its usual decoding.
        assert requests.get(server.url + path, headers=_auth(admin_token)).json() == UNICODE_STATE


def test_raw_is_the_zlib_stream_of_the_posted_text(server, admin_token):
    text = b'{"layers":[],  "x" : 1e400, "n": null}'  # not re-serialised: spacing and 1e400 stay
    doc_id = _posted_id(_post(server, admin_token, f"{V1}/post", text), server.url)
    for path in (f"{V1}/raw/{doc_id}", f"/nglstate/raw/{doc_id}"):
        response = requests.get(server.url + path, headers=_auth(admin_token))
        assert response.status_code == 200
        assert "content-encoding" not in response.headers
        assert response.content[:1] == b"\x78"  # a zlib header
        assert zlib.decompress(response.content) == text
    assert _get(server, admin_token, f"{V1}/{doc_id}", "identity").wire_body == text


def test_post_also_accepts_get_with_a_body(server, admin_token):
    doc_id = _posted_id(_post(server, admin_token, f"{V1}/post", b'{"via": "GET"}', method="GET"), server.url)
    assert requests.get(server.url + f"{V1}/{doc_id}", headers=_auth(admin_token)).json() == {"via": "GET"}


def test_properties_round_trip_in_their_own_store(server, admin_token):
    properties = {
        "@type": "neuroglancer_segment_properties",
        "inline": {"ids": ["1", "2"], "properties": [{"id": "label", "type": "label", "values": ["ä", "b"]}]},
    }
    text = _text(properties)
    prop_id = _posted_id(_post(server, admin_token, f"{V1}/property/post", text), server.url, "property/")
    info = _get(server, admin_token, f"{V1}/property/{prop_id}/info", "identity")
    assert info.wire_body == text and info.headers["content-type"] == "application/json"
    packed = _get(server, admin_token, f"{V1}/property/{prop_id}/info", "deflate")
    assert packed.headers["content-encoding"] == "deflate" and zlib.decompress(packed.wire_body) == text
    raw = requests.get(server.url + f"{V1}/property/raw/{prop_id}", headers=_auth(admin_token))
    assert zlib.decompress(raw.content) == text
    # States and properties are separate stores: the id names no state.
    _assert_error(requests.get(server.url + f"{V1}/{prop_id}", headers=_auth(admin_token)), 404, "unknown_state")
    state_id = _posted_id(_post(server, admin_token, f"{V1}/post", b"{}"), server.url)
    _assert_error(
        requests.get(server.url + f"{V1}/property/{state_id}/info", headers=_auth(admin_token)), 404, "unknown_property"
    )


def test_large_states(server, admin_token):
    # Larger as text than the 64 MiB default body limit: /nglstate allows 100 MiB.
    segments = [str(648518346349538235 + i) for i in range(3_600_000)]
    text = json.dumps({"layers": [{"type": "segmentation", "segments": segments}]}).encode()
    assert 64 * MIB < len(text) < 100 * MIB
    doc_id = _posted_id(_post(server, admin_token, f"{V1}/post", text), server.url)
    assert _get(server, admin_token, f"{V1}/{doc_id}", "identity").wire_body == text
    assert zlib.decompress(_get(server, admin_token, f"{V1}/{doc_id}", "deflate").wire_body) == text


def test_oversized_states_are_refused(server, admin_token):
    # Random text barely compresses: 70 MiB of it is more than 50 MiB after zlib.
    noise = base64.b64encode(os.urandom(52 * MIB)).decode()
    text = json.dumps({"noise": noise}).encode()
    assert len(text) < 100 * MIB
    response = _post(server, admin_token, f"{V1}/post", text)
    _assert_error(response, 413, "document_too_large", "after zlib compression", "52,428,800")
    # Bodies over 100 MiB are refused before they are read.
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.putrequest("POST", f"{V1}/post")
        connection.putheader("Authorization", f"Bearer {admin_token}")
        connection.putheader("Content-Length", str(100 * MIB + 1))
        connection.endheaders()
        answer = connection.getresponse()
        assert answer.status == 413
        body = json.loads(answer.read())
        assert body["error"] == "payload_too_large" and str(100 * MIB) in body["message"]
    finally:
        connection.close()


# --- ids, owners, administrators ---------------------------------------------------------------


def test_any_user_reads_and_writes_any_state(server, admin_token, reader_token):
    admin_state = _posted_id(_post(server, admin_token, f"{V1}/post", b'{"by": "admin"}'), server.url)
    reader_state = _posted_id(_post(server, reader_token, f"{V1}/post", b'{"by": "reader"}'), server.url)
    assert requests.get(server.url + f"{V1}/{admin_state}", headers=_auth(reader_token)).json() == {"by": "admin"}
    assert requests.get(server.url + f"{V1}/{reader_state}", headers=_auth(admin_token)).json() == {"by": "reader"}
    admin_id = requests.get(server.url + "/auth/api/v1/user/me", headers=_auth(admin_token)).json()["id"]
    reader_id = requests.get(server.url + "/auth/api/v1/user/me", headers=_auth(reader_token)).json()["id"]
    assert _stored_row(server, "state", admin_state).user_id == str(admin_id)
    assert _stored_row(server, "state", reader_state).user_id == str(reader_id)
    assert abs((as_utc(_stored_row(server, "state", reader_state).created) - datetime.now(timezone.utc)).total_seconds()) < 60


def test_random_ids_differ(server, admin_token):
    ids = {_posted_id(_post(server, admin_token, f"{V1}/post", b"[]"), server.url) for _ in range(20)}
    assert len(ids) == 20


@pytest.mark.parametrize("kind, post, get", [
    ("state", f"{V1}/post/{{id}}", f"{V1}/{{id}}"),
    ("property", f"{V1}/property/post/{{id}}", f"{V1}/property/{{id}}/info"),
])
def test_admin_posts_with_an_id_and_timestamp(server, admin_token, reader_token, kind, post, get):
    doc_id = 2**60 + int.from_bytes(os.urandom(4), "big")  # ids from another server may be large
    kind_path = "" if kind == "state" else "property/"
    path = post.format(id=doc_id)
    response = _post(server, admin_token, path, b'{"migrated": true}', params={"timestamp": "1500000000.25"})
    assert _posted_id(response, server.url, kind_path, new=False) == doc_id
    assert requests.get(server.url + get.format(id=doc_id), headers=_auth(admin_token)).json() == {"migrated": True}
    assert as_utc(_stored_row(server, kind, doc_id).created) == datetime(2017, 7, 14, 2, 40, 0, 250000, timezone.utc)
    # The id is taken now; stored documents never change.
    _assert_error(_post(server, admin_token, path, b'{"other": 1}'), 409, "id_exists", str(doc_id))
    assert requests.get(server.url + get.format(id=doc_id), headers=_auth(admin_token)).json() == {"migrated": True}
    # Only superadmins choose ids.
    _assert_error(_post(server, reader_token, post.format(id=doc_id + 1), b"{}"), 403, "missing_role", "superadmin")
    # Without a timestamp the document is dated now.
    response = _post(server, admin_token, post.format(id=doc_id + 2), b"{}")
    assert _posted_id(response, server.url, kind_path, new=False) == doc_id + 2
    assert abs((as_utc(_stored_row(server, kind, doc_id + 2).created) - datetime.now(timezone.utc)).total_seconds()) < 60


# --- authentication and bad input ---------------------------------------------------------------

ROUTES = [
    ("GET", f"{V1}/version"),
    ("GET", f"{V1}/table_info"),
    ("POST", f"{V1}/post"),
    ("GET", f"{V1}/post"),
    ("POST", f"{V1}/post/5"),
    ("GET", f"{V1}/5"),
    ("GET", f"{V1}/raw/5"),
    ("POST", f"{V1}/property/post"),
    ("POST", f"{V1}/property/post/5"),
    ("GET", f"{V1}/property/5/info"),
    ("GET", f"{V1}/property/raw/5"),
    ("GET", "/nglstate/5"),
    ("GET", "/nglstate/raw/5"),
    ("POST", "/nglstate/post"),
]


def test_every_route_needs_a_token(server):
    for method, path in ROUTES:
        response = requests.request(method, server.url + path, data=b"{}")
        _assert_error(response, 401, "no_token", "No Token Provided")
        response = requests.request(method, server.url + path, data=b"{}", headers=_auth("0" * 32))
        _assert_error(response, 401, "invalid_token")


def test_version_and_table_info(server, admin_token):
    version = requests.get(server.url + f"{V1}/version", headers=_auth(admin_token))
    assert version.status_code == 200 and version.json() == "0.7.2"
    info = requests.get(server.url + f"{V1}/table_info", headers=_auth(admin_token))
    me = requests.get(server.url + "/auth/api/v1/user/me", headers=_auth(admin_token)).json()
    assert info.status_code == 200 and info.text.startswith(f"User: {me['id']} - project opencave")
    assert info.text.endswith("table ngl_documents")


@pytest.mark.parametrize("body, words", [
    (b"not json", ["not valid JSON", "line 1, column 1"]),
    (b'{"layers": [', ["not valid JSON"]),
    (b"", ["empty"]),
    (b"  \n", ["empty"]),
    (b'{"a": "\xff\xfe\xfa"}', ["UTF-8"]),
    (b"[" * 100_000 + b"]" * 100_000, ["nested too deeply"]),
])
def test_bodies_that_are_not_json(server, admin_token, body, words):
    for path in (f"{V1}/post", f"{V1}/property/post", "/nglstate/post"):
        _assert_error(_post(server, admin_token, path, body), 400, "invalid_json", *words)


def test_bad_and_unknown_ids(server, admin_token):
    headers = _auth(admin_token)
    for path in (f"{V1}/abc", f"{V1}/-5", f"{V1}/1.5", f"{V1}/raw/x1", "/nglstate/abc", "/nglstate/raw/0x10",
                 f"{V1}/property/abc/info", f"{V1}/property/raw/abc"):
        _assert_error(requests.get(server.url + path, headers=headers), 400, "invalid_id", "positive integers")
    for path in (f"{V1}/0", f"{V1}/{2**63}", f"{V1}/property/{2**64}/info"):
        _assert_error(requests.get(server.url + path, headers=headers), 400, "invalid_id", "below 2**63")
    for path in (f"{V1}/post/abc", f"{V1}/property/post/12ab"):
        _assert_error(_post(server, admin_token, path, b"{}"), 400, "invalid_id")
    _assert_error(_post(server, admin_token, f"{V1}/post/0", b"{}"), 400, "invalid_id", "below 2**63")
    for path in (f"{V1}/1", f"{V1}/raw/1", "/nglstate/1", "/nglstate/raw/1"):
        _assert_error(requests.get(server.url + path, headers=headers), 404, "unknown_state", "No state with id 1")
    for path in (f"{V1}/property/1/info", f"{V1}/property/raw/1"):
        _assert_error(requests.get(server.url + path, headers=headers), 404, "unknown_property", "id 1")


def test_bad_timestamps(server, admin_token):
    for value in ("yesterday", "nan", "inf", "1e300"):
        response = _post(server, admin_token, f"{V1}/post/{2**55 + 3}", b"{}", params={"timestamp": value})
        _assert_error(response, 400, "invalid_timestamp", "seconds since 1970")


# --- persistence ----------------------------------------------------------------------------------


def test_documents_survive_a_restart_and_use_the_public_url(backend, server_factory):
    public = "https://cave.example.org"
    server = server_factory(backend, "--public-url", public + "/")
    token = server.new_token()
    state = _text(UNICODE_STATE)
    properties = b'{"@type": "neuroglancer_segment_properties", "inline": {"ids": [], "properties": []}}'
    state_id = _posted_id(_post(server, token, f"{V1}/post", state), public)
    prop_id = _posted_id(_post(server, token, f"{V1}/property/post", properties), public, "property/")
    server.stop()
    restarted = ServerProcess(server.data_dir, server.database, port=server.port, extra_args=server.extra_args).start()
    try:
        assert _get(restarted, token, f"{V1}/{state_id}", "identity").wire_body == state
        assert _get(restarted, token, f"{V1}/property/{prop_id}/info", "identity").wire_body == properties
        assert zlib.decompress(requests.get(restarted.url + f"{V1}/raw/{state_id}", headers=_auth(token)).content) == state
    finally:
        restarted.stop()
