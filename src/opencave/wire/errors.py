"""The JSON error body every opencave service answers with.

``{"code": <HTTP status>, "error": <machine code>, "message": <what to fix>, "data": {...}}``.
``error`` and ``data`` follow middle_auth, so caveclient's terms-of-service handling (403 with
``error == "missing_tos"`` and ``data.tos_form_url``) works; ``code``/``message`` follow the other
CAVE services, whose messages clients show to users.
"""

from __future__ import annotations

from typing import Any


def error_body(status: int, error: str, message: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": status, "error": error, "message": message}
    if data is not None:
        body["data"] = data
    return body
