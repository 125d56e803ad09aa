"""Services this opencave version does not provide yet: every URL under them answers 501 JSON."""

from __future__ import annotations

from fastapi import APIRouter, Request

from opencave.errors import NotImplementedYet
from opencave.wire.endpoints import PENDING_SERVICE_PREFIXES

router = APIRouter(include_in_schema=False)

_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]


def _not_yet(service: str):
    def handler(request: Request, path: str = ""):
        raise NotImplementedYet(
            f"The {service} is not available on this opencave server yet ({request.method} {request.url.path}).",
            code="service_not_available",
        )

    return handler


for _prefix, _service in PENDING_SERVICE_PREFIXES.items():
    router.add_api_route(_prefix, _not_yet(_service), methods=_METHODS)
    router.add_api_route(_prefix + "/{path:path}", _not_yet(_service), methods=_METHODS)
