"""The server's transport sends a response's head and body in one write: writes made in one turn
of the event loop are joined, a large one is never held back, and closing sends what is held."""

from __future__ import annotations

import asyncio

import pytest
import requests

from opencave.server.protocol import WRITE_NOW_BYTES, CoalescingTransport
from tests.support.app_server import served_app


class Recording:
    """A transport that records each call that would reach the socket."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[bytes]]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", [bytes(data)]))

    def writelines(self, chunks) -> None:
        self.calls.append(("writelines", [bytes(c) for c in chunks]))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True
        self.calls.append(("close", []))

    def abort(self) -> None:
        self.closing = True
        self.calls.append(("abort", []))

    def get_extra_info(self, name: str, default=None):
        return ("127.0.0.1", 1) if name == "peername" else default


def test_writes_of_one_turn_go_out_together():
    async def scenario() -> list:
        sent = Recording()
        transport = CoalescingTransport(sent, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(bytearray(b"body"))
        assert sent.calls == [], "held until the turn ends"
        await asyncio.sleep(0)
        transport.write(b"next")
        await asyncio.sleep(0)
        assert transport.get_extra_info("peername") == ("127.0.0.1", 1), "anything else is the transport's"
        return sent.calls

    calls = asyncio.run(scenario())
    assert calls == [("writelines", [b"HTTP/1.1 200 OK\r\n\r\n", b"body"]), ("writelines", [b"next"])]


def test_a_large_write_is_never_held_back():
    async def scenario() -> list:
        sent = Recording()
        transport = CoalescingTransport(sent, asyncio.get_running_loop())
        big = b"x" * WRITE_NOW_BYTES
        transport.write(big)  # alone: straight through
        transport.write(b"head")
        transport.write(big)  # with what is held: both at once
        calls = list(sent.calls)
        await asyncio.sleep(0)
        assert sent.calls == calls, "nothing left for the end of the turn"
        return calls

    calls = asyncio.run(scenario())
    assert [(kind, [len(c) for c in chunks]) for kind, chunks in calls] == [
        ("write", [WRITE_NOW_BYTES]),
        ("writelines", [4, WRITE_NOW_BYTES]),
    ]


def test_closing_sends_what_is_held_and_a_lost_connection_drops_it():
    async def scenario() -> tuple[list, list]:
        loop = asyncio.get_running_loop()
        closed, aborted = Recording(), Recording()
        first = CoalescingTransport(closed, loop)
        first.write(b"last words")
        first.close()
        second = CoalescingTransport(aborted, loop)
        second.write(b"never sent")
        second.abort()
        await asyncio.sleep(0)
        lost = Recording()
        third = CoalescingTransport(lost, loop)
        third.write(b"too late")
        lost.closing = True  # the peer went away before the turn ended
        await asyncio.sleep(0)
        return closed.calls + aborted.calls, lost.calls

    calls, lost = asyncio.run(scenario())
    assert calls == [("writelines", [b"last words"]), ("close", []), ("abort", [])]
    assert lost == []


@pytest.fixture
def plain_server():
    """uvicorn with the server's protocol, serving a small and a large answer, and a stream."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        size = {"/small": 10, "/large": 3 * WRITE_NOW_BYTES}.get(scope["path"])
        if size is None:  # a stream of pieces, each its own turn of the loop
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            for piece in range(50):
                await send({"type": "http.response.body", "body": b"%d," % piece, "more_body": True})
                await asyncio.sleep(0)
            await send({"type": "http.response.body", "body": b"end"})
            return
        body = (bytes(range(256)) * (size // 256 + 1))[:size]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    with served_app(app) as url:
        yield url


def test_answers_arrive_whole_over_keep_alive(plain_server):
    with requests.Session() as session:
        for _ in range(3):  # one connection, kept alive
            assert session.get(plain_server + "/small").content == bytes(range(10))
            large = session.get(plain_server + "/large").content
            assert len(large) == 3 * WRITE_NOW_BYTES and large[:256] == bytes(range(256))
            assert session.get(plain_server + "/stream").text == ",".join(map(str, range(50))) + ",end"
        bad = session.get(plain_server + "/" + "x" * 70_000)
        assert bad.status_code == 414 and bad.json()["error"] == "uri_too_long", "a refusal is still sent before closing"
