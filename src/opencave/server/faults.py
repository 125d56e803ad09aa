"""The outermost safety net: unexpected errors become JSON answers on a connection that stays usable.

Starlette's own last-resort handler re-raises after answering, so uvicorn closes the keep-alive
connection and the client's next request on it fails too. This middleware answers instead and
does not re-raise. A full or read-only data directory is the operator's to fix: it answers 507
with a message saying so, never a 500.
"""

from __future__ import annotations

import json
import logging

from opencave.storage.faults import FAULT_ANSWERS, storage_fault
from opencave.wire.errors import error_body

log = logging.getLogger("opencave.server")

def fault_answer(error: BaseException) -> tuple[int, dict]:
    """The status and JSON body for an error no handler knew."""
    fault = storage_fault(error)
    if fault is not None:
        status, code, message = FAULT_ANSWERS[fault]
        return status, error_body(status, code, message)
    return 500, error_body(500, "internal_error", f"Internal server error ({type(error).__name__}); the server log has details.")


class FaultMiddleware:
    """Pure ASGI: answers an escaped exception with JSON when no answer has started yet."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as error:
            status, payload = fault_answer(error)
            if status == 500:
                log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            else:
                log.error("storage fault on %s %s: %s", scope.get("method"), scope.get("path"), error)
            if started:  # half an answer was sent: only closing the connection can say it failed
                raise
            body = json.dumps(payload).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
