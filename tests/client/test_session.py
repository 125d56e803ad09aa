"""Session defaults, retries, pools and timeouts."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests
from requests.adapters import HTTPAdapter

from opencave import CAVEclient, get_session_defaults, set_session_defaults
from opencave.client.base import handle_response
from opencave.client.session import DEFAULT_TIMEOUT, TimeoutSession, build_session

from .helpers import SERVER, TOKEN, mock_info_service


def test_defaults_and_reset():
    assert get_session_defaults() == {
        "max_retries": 3,
        "pool_block": False,
        "pool_maxsize": 10,
        "backoff_factor": 0.1,
        "backoff_max": 120,
        "status_forcelist": (502, 503, 504),
        "timeout": (10.0, 300.0),
    }
    set_session_defaults(max_retries=9, timeout=4)
    assert get_session_defaults()["max_retries"] == 9
    assert get_session_defaults()["timeout"] == 4.0
    set_session_defaults(pool_maxsize=3)  # every call sets every key
    assert get_session_defaults()["max_retries"] == 3
    assert get_session_defaults()["timeout"] == DEFAULT_TIMEOUT


def test_defaults_reach_sub_client_adapters(rsps):
    mock_info_service(rsps)
    rsps.get(f"{SERVER}/schema/versions", json=[1, 2])
    set_session_defaults(
        pool_maxsize=21, pool_block=True, max_retries=5, backoff_factor=0.5, status_forcelist=(502, 503, 504, 505)
    )
    client = CAVEclient(server_address=SERVER, auth_token=TOKEN)
    for sub_client in (client.info, client.schema):
        adapter = sub_client.session.adapters["https://"]
        assert adapter is sub_client.session.adapters["http://"]
        assert adapter._pool_maxsize == 21
        assert adapter._pool_block is True
        retry = adapter.max_retries
        assert retry.total == 5
        assert retry.backoff_factor == 0.5
        assert retry.backoff_max == 120
        assert retry.status_forcelist == (502, 503, 504, 505)
        assert retry.allowed_methods == frozenset({"GET", "POST"})
        assert retry.raise_on_status is False


def test_client_overrides_beat_defaults(rsps):
    mock_info_service(rsps)
    client = CAVEclient(server_address=SERVER, max_retries=7, pool_maxsize=2, pool_block=True, timeout=(1, 2))
    adapter = client.info.session.adapters["https://"]
    assert adapter.max_retries.total == 7
    assert adapter._pool_maxsize == 2
    assert adapter._pool_block is True
    assert client.info.session.timeout == (1, 2)
    assert client.info.timeout == (1, 2)
    assert client.auth._timeout == (1, 2)


def test_timeout_default_and_validation(rsps):
    mock_info_service(rsps)
    set_session_defaults(timeout=(3, 30))
    client = CAVEclient(server_address=SERVER)
    assert client.info.session.timeout == (3, 30)
    assert client.timeout == (3, 30)
    assert CAVEclient(server_address=SERVER, timeout=12).timeout == 12.0
    with pytest.raises(ValueError):
        CAVEclient(timeout=-1)
    with pytest.raises(TypeError):
        CAVEclient(timeout="soon")
    with pytest.raises(TypeError):
        CAVEclient(timeout=(1, 2, 3))


class _RecordingAdapter(HTTPAdapter):
    def __init__(self):
        super().__init__()
        self.timeouts: list = []

    def send(self, request, **kwargs):
        self.timeouts.append(kwargs.get("timeout"))
        response = requests.Response()
        response.status_code = 200
        response.url = request.url
        response._content = b"{}"
        response.request = request
        return response


def test_timeout_applies_to_every_request_unless_given():
    session = TimeoutSession(timeout=(2, 20))
    adapter = _RecordingAdapter()
    session.mount("https://", adapter)
    session.get("https://x.example/a")
    session.post("https://x.example/b", json={})
    session.delete("https://x.example/c")
    session.get("https://x.example/d", timeout=99)
    assert adapter.timeouts == [(2, 20), (2, 20), (2, 20), 99]


def test_environment_settings_follow_the_environment(monkeypatch):
    """The per-server memory of requests' environment settings never hides a change: a proxy
    set, changed or removed, and a CA bundle, are seen by the next request."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    session = TimeoutSession()
    plain = requests.Session()

    def both(url: str) -> tuple[dict, dict]:
        ours = session.merge_environment_settings(url, {}, None, None, None)
        theirs = plain.merge_environment_settings(url, {}, None, None, None)
        assert ours == theirs
        return ours, theirs

    assert both("http://lab.example/a")[0]["proxies"] == {}
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    assert both("http://lab.example/a")[0]["proxies"] == {"http": "http://proxy.example:3128"}
    monkeypatch.setenv("http_proxy", "http://other.example:3128")
    assert both("http://lab.example/b")[0]["proxies"] == {"http": "http://other.example:3128"}
    monkeypatch.setenv("no_proxy", "lab.example")
    assert both("http://lab.example/b")[0]["proxies"] == {}
    assert both("http://elsewhere.example/")[0]["proxies"]["http"] == "http://other.example:3128"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/lab.pem")
    assert both("https://lab.example/")[0]["verify"] == "/etc/ssl/lab.pem"
    session.proxies = {"https": "http://session.example:1"}
    plain.proxies = {"https": "http://session.example:1"}
    assert both("https://lab.example/")[0]["proxies"] == {"https": "http://session.example:1"}
    found = session.merge_environment_settings("https://lab.example/", {}, None, None, None)
    found["proxies"]["https"] = "changed by the caller"
    assert session.merge_environment_settings("https://lab.example/", {}, None, None, None)["proxies"]["https"] == "http://session.example:1"


# ----------------------------------------------------------------------------------------------
# Against a real socket


@contextmanager
def local_server(statuses: list[int], delay: float = 0.0) -> Iterator[tuple[str, list[str]]]:
    """Serve ``statuses`` in turn (the last one repeats) on 127.0.0.1; yields (url, methods seen)."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _reply(self):
            seen.append(self.command)
            time.sleep(delay)
            status = statuses[min(len(seen), len(statuses)) - 1]
            body = b'{"message": "busy"}' if status >= 500 else b'"ok"'
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the client gave up (timeout test)
                pass

        do_GET = do_POST = do_PUT = do_DELETE = _reply

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/x", seen
    finally:
        server.shutdown()
        server.server_close()


def test_get_and_post_are_retried_on_gateway_errors():
    set_session_defaults(backoff_factor=0)
    for method in ("GET", "POST"):
        with local_server([503, 502, 200]) as (url, seen):
            response = build_session().request(method, url)
            assert handle_response(response) == "ok"
            assert seen == [method] * 3


def test_put_and_delete_are_not_retried_on_status():
    set_session_defaults(backoff_factor=0)
    for method in ("PUT", "DELETE"):
        with local_server([503, 200]) as (url, seen):
            response = build_session().request(method, url)
            assert response.status_code == 503
            assert seen == [method]


def test_exhausted_retries_return_the_last_answer_as_http_error():
    set_session_defaults(backoff_factor=0, max_retries=2)
    with local_server([503]) as (url, seen):
        response = build_session().get(url)
        with pytest.raises(requests.HTTPError) as info:
            handle_response(response)
    assert len(seen) == 3
    assert str(info.value) == f'503 Server Error: busy for url: {url} content:b\'{{"message": "busy"}}\''


def test_read_timeout_is_enforced():
    with local_server([200], delay=1.0) as (url, _):
        session = build_session(max_retries=0, timeout=(5, 0.2))
        started = time.monotonic()
        with pytest.raises(requests.RequestException):
            session.get(url)
        assert time.monotonic() - started < 0.9
