"""The HTTP/1.1 protocol the server runs: uvicorn's, with its own refusals answered as JSON.

uvicorn answers a request it cannot parse — most often a URL longer than its parser takes —
with a plain-text 400 before the application sees it. Clients of this server read every error
as JSON (``code``, ``message``), so those answers are JSON too, and an overlong URL is a 414
that says where long lists go instead.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from opencave.wire.errors import error_body

LONG_URL_BYTES = 8 * 1024  # a URL this long when parsing failed is why it failed


def refusal(url_length: int) -> tuple[int, dict]:
    """The status and JSON body for a request the HTTP parser refused."""
    if url_length >= LONG_URL_BYTES:
        return 414, error_body(
            414,
            "uri_too_long",
            "The URL is too long for this server; send long id lists in the request body "
            "(the POST form of the endpoint, see the service guides in docs/).",
        )
    return 400, error_body(400, "bad_http_request", "The request is not valid HTTP/1.1; check the request line and headers.")


class JsonErrorHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose parse-error answers are JSON (and 414 for long URLs)."""

    def send_400_response(self, msg: str) -> None:
        status, payload = refusal(len(getattr(self, "url", b"") or b""))
        body = json.dumps(payload).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(head))
        self.transport.close()
