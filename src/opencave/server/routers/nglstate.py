"""JSON state service (``/nglstate/api/v1`` and the legacy ``/nglstate``): Neuroglancer states and
segment-property documents, stored and served as posted.

Every route needs a valid token, and any user may read or write any document, as in CAVE.
Routes with an id placeholder come after the fixed paths they would otherwise swallow
(``/version``, ``/table_info``, ``/post``).
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from opencave.errors import BadRequest
from opencave.server.security import current_identity, require_superadmin, runtime_of
from opencave.services.auth import Identity
from opencave.services.state import DocumentKind
from opencave.wire.endpoints import NGLSTATE, route_path

router = APIRouter(tags=["nglstate"])
V0 = NGLSTATE.for_version(0)
V1 = NGLSTATE.for_version(1)

# The state server version reported to clients; caveclient needs >= 0.4.0 for properties.
SERVICE_VERSION = "0.7.2"
# Request bodies under /nglstate may be this large (CAVE's proxy allows 100 MB): a state of up to
# MAX_COMPRESSED_BYTES after compression is usually far larger as text.
BODY_LIMIT_PREFIX = "/nglstate"
MAX_BODY_BYTES = 100 * 1024 * 1024

_POST_METHODS = ["POST", "GET"]  # CAVE's server accepts GET with a body as well
_DIGITS = re.compile(r"[0-9]+")


def _parse_id(value: str, kind: DocumentKind) -> int:
    if not _DIGITS.fullmatch(value):
        raise BadRequest(
            f"{value!r} is not a {kind.label} id; ids are positive integers (the number at the end of "
            "the URL the upload answered).",
            code="invalid_id",
        )
    return int(value)


def _parse_timestamp(request: Request) -> datetime | None:
    raw = request.query_params.get("timestamp")
    if raw is None:
        return None
    try:
        seconds = float(raw)
        if not math.isfinite(seconds):
            raise ValueError
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (ValueError, OverflowError, OSError):
        raise BadRequest(
            f"timestamp={raw!r} is not a time; give seconds since 1970-01-01 UTC (e.g. 1700000000.5).",
            code="invalid_timestamp",
        ) from None


def _document_url(request: Request, kind: DocumentKind, doc_id: int) -> str:
    base = f"{runtime_of(request).settings.server_url}/nglstate/api/v1"
    return f"{base}/{doc_id}" if kind is DocumentKind.STATE else f"{base}/property/{doc_id}"


def accepts_deflate(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header lists ``deflate`` with a non-zero quality."""
    for item in (accept_encoding or "").split(","):
        name, *params = item.split(";")
        if name.strip().lower() != "deflate":
            continue
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


async def _add(request: Request, identity: Identity, kind: DocumentKind, doc_id: int | None = None) -> JSONResponse:
    created = None
    if doc_id is not None:
        require_superadmin(identity)
        created = _parse_timestamp(request)
    body = await request.body()
    store = runtime_of(request).ngl_documents
    new_id = await run_in_threadpool(store.add, kind, body, str(identity.id), doc_id, created)
    return JSONResponse(_document_url(request, kind, new_id))


async def _document(request: Request, kind: DocumentKind, raw_id: str, raw: bool) -> Response:
    doc_id = _parse_id(raw_id, kind)
    document = await run_in_threadpool(runtime_of(request).ngl_documents.get, kind, doc_id)
    if raw:
        return Response(document.payload, media_type="application/octet-stream")
    headers = {"Vary": "Accept-Encoding"}
    if accepts_deflate(request.headers.get("accept-encoding")):
        headers["Content-Encoding"] = "deflate"
        return Response(document.payload, media_type="application/json", headers=headers)
    text = await run_in_threadpool(document.text)
    return Response(text, media_type="application/json", headers=headers)


# --- fixed paths first --------------------------------------------------------------------------


@router.get(route_path(V1["get_version"]))
def version(identity: Identity = Depends(current_identity)) -> str:
    return SERVICE_VERSION


@router.get(route_path(V1["table_info"]))
def table_info(request: Request, identity: Identity = Depends(current_identity)) -> Response:
    dialect = runtime_of(request).engine.dialect.name
    return Response(f"User: {identity.id} - project opencave ({dialect}) - table ngl_documents", media_type="text/plain")


@router.api_route(route_path(V1["upload_state"]), methods=_POST_METHODS)
@router.api_route(route_path(V0["upload_state"]), methods=_POST_METHODS)
async def upload_state(request: Request, identity: Identity = Depends(current_identity)) -> JSONResponse:
    return await _add(request, identity, DocumentKind.STATE)


@router.api_route(route_path(V1["upload_state_w_id"]), methods=_POST_METHODS)
async def upload_state_with_id(
    state_id: str, request: Request, identity: Identity = Depends(current_identity)
) -> JSONResponse:
    return await _add(request, identity, DocumentKind.STATE, _parse_id(state_id, DocumentKind.STATE))


@router.get(route_path(V1["get_state_raw"]))
@router.get(route_path(V0["get_state_raw"]))
async def state_raw(state_id: str, request: Request, identity: Identity = Depends(current_identity)) -> Response:
    return await _document(request, DocumentKind.STATE, state_id, raw=True)


@router.api_route(route_path(V1["upload_properties"]), methods=_POST_METHODS)
async def upload_properties(request: Request, identity: Identity = Depends(current_identity)) -> JSONResponse:
    return await _add(request, identity, DocumentKind.PROPERTY)


@router.api_route(route_path(V1["upload_properties_w_id"]), methods=_POST_METHODS)
async def upload_properties_with_id(
    state_id: str, request: Request, identity: Identity = Depends(current_identity)
) -> JSONResponse:
    return await _add(request, identity, DocumentKind.PROPERTY, _parse_id(state_id, DocumentKind.PROPERTY))


@router.get(route_path(V1["get_properties"]))
async def properties(state_id: str, request: Request, identity: Identity = Depends(current_identity)) -> Response:
    return await _document(request, DocumentKind.PROPERTY, state_id, raw=False)


@router.get(route_path(V1["get_properties_raw"]))
async def properties_raw(state_id: str, request: Request, identity: Identity = Depends(current_identity)) -> Response:
    return await _document(request, DocumentKind.PROPERTY, state_id, raw=True)


# --- then the catch-all state paths ---------------------------------------------------------------


@router.get(route_path(V1["get_state"]))
@router.get(route_path(V0["get_state"]))
async def state(state_id: str, request: Request, identity: Identity = Depends(current_identity)) -> Response:
    return await _document(request, DocumentKind.STATE, state_id, raw=False)
