"""Materialization engine (``/materialize/api/v2`` and ``/v3``): versions, metadata, queries.

Thin: parse, authenticate, check permissions, call the service, encode the answer. Query answers
stream as Arrow IPC (``Content-Type: data.arrow``, buffers compressed per ``Accept-Encoding``)
with the ``dataframe_resolution``, ``column_names`` and ``Warning`` headers caveclient reads.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from opencave.errors import BadRequest, Forbidden, NotFound, NotImplementedYet
from opencave.server.security import current_context, runtime_of
from opencave.services.auth import AuthContext
from opencave.services.materialize.answers import Answer
from opencave.services.materialize.requests import (
    parse_join_query,
    parse_live_query,
    parse_options,
    parse_table_query,
    parse_timestamp,
)
from opencave.wire import arrow_ipc
from opencave.wire.endpoints import MATERIALIZE, route_path
from opencave.wire.versions import MATERIALIZE_API_VERSIONS, MATERIALIZE_SERVER_VERSION

router = APIRouter(tags=["materialize"])
V2 = MATERIALIZE.for_version(2)
V3 = MATERIALIZE.for_version(3)
NAMESPACE = "datastack"


def _paths(key: str, versions: tuple[dict[str, str], ...] = (V2, V3)) -> list[str]:
    """The key's paths; the v3 API also answers under v3 the paths clients still address as v2
    (``/tables``, ``/count``)."""
    paths = {route_path(v[key]) for v in versions if key in v}
    if any(v is V3 for v in versions):
        paths |= {path.replace("/api/v2/", "/api/v3/") for path in paths}
    return sorted(paths)


def _route(method: str, key: str, versions: tuple[dict[str, str], ...] = (V2, V3)):
    """Register one handler under the key's v2 and v3 paths."""

    def register(handler):
        for path in _paths(key, versions):
            router.add_api_route(path, handler, methods=[method])
        return handler

    return register


def _allow(request: Request, context: AuthContext, datastack: str, permission: str = "view") -> None:
    runtime_of(request).identities.require(context, permission, NAMESPACE, datastack)


def _is_v3(request: Request) -> bool:
    return "/api/v3/" in request.url.path


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply to parse
        raise BadRequest("The request body is not valid JSON.", code="bad_json") from None


def _version_number(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"version {value!r} must be an integer.", code="bad_version") from None
    if not -(2**31) <= number < 2**31:  # versions are 32-bit integers in the registry
        raise NotFound(f"Version {number} does not exist; list the versions with client.materialize.get_versions().", code="unknown_version")
    return number


def _expired(request: Request) -> bool:
    return request.query_params.get("expired", "false").lower() in ("true", "1")


@router.get(route_path(MATERIALIZE.common["get_version"]))
def server_version() -> str:
    return MATERIALIZE_SERVER_VERSION


@router.get(route_path(MATERIALIZE.common["get_api_versions"]))
def api_versions() -> list[int]:
    return MATERIALIZE_API_VERSIONS


# -- versions ------------------------------------------------------------------------------------
@_route("GET", "versions")
def versions(datastack_name: str, request: Request, context: AuthContext = Depends(current_context)) -> list[int]:
    _allow(request, context, datastack_name)
    return runtime_of(request).materialize.versions(datastack_name, _expired(request))


@_route("GET", "version_metadata")
def version_metadata(datastack_name: str, version: str, request: Request, context: AuthContext = Depends(current_context)) -> dict:
    _allow(request, context, datastack_name)
    return runtime_of(request).materialize.version(datastack_name, _version_number(version)).to_json()


@_route("GET", "versions_metadata")
def versions_metadata(datastack_name: str, request: Request, context: AuthContext = Depends(current_context)) -> list[dict]:
    _allow(request, context, datastack_name)
    return runtime_of(request).materialize.versions_metadata(datastack_name, _expired(request))


# -- tables --------------------------------------------------------------------------------------
@_route("GET", "tables")
def tables(datastack_name: str, version: str, request: Request, context: AuthContext = Depends(current_context)) -> list[str]:
    _allow(request, context, datastack_name)
    return runtime_of(request).materialize.table_names(datastack_name, _version_number(version))


def _readable(request: Request, context: AuthContext, datastack: str, table: str, frozen: dict | None = None) -> None:
    """Read permission as the table's owner has it set now (upstream checks the live table too):
    a version's frozen metadata keeps the permissions of the day it was made."""
    runtime = runtime_of(request)
    try:
        current = runtime.annotations.table_metadata(runtime.info.aligned_volume_of(datastack), table, include_deleted=True)
    except NotFound:
        if frozen is None:
            raise
        current = frozen
    runtime.annotations.access.require(context.identity, current, "read")


@_route("GET", "table_count")
def table_count(datastack_name: str, version: str, table_name: str, request: Request, context: AuthContext = Depends(current_context)) -> int:
    _allow(request, context, datastack_name)
    found = runtime_of(request).materialize.frozen_table(datastack_name, _version_number(version), table_name)
    _readable(request, context, datastack_name, table_name, found.frozen.metadata)
    return found.frozen.row_count


@_route("GET", "metadata")
def table_metadata(datastack_name: str, version: str, table_name: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    _allow(request, context, datastack_name)
    metadata = runtime_of(request).materialize.frozen_table(datastack_name, _version_number(version), table_name).frozen.metadata
    _readable(request, context, datastack_name, table_name, metadata)
    headers = {}
    if metadata.get("notice_text"):
        headers["Warning"] = _header_text(f"Table Owner Notice on {table_name}: {metadata['notice_text']}")
    return JSONResponse(metadata, headers=headers)


@_route("GET", "all_tables_metadata")
def tables_metadata(datastack_name: str, version: str, request: Request, context: AuthContext = Depends(current_context)) -> list[dict]:
    _allow(request, context, datastack_name)
    return runtime_of(request).materialize.tables_metadata(datastack_name, _version_number(version))


@_route("GET", "segmentation_metadata")
def segmentation_metadata(datastack_name: str, table_name: str, request: Request, context: AuthContext = Depends(current_context)) -> dict:
    _allow(request, context, datastack_name)
    runtime = runtime_of(request)
    aligned_volume = runtime.info.aligned_volume_of(datastack_name)
    meta = runtime.annotations.table_metadata(aligned_volume, table_name)
    graph = runtime.annotations.segmentation_of(aligned_volume)
    return {
        "annotation_table": table_name,
        "pcg_table_name": graph,
        "segmentation_source": f"graphene://{runtime.settings.server_url}/segmentation/table/{graph}" if graph else None,
        "last_updated": meta.get("last_modified"),
        "valid": not meta.get("deleted"),
    }


@_route("GET", "unique_string_values", (V3,))
def unique_string_values(datastack_name: str, table_name: str, request: Request, context: AuthContext = Depends(current_context)) -> dict:
    _allow(request, context, datastack_name)
    runtime = runtime_of(request)
    _readable(request, context, datastack_name, table_name)
    return runtime.materialize.unique_string_values(datastack_name, table_name)


# -- queries -------------------------------------------------------------------------------------
def _header_text(text: str) -> str:
    return " ".join(text.split()).encode("latin-1", "replace").decode("latin-1")


def _respond(request: Request, answer: Answer, return_pyarrow: bool, compress: bool, v3: bool) -> Response:
    headers: list[tuple[str, str]] = []
    if v3 and answer.resolution is not None:
        headers += [("dataframe_resolution", repr(float(r))) for r in answer.resolution]
    headers.append(("column_names", _header_text(repr(answer.column_names))))
    headers += [("Warning", _header_text(w)) for w in answer.warnings]
    if not return_pyarrow:
        frame = answer.table().to_pandas()
        response = Response(frame.to_json(orient="records"), media_type="application/json")
    else:
        codec = arrow_ipc.compression_for(request.headers.get("accept-encoding"), compress)
        response = StreamingResponse(
            arrow_ipc.stream_batches(answer.schema, answer.batches, codec), media_type=arrow_ipc.CONTENT_TYPE
        )
        response.headers["Cache-Control"] = "no-cache"
    for name, value in headers:
        response.headers.append(name, value)
    return response


@_route("POST", "simple_query")
async def query_table(datastack_name: str, version: str, table_name: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    _allow(request, context, datastack_name)
    options = parse_options(dict(request.query_params))
    query = parse_table_query(await _json_body(request))
    service = runtime_of(request).materialize
    number = _version_number(version)

    def work() -> Answer:
        found = service.frozen_table(datastack_name, number, table_name)
        _readable(request, context, datastack_name, table_name, found.frozen.metadata)
        return service.query_table(found, query, options, rescale=_is_v3(request))

    answer = await run_in_threadpool(work)
    return _respond(request, answer, options.return_pyarrow, options.ipc_compress, _is_v3(request))


@_route("POST", "join_query")
async def join_query(datastack_name: str, version: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    _allow(request, context, datastack_name)
    options = parse_options(dict(request.query_params))
    query = parse_join_query(await _json_body(request))
    service = runtime_of(request).materialize
    number = _version_number(version)

    def work() -> Answer:
        left, right = (service.frozen_table(datastack_name, number, table) for table, _ in query.tables)
        for found in (left, right):
            _readable(request, context, datastack_name, found.frozen.table_name, found.frozen.metadata)
        return service.query_join(left, right, query, options, rescale=_is_v3(request))

    answer = await run_in_threadpool(work)
    return _respond(request, answer, options.return_pyarrow, options.ipc_compress, _is_v3(request))


@router.post(route_path(V3["live_live_query"]))
async def live_query(datastack_name: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    _allow(request, context, datastack_name)
    options = parse_options(dict(request.query_params))
    query = parse_live_query(await _json_body(request))
    runtime = runtime_of(request)

    def work() -> Answer:
        for table in {query.table, *(j[0] for j in query.joins), *(j[2] for j in query.joins)}:
            _readable(request, context, datastack_name, table)
        return runtime.live.query(datastack_name, query, options)

    answer = await run_in_threadpool(work)
    return _respond(request, answer, options.return_pyarrow, options.ipc_compress, v3=True)


# -- views ---------------------------------------------------------------------------------------
@_route("GET", "get_views", (V3,))
def views(datastack_name: str, version: str, request: Request, context: AuthContext = Depends(current_context)) -> dict:
    _allow(request, context, datastack_name)
    return runtime_of(request).materialize.views_of(datastack_name, _version_number(version))


@_route("GET", "get_view_metadata", (V3,))
def view_metadata(datastack_name: str, version: str, view_name: str, request: Request, context: AuthContext = Depends(current_context)) -> dict:
    _allow(request, context, datastack_name)
    return runtime_of(request).materialize.frozen_table(datastack_name, _version_number(version), view_name, kind="view").frozen.metadata


@_route("GET", "view_schemas", (V3,))
def view_schemas(datastack_name: str, version: str, request: Request, context: AuthContext = Depends(current_context)) -> dict:
    _allow(request, context, datastack_name)
    return runtime_of(request).materialize.view_schemas(datastack_name, _version_number(version))


@_route("GET", "view_schema", (V3,))
def view_schema(datastack_name: str, version: str, view_name: str, request: Request, context: AuthContext = Depends(current_context)) -> dict:
    _allow(request, context, datastack_name)
    return runtime_of(request).materialize.view_schema(datastack_name, _version_number(version), view_name)


@_route("POST", "view_query", (V3,))
async def query_view(datastack_name: str, version: str, view_name: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    _allow(request, context, datastack_name)
    options = parse_options(dict(request.query_params))
    query = parse_table_query(await _json_body(request))
    service = runtime_of(request).materialize
    number = _version_number(version)

    def work() -> Answer:
        return service.query_table(service.frozen_table(datastack_name, number, view_name, kind="view"), query, options, rescale=True)

    answer = await run_in_threadpool(work)
    return _respond(request, answer, options.return_pyarrow, options.ipc_compress, v3=True)


# -- workflows -----------------------------------------------------------------------------------
@_route("POST", "lookup_supervoxel_ids")
@_route("POST", "ingest_annotation_table")
def lookup_supervoxels(datastack_name: str, table_name: str, request: Request, context: AuthContext = Depends(current_context)) -> dict:
    """Supervoxels are looked up when annotations are written, so there is never a backlog;
    the answer says so (and checks the table exists)."""
    _allow(request, context, datastack_name, "edit")
    runtime = runtime_of(request)
    runtime.annotations.table_metadata(runtime.info.aligned_volume_of(datastack_name), table_name)
    return {"status": "complete", "message": f"Every annotation of {table_name} has its supervoxel ids; they are looked up on insert."}


@router.post("/materialize/api/v2/materialize/run/create_frozen/datastack/{datastack_name}")
async def create_version(datastack_name: str, request: Request, context: AuthContext = Depends(current_context)) -> dict:
    """Create a version now (or at ``timestamp``); needs admin on the datastack's dataset."""
    runtime = runtime_of(request)
    dataset = runtime.identities.require(context, "view", NAMESPACE, datastack_name)
    identity = context.identity
    if not (identity.admin or dataset in identity.datasets_admin):
        raise Forbidden("Creating a version needs dataset admin rights on this datastack.", code="missing_role")
    body = await _json_body(request)
    if not isinstance(body, dict) or set(body) - {"timestamp", "days_to_expire"}:
        raise BadRequest('The body may hold {"timestamp": ISO time, "days_to_expire": days}.', code="bad_body")
    moment = parse_timestamp(body["timestamp"]) if body.get("timestamp") is not None else None
    expires = None
    if body.get("days_to_expire") is not None:
        days = body["days_to_expire"]
        if isinstance(days, bool) or not isinstance(days, (int, float)) or not 0 < days <= 365_000:
            raise BadRequest("days_to_expire must be a positive number of days (at most 365000).", code="bad_body")
        try:
            expires = (moment or datetime.now(timezone.utc)) + timedelta(days=float(days))
        except OverflowError:
            raise BadRequest("timestamp + days_to_expire is past the year 9999.", code="bad_body") from None
    version = await run_in_threadpool(runtime.materializer.create_version, datastack_name, moment, expires)
    return version.to_json()


@router.api_route(route_path(V3["neuroglancer_annotation_path"]) + "/{rest:path}", methods=["GET"], include_in_schema=False)
@router.api_route(route_path(V3["neuroglancer_segprop_path"]) + "/info", methods=["GET"], include_in_schema=False)
def neuroglancer_sources(request: Request) -> None:
    raise NotImplementedYet(
        "Neuroglancer precomputed annotation and segment-property sources are not served yet; "
        "query the table and build the layer locally (e.g. with nglui) instead.",
        code="not_implemented",
    )
