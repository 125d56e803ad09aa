"""The HTTP/1.1 protocol the server runs: uvicorn's, with its own refusals answered as JSON,
and a response's head and body sent in one write.

uvicorn answers a request it cannot parse — most often a URL longer than its parser takes —
with a plain-text 400 before the application sees it. Clients of this server read every error
as JSON (``code``, ``message``), so those answers are JSON too, and an overlong URL is a 414
that says where long lists go instead.

uvicorn writes a response's head as soon as the application starts the response, and its body
in a second write. On loopback each write wakes the client, which reads the head and then waits
again for the body: for a small answer that second wake-up costs more than making it (~0.15 ms
of a 3 ms query). ``CoalescingTransport`` joins the writes made in one turn of the event loop.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from opencave.wire.errors import error_body

LONG_URL_BYTES = 8 * 1024  # a URL this long when parsing failed is why it failed
WRITE_NOW_BYTES = 64 * 1024  # writes held back reaching this size go out at once


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


class CoalescingTransport:
    """A transport whose writes made in one turn of the event loop go out together, in one
    ``writelines`` at the end of the turn — at once when they reach ``WRITE_NOW_BYTES``, so a
    large body is never held back and flow control sees it. Closing sends what is held first;
    anything else is the wrapped transport's."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._held_bytes = 0

    def write(self, data: Any) -> None:
        if not self._held:
            if len(data) >= WRITE_NOW_BYTES:
                self._transport.write(data)
                return
            self._loop.call_soon(self.flush)
        self._held.append(bytes(data))
        self._held_bytes += len(data)
        if self._held_bytes >= WRITE_NOW_BYTES:
            self.flush()

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Send what is held (nothing once the connection is closing: it cannot be sent)."""
        held, self._held, self._held_bytes = self._held, [], 0
        if held and not self._transport.is_closing():
            self._transport.writelines(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held, self._held_bytes = [], 0
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class JsonErrorHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose parse-error answers are JSON (and 414 for long URLs),
    over a ``CoalescingTransport``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

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
