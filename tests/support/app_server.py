"""A small ASGI app served in a thread by uvicorn with the server's own HTTP protocol."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from opencave.server.protocol import JsonErrorHttpToolsProtocol
from tests.support.postgres import free_port


@contextmanager
def served_app(app: Any, start_s: float = 10) -> Iterator[str]:
    """``app`` on a free loopback port for the duration; yields its URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", http=JsonErrorHttpToolsProtocol))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + start_s
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)
