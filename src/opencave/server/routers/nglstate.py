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
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BeforeValidator, WithJsonSchema
from starlette.concurrency import run_in_threadpool

from opencave.server.params import LATEST_UNIX_TIME, binary_body, invalid, media_answers
from opencave.server.security import current_identity, require_superadmin, runtime_of
from opencave.services.auth import Identity
from opencave.services.state import MAX_DOCUMENT_ID, DocumentKind
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

_DIGITS = re.compile(r"[0-9]{1,40}")
STATE_BODY = binary_body("The Neuroglancer state as JSON text; stored and served byte for byte", "application/json")
PROPERTY_BODY = binary_body("The segment-properties document as JSON text; stored and served byte for byte", "application/json")
JSON_DOCUMENT = media_answers("application/json", description="The document as posted (deflate-encoded when Accept-Encoding allows)")
RAW_DOCUMENT = media_answers("application/octet-stream", description="The zlib stream of the document as posted")


# -- declared inputs -------------------------------------------------------------------------------
def _document_id(kind: DocumentKind):
    """The id of a stored document: a positive integer; new ids are below 2**53, explicit ones
    (migrated from another server) below 2**63."""

    def parse(value: Any) -> int:
        text = str(value)
        if isinstance(value, bool) or not _DIGITS.fullmatch(text):
            raise invalid(
                "invalid_id",
                f"{text[:80]!r} is not a {kind.label} id; ids are positive integers (the number at the end of "
                "the URL the upload answered).",
            )
        number = int(text)
        if not 0 < number <= MAX_DOCUMENT_ID:
            raise invalid("invalid_id", f"{number} cannot be a {kind.label} id: ids are positive integers below 2**63.")
        return number

    schema = {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_DOCUMENT_ID}
    return Annotated[int, BeforeValidator(parse), WithJsonSchema(schema), Path(description=f"The {kind.label} id")]


def _created(value: Any) -> datetime | None:
    """``?timestamp=`` of a post with an explicit id: the moment the migrated document was made."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 <= seconds <= LATEST_UNIX_TIME):
        raise invalid(
            "invalid_timestamp",
            f"timestamp={str(value)[:80]!r} is not a time; give seconds since 1970-01-01 UTC (e.g. 1700000000.5).",
        )
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


StateId = _document_id(DocumentKind.STATE)
PropertyId = _document_id(DocumentKind.PROPERTY)
Created = Annotated[
    datetime | None,
    BeforeValidator(_created),
    WithJsonSchema({"type": "number", "minimum": 0, "maximum": LATEST_UNIX_TIME, "description": "seconds since 1970-01-01 UTC"}),
    Query(description="When the document was made (default: now); for documents moved from another server"),
]
AcceptEncoding = Annotated[str | None, Header(description="deflate: the stored zlib stream is sent as is")]


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


async def _add(
    request: Request, identity: Identity, kind: DocumentKind, doc_id: int | None = None, created: datetime | None = None
) -> JSONResponse:
    if doc_id is not None:
        require_superadmin(identity)
    body = await request.body()
    store = runtime_of(request).ngl_documents
    new_id = await run_in_threadpool(store.add, kind, body, str(identity.id), doc_id, created)
    return JSONResponse(_document_url(request, kind, new_id))


async def _document(request: Request, kind: DocumentKind, doc_id: int, raw: bool, accept_encoding: str | None = None) -> Response:
    document = await run_in_threadpool(runtime_of(request).ngl_documents.get, kind, doc_id)
    if raw:
        return Response(document.payload, media_type="application/octet-stream")
    headers = {"Vary": "Accept-Encoding"}
    if accepts_deflate(accept_encoding):
        headers["Content-Encoding"] = "deflate"
        return Response(document.payload, media_type="application/json", headers=headers)
    text = await run_in_threadpool(document.text)
    return Response(text, media_type="application/json", headers=headers)


def _posts(*paths: str, body: dict[str, Any]):
    """POST routes with a raw JSON body; CAVE's server takes GET with a body as well (left out of
    the OpenAPI document, which has no GET bodies)."""

    def register(handler):
        for path in paths:
            router.get(path, include_in_schema=False)(handler)
            router.post(path, openapi_extra=body)(handler)
        return handler

    return register


# --- fixed paths first --------------------------------------------------------------------------


@router.get(route_path(V1["get_version"]))
def version(identity: Identity = Depends(current_identity)) -> str:
    return SERVICE_VERSION


@router.get(route_path(V1["table_info"]), response_class=Response, responses=media_answers("text/plain", description="Who asks, and where documents are kept"))
def table_info(request: Request, identity: Identity = Depends(current_identity)) -> Response:
    dialect = runtime_of(request).engine.dialect.name
    return Response(f"User: {identity.id} - project opencave ({dialect}) - table ngl_documents", media_type="text/plain")


@_posts(route_path(V1["upload_state"]), route_path(V0["upload_state"]), body=STATE_BODY)
async def upload_state(request: Request, identity: Identity = Depends(current_identity)) -> JSONResponse:
    return await _add(request, identity, DocumentKind.STATE)


@_posts(route_path(V1["upload_state_w_id"]), body=STATE_BODY)
async def upload_state_with_id(
    state_id: StateId, request: Request, timestamp: Created = None, identity: Identity = Depends(current_identity)
) -> JSONResponse:
    return await _add(request, identity, DocumentKind.STATE, state_id, timestamp)


@router.get(route_path(V1["get_state_raw"]), response_class=Response, responses=RAW_DOCUMENT)
@router.get(route_path(V0["get_state_raw"]), response_class=Response, responses=RAW_DOCUMENT)
async def state_raw(state_id: StateId, request: Request, identity: Identity = Depends(current_identity)) -> Response:
    return await _document(request, DocumentKind.STATE, state_id, raw=True)


@_posts(route_path(V1["upload_properties"]), body=PROPERTY_BODY)
async def upload_properties(request: Request, identity: Identity = Depends(current_identity)) -> JSONResponse:
    return await _add(request, identity, DocumentKind.PROPERTY)


@_posts(route_path(V1["upload_properties_w_id"]), body=PROPERTY_BODY)
async def upload_properties_with_id(
    state_id: PropertyId, request: Request, timestamp: Created = None, identity: Identity = Depends(current_identity)
) -> JSONResponse:
    return await _add(request, identity, DocumentKind.PROPERTY, state_id, timestamp)


@router.get(route_path(V1["get_properties"]), responses=JSON_DOCUMENT)
async def properties(
    state_id: PropertyId, request: Request, accept_encoding: AcceptEncoding = None, identity: Identity = Depends(current_identity)
) -> Response:
    return await _document(request, DocumentKind.PROPERTY, state_id, raw=False, accept_encoding=accept_encoding)


@router.get(route_path(V1["get_properties_raw"]), response_class=Response, responses=RAW_DOCUMENT)
async def properties_raw(state_id: PropertyId, request: Request, identity: Identity = Depends(current_identity)) -> Response:
    return await _document(request, DocumentKind.PROPERTY, state_id, raw=True)


# --- then the catch-all state paths ---------------------------------------------------------------


@router.get(route_path(V1["get_state"]), responses=JSON_DOCUMENT)
@router.get(route_path(V0["get_state"]), responses=JSON_DOCUMENT)
async def state(
    state_id: StateId, request: Request, accept_encoding: AcceptEncoding = None, identity: Identity = Depends(current_identity)
) -> Response:
    return await _document(request, DocumentKind.STATE, state_id, raw=False, accept_encoding=accept_encoding)
