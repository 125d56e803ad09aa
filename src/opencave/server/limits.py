"""Rejects oversized request bodies before they are read into memory (HTTP 413, JSON body)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from starlette.exceptions import HTTPException

from opencave.wire.errors import error_body


def _too_large_message(limit: int) -> str:
    return f"Request body exceeds this endpoint's limit of {limit} bytes; send less data per request."


class BodyTooLarge(HTTPException):
    """An HTTPException so frameworks that wrap body-read errors pass it through unchanged."""

    def __init__(self, limit: int):
        super().__init__(413, _too_large_message(limit))


class BodyLimitMiddleware:
    """Pure ASGI middleware: a limit per URL prefix, checked on Content-Length and while streaming."""

    def __init__(self, app, default_limit: int, prefix_limits: dict[str, int], path_limits: Sequence[tuple[re.Pattern, int]] = ()):
        self.app = app
        self.default_limit = default_limit
        self.prefix_limits = sorted(prefix_limits.items(), key=lambda kv: -len(kv[0]))
        self.path_limits = list(path_limits)  # single routes (e.g. file uploads), before prefixes

    def limit_for(self, path: str) -> int:
        for pattern, limit in self.path_limits:
            if pattern.fullmatch(path):
                return limit
        for prefix, limit in self.prefix_limits:
            if path.startswith(prefix):
                return limit
        return self.default_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    return await _reject(send, limit)
        received = 0
        response_started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message):
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not response_started:
                await _reject(send, limit)


async def _reject(send, limit: int) -> None:
    body = json.dumps(
        error_body(413, "payload_too_large", _too_large_message(limit))
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
