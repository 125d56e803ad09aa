"""HTTP helpers shared by the bad-input tests: a JSON caller, the error-answer check, and a guard
that no request of a module hit an unhandled error in the server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import requests

from tests.support.server import ServerProcess


@contextmanager
def no_unhandled_errors(server: ServerProcess) -> Iterator[None]:
    """Fails if the server logged a traceback (a 500 or a cut stream) while the block ran."""
    start = server.log_path.stat().st_size
    yield
    with open(server.log_path, errors="replace") as log:
        log.seek(start)
        text = log.read()
    assert "Traceback" not in text and "Exception in ASGI" not in text, text[-5000:]


def json_caller(server: ServerProcess, token: str) -> Callable[..., requests.Response]:
    """``call(method, path, body=None, **kwargs)``: a JSON request with the token."""

    def send(method: str, path: str, body=None, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        data = None if body is None else json.dumps(body)  # ensure_ascii: lone surrogates travel as \ud800
        return requests.request(method, server.url + path, data=data, headers=headers, timeout=60, **kwargs)

    return send


def error(response: requests.Response, status: int, *words: str, code: str | None = None) -> dict:
    """The JSON error body, after checking its status, code and that the message names ``words``."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    body = response.json()
    assert body["code"] == status and body["message"], body
    for word in words:
        assert word.lower() in body["message"].lower(), (word, body["message"])
    if code is not None:
        assert body["error"] == code, body
    return body
