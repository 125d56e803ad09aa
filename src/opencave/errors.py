"""Domain errors raised by services and the storage layer.

Each error carries the HTTP-style status it maps to, a stable machine-readable ``code`` and a
message that tells the caller what to fix. Services raise them without knowing about HTTP; the
server turns them into JSON error bodies (``opencave.wire.errors``).
"""

from __future__ import annotations

from typing import Any


class OpencaveError(Exception):
    status: int = 400
    default_code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, data: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.data = data


class BadRequest(OpencaveError):
    status, default_code = 400, "bad_request"


class Unauthorized(OpencaveError):
    status, default_code = 401, "invalid_token"


class Forbidden(OpencaveError):
    status, default_code = 403, "missing_permission"


class NotFound(OpencaveError):
    status, default_code = 404, "not_found"


class Conflict(OpencaveError):
    status, default_code = 409, "conflict"


class PayloadTooLarge(OpencaveError):
    status, default_code = 413, "payload_too_large"


class NotImplementedYet(OpencaveError):
    status, default_code = 501, "not_implemented"
