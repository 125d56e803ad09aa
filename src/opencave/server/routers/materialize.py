"""Materialization engine (``/materialize/api/v2`` and ``/v3``): versions, metadata, queries.

Thin: parse, authenticate, check permissions, call the service, encode the answer. Query answers
stream batch by batch as Arrow IPC (``Content-Type: data.arrow``, buffers compressed per
``Accept-Encoding``) or JSON records (``return_pyarrow=false``), with the ``dataframe_resolution``,
``column_names`` and ``Warning`` headers caveclient reads.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema, model_validator
from starlette.concurrency import run_in_threadpool

from opencave.errors import BadRequest, Forbidden, NotFound, NotImplementedYet
from opencave.server.params import ARROW_STREAM, CODES, Flag, Moment, Name, invalid, media_answers
from opencave.server.security import current_context, runtime_of
from opencave.services.auth import AuthContext
from opencave.services.jobs.kinds import CREATE_VERSION, moment_text
from opencave.services.materialize.answers import Answer, json_records
from opencave.services.materialize.requests import QueryOptions
from opencave.wire import arrow_ipc
from opencave.wire.endpoints import MATERIALIZE, route_path
from opencave.wire.materialize_query import ERROR_CODES, JoinQueryBody, LiveQueryBody, TableQueryBody
from opencave.wire.versions import MATERIALIZE_API_VERSIONS, MATERIALIZE_SERVER_VERSION

CODES.update(ERROR_CODES)  # the query codec's own failures answer 400 with their code, as params' do
# Bodies are JSON whatever the Content-Type says (CAVE's servers read them so; some clients omit it).
router = APIRouter(tags=["materialize"], strict_content_type=False)
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


def _route(method: str, key: str, versions: tuple[dict[str, str], ...] = (V2, V3), **options: Any):
    """Register one handler under the key's v2 and v3 paths."""

    def register(handler):
        for path in _paths(key, versions):
            router.add_api_route(path, handler, methods=[method], **options)
        return handler

    return register


def _allow(request: Request, context: AuthContext, datastack: str, permission: str = "view") -> None:
    runtime_of(request).identities.require(context, permission, NAMESPACE, datastack)


def _is_v3(request: Request) -> bool:
    return "/api/v3/" in request.url.path


# -- declared inputs -----------------------------------------------------------------------------
def _version_number(value: Any) -> int:
    """A version number; one beyond 32 bits cannot exist, so it is a 404 like any unknown version
    (``NotFound`` is not a validation error: it passes through pydantic to the error handlers)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]{1,40}", value.strip()):
        number = int(value)
    else:
        raise invalid("bad_version", f"version {str(value)[:40]!r} must be an integer.")
    if not -(2**31) <= number < 2**31:  # versions are 32-bit integers in the registry
        raise NotFound(f"Version {number} does not exist; list the versions with client.materialize.get_versions().", code="unknown_version")
    return number


Version = Annotated[
    int,
    BeforeValidator(_version_number),
    WithJsonSchema({"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}),
    Path(description="a materialization version (client.materialize.get_versions())"),
]
Datastack = Annotated[Name, Path(description="the datastack")]
TableName = Annotated[Name, Path(description="an annotation table of the datastack")]
ViewName = Annotated[Name, Path(description="a view of the version")]
Expired = Annotated[Flag, Query(description="include expired versions")]


def _random_sample(value: Any) -> int | None:
    if value is None or value in ("", "None"):
        return None
    if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]{1,20}", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 2**63 - 1:
        raise invalid("bad_parameter", f"random_sample={str(value)[:40]!r} must be a positive integer (the number of rows to sample).")
    return value


class QueryParams(BaseModel):
    """The query string of every query endpoint, as caveclient sends it."""

    model_config = ConfigDict(extra="ignore")

    return_pyarrow: Flag = True
    arrow_format: Flag = True  # sent with return_pyarrow; Arrow answers are always IPC streams
    split_positions: Flag = False  # accepted; answers always hold positions split per axis
    direct_sql_pandas: Flag = False  # accepted; column types are always exact
    merge_reference: Flag = False  # accepted; the client joins reference tables itself
    count: Flag = False
    random_sample: Annotated[int | None, BeforeValidator(_random_sample), WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 2**63 - 1})] = None
    ipc_compress: Flag = True
    allow_missing_lookups: Flag = False
    allow_invalid_root_ids: Flag = False

    def options(self) -> QueryOptions:
        return QueryOptions(
            return_pyarrow=self.return_pyarrow,
            count=self.count,
            random_sample=self.random_sample,
            ipc_compress=self.ipc_compress,
            allow_missing_lookups=self.allow_missing_lookups,
            allow_invalid_root_ids=self.allow_invalid_root_ids,
        )


Options = Annotated[QueryParams, Query()]
QUERY_ANSWERS = media_answers(ARROW_STREAM, "application/json", description="The rows: an Arrow IPC stream, or JSON records with return_pyarrow=false")


@router.get(route_path(MATERIALIZE.common["get_version"]))
def server_version() -> str:
    return MATERIALIZE_SERVER_VERSION


@router.get(route_path(MATERIALIZE.common["get_api_versions"]))
def api_versions() -> list[int]:
    return MATERIALIZE_API_VERSIONS


# -- versions ------------------------------------------------------------------------------------
@_route("GET", "versions")
def versions(datastack_name: Datastack, request: Request, expired: Expired = False, context: AuthContext = Depends(current_context)) -> list[int]:
    _allow(request, context, datastack_name)
    return runtime_of(request).materialize.versions(datastack_name, expired)


@_route("GET", "version_metadata")
def version_metadata(datastack_name: Datastack, version: Version, request: Request, context: AuthContext = Depends(current_context)) -> dict:
    _allow(request, context, datastack_name)
    return runtime_of(request).materialize.version(datastack_name, version).to_json()


@_route("GET", "versions_metadata")
def versions_metadata(datastack_name: Datastack, request: Request, expired: Expired = False, context: AuthContext = Depends(current_context)) -> list[dict]:
    _allow(request, context, datastack_name)
    return runtime_of(request).materialize.versions_metadata(datastack_name, expired)


# -- tables --------------------------------------------------------------------------------------
@_route("GET", "tables")
def tables(datastack_name: Datastack, version: Version, request: Request, context: AuthContext = Depends(current_context)) -> list[str]:
    _allow(request, context, datastack_name)
    return runtime_of(request).materialize.table_names(datastack_name, version)


def _readable(request: Request, context: AuthContext, datastack: str, table: str, frozen: dict | None = None) -> None:
    """Read permission as the table's owner has it set now (upstream checks the live table too):
    a version's frozen metadata keeps the permissions of the day it was made."""
    runtime = runtime_of(request)
    generations = context.generations
    try:
        aligned_volume = runtime.info.aligned_volume_of(datastack, generations.info)
        current = runtime.annotations.permissions(aligned_volume, table, include_deleted=True, catalog=generations.catalog)
    except NotFound:
        if frozen is None:
            raise
        current = frozen
    runtime.annotations.access.require(context.identity, current, "read")


@_route("GET", "table_count")
def table_count(datastack_name: Datastack, version: Version, table_name: TableName, request: Request, context: AuthContext = Depends(current_context)) -> int:
    _allow(request, context, datastack_name)
    found = runtime_of(request).materialize.frozen_table(datastack_name, version, table_name)
    _readable(request, context, datastack_name, table_name, found.frozen.metadata)
    return found.frozen.row_count


@_route("GET", "metadata")
def table_metadata(datastack_name: Datastack, version: Version, table_name: TableName, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    _allow(request, context, datastack_name)
    metadata = runtime_of(request).materialize.frozen_table(datastack_name, version, table_name).frozen.metadata
    _readable(request, context, datastack_name, table_name, metadata)
    headers = {}
    if metadata.get("notice_text"):
        headers["Warning"] = _header_text(f"Table Owner Notice on {table_name}: {metadata['notice_text']}")
    return JSONResponse(metadata, headers=headers)


@_route("GET", "all_tables_metadata")
def tables_metadata(datastack_name: Datastack, version: Version, request: Request, context: AuthContext = Depends(current_context)) -> list[dict]:
    _allow(request, context, datastack_name)
    return runtime_of(request).materialize.tables_metadata(datastack_name, version)


@_route("GET", "segmentation_metadata")
def segmentation_metadata(datastack_name: Datastack, table_name: TableName, request: Request, context: AuthContext = Depends(current_context)) -> dict:
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
def unique_string_values(datastack_name: Datastack, table_name: TableName, request: Request, context: AuthContext = Depends(current_context)) -> dict:
    _allow(request, context, datastack_name)
    runtime = runtime_of(request)
    _readable(request, context, datastack_name, table_name)
    return runtime.materialize.unique_string_values(datastack_name, table_name)


# -- queries -------------------------------------------------------------------------------------
def _header_text(text: str) -> str:
    return " ".join(text.split()).encode("latin-1", "replace").decode("latin-1")


def _respond(request: Request, answer: Answer, return_pyarrow: bool, compress: bool, v3: bool) -> Response:
    """The answer's response; a small answer is encoded here, whole (in a worker thread, or on
    the event loop for an Arrow answer from memory)."""
    headers: list[tuple[str, str]] = []
    if v3 and answer.resolution is not None:
        headers += [("dataframe_resolution", repr(float(r))) for r in answer.resolution]
    headers.append(("column_names", _header_text(repr(answer.column_names))))
    headers += [("Warning", _header_text(w)) for w in answer.warnings]
    if not return_pyarrow:
        media_type, body = "application/json", json_records(answer.batches)
    else:
        codec = arrow_ipc.compression_for(request.headers.get("accept-encoding"), compress)
        media_type, body = arrow_ipc.CONTENT_TYPE, arrow_ipc.stream_batches(answer.schema, answer.batches, codec)
    response = Response(b"".join(body), media_type=media_type) if answer.small else StreamingResponse(body, media_type=media_type)
    if return_pyarrow:
        response.headers["Cache-Control"] = "no-cache"
    for name, value in headers:
        response.headers.append(name, value)
    return response


@_route("POST", "simple_query", responses=QUERY_ANSWERS)
async def query_table(
    datastack_name: Datastack,
    version: Version,
    table_name: TableName,
    params: Options,
    request: Request,
    body: Annotated[TableQueryBody | None, Body()] = None,
    context: AuthContext = Depends(current_context),
) -> Response:
    _allow(request, context, datastack_name)
    options = params.options()
    query = (body or TableQueryBody()).decode()
    service = runtime_of(request).materialize
    number, v3 = version, _is_v3(request)
    kept = service.kept_table(datastack_name, number, table_name, context.generations)
    if kept is not None:
        _readable(request, context, datastack_name, table_name, kept.frozen.metadata)
        if options.return_pyarrow:
            # A few roots' rows from a mapped twin, sent as Arrow: answered here, as the token
            # was checked here, since a hop to a worker thread would cost more than the answer.
            answer = service.answer_in_memory(kept, query, options, rescale=v3)
            if answer is not None:
                return _respond(request, answer, options.return_pyarrow, options.ipc_compress, v3)

    def work() -> Answer:
        if kept is not None:  # its permission is checked above
            return service.query_table(kept, query, options, rescale=v3)
        found = service.frozen_table(datastack_name, number, table_name, generations=context.generations)
        _readable(request, context, datastack_name, table_name, found.frozen.metadata)
        return service.query_table(found, query, options, rescale=v3)

    return await run_in_threadpool(lambda: _respond(request, work(), options.return_pyarrow, options.ipc_compress, v3))


@_route("POST", "join_query", responses=QUERY_ANSWERS)
async def join_query(
    datastack_name: Datastack,
    version: Version,
    params: Options,
    body: Annotated[JoinQueryBody, Body()],
    request: Request,
    context: AuthContext = Depends(current_context),
) -> Response:
    _allow(request, context, datastack_name)
    options = params.options()
    query = body.decode()
    service = runtime_of(request).materialize
    number = version

    def work() -> Answer:
        left, right = (service.frozen_table(datastack_name, number, table, generations=context.generations) for table, _ in query.tables)
        for found in (left, right):
            _readable(request, context, datastack_name, found.frozen.table_name, found.frozen.metadata)
        return service.query_join(left, right, query, options, rescale=_is_v3(request))

    return await run_in_threadpool(lambda: _respond(request, work(), options.return_pyarrow, options.ipc_compress, _is_v3(request)))


@router.post(route_path(V3["live_live_query"]), responses=QUERY_ANSWERS)
async def live_query(
    datastack_name: Datastack,
    params: Options,
    body: Annotated[LiveQueryBody, Body()],
    request: Request,
    context: AuthContext = Depends(current_context),
) -> Response:
    _allow(request, context, datastack_name)
    options = params.options()
    query = body.decode()
    runtime = runtime_of(request)

    def work() -> Answer:
        tables = {query.table, *(j[0] for j in query.joins), *(j[2] for j in query.joins)}
        runtime.live.require_live_tables(datastack_name, tables)
        for table in tables:
            _readable(request, context, datastack_name, table)
        return runtime.live.query(datastack_name, query, options)

    return await run_in_threadpool(lambda: _respond(request, work(), options.return_pyarrow, options.ipc_compress, v3=True))


# -- views ---------------------------------------------------------------------------------------
@_route("GET", "get_views", (V3,))
def views(datastack_name: Datastack, version: Version, request: Request, context: AuthContext = Depends(current_context)) -> dict:
    _allow(request, context, datastack_name)
    return runtime_of(request).materialize.views_of(datastack_name, version)


@_route("GET", "get_view_metadata", (V3,))
def view_metadata(datastack_name: Datastack, version: Version, view_name: ViewName, request: Request, context: AuthContext = Depends(current_context)) -> dict:
    _allow(request, context, datastack_name)
    return runtime_of(request).materialize.frozen_table(datastack_name, version, view_name, kind="view").frozen.metadata


@_route("GET", "view_schemas", (V3,))
def view_schemas(datastack_name: Datastack, version: Version, request: Request, context: AuthContext = Depends(current_context)) -> dict:
    _allow(request, context, datastack_name)
    return runtime_of(request).materialize.view_schemas(datastack_name, version)


@_route("GET", "view_schema", (V3,))
def view_schema(datastack_name: Datastack, version: Version, view_name: ViewName, request: Request, context: AuthContext = Depends(current_context)) -> dict:
    _allow(request, context, datastack_name)
    return runtime_of(request).materialize.view_schema(datastack_name, version, view_name)


@_route("POST", "view_query", (V3,), responses=QUERY_ANSWERS)
async def query_view(
    datastack_name: Datastack,
    version: Version,
    view_name: ViewName,
    params: Options,
    request: Request,
    body: Annotated[TableQueryBody | None, Body()] = None,
    context: AuthContext = Depends(current_context),
) -> Response:
    _allow(request, context, datastack_name)
    options = params.options()
    query = (body or TableQueryBody()).decode()
    service = runtime_of(request).materialize
    number = version

    def work() -> Answer:
        return service.query_table(service.frozen_table(datastack_name, number, view_name, kind="view"), query, options, rescale=True)

    return await run_in_threadpool(lambda: _respond(request, work(), options.return_pyarrow, options.ipc_compress, v3=True))


# -- workflows -----------------------------------------------------------------------------------
@_route("POST", "lookup_supervoxel_ids")
@_route("POST", "ingest_annotation_table")
def lookup_supervoxels(datastack_name: Datastack, table_name: TableName, request: Request, context: AuthContext = Depends(current_context)) -> dict:
    """Supervoxels are looked up when annotations are written, so there is never a backlog;
    the answer says so (and checks the table exists)."""
    _allow(request, context, datastack_name, "edit")
    runtime = runtime_of(request)
    runtime.annotations.table_metadata(runtime.info.aligned_volume_of(datastack_name), table_name)
    return {"status": "complete", "message": f"Every annotation of {table_name} has its supervoxel ids; they are looked up on insert."}


CREATE_BODY = 'The body may hold {"timestamp": ISO time, "days_to_expire": days}.'
MAX_DAYS = 365_000


def _days(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_DAYS:
        raise invalid("bad_body", f"days_to_expire must be a positive number of days (at most {MAX_DAYS}).")
    return float(value)


class CreateVersionBody(BaseModel):
    """A version at ``timestamp`` (default now) that expires after ``days_to_expire`` (default never)."""

    model_config = ConfigDict(extra="forbid")

    timestamp: Moment = None
    days_to_expire: Annotated[float | None, BeforeValidator(_days), WithJsonSchema({"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DAYS})] = None

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, body: Any) -> Any:
        if body is None:
            return {}
        if not isinstance(body, dict) or set(body) - set(cls.model_fields):
            raise invalid("bad_body", CREATE_BODY)
        return body


@router.post("/materialize/api/v2/materialize/run/create_frozen/datastack/{datastack_name}")
async def create_version(
    datastack_name: Datastack,
    request: Request,
    body: Annotated[CreateVersionBody | None, Body()] = None,
    wait_s: Annotated[float, Query(ge=0, le=3600, description="seconds to wait for the version before answering 202 with its job")] = 600,
    context: AuthContext = Depends(current_context),
) -> Any:
    """Create a version now (or at ``timestamp``); needs admin on the datastack's dataset. The
    work is a job: built by this request's thread when this process runs jobs, else queued for
    `opencave worker` processes; the answer is the version once it is published, or (queued)
    202 with the job to follow when that takes longer than ``wait_s``."""
    runtime = runtime_of(request)
    dataset = runtime.identities.require(context, "view", NAMESPACE, datastack_name)
    identity = context.identity
    if not (identity.admin or dataset in identity.datasets_admin):
        raise Forbidden("Creating a version needs dataset admin rights on this datastack.", code="missing_role")
    body = body or CreateVersionBody()
    moment = body.timestamp
    expires = None
    if body.days_to_expire is not None:
        try:
            expires = (moment or datetime.now(timezone.utc)) + timedelta(days=body.days_to_expire)
        except OverflowError:
            raise BadRequest("timestamp + days_to_expire is past the year 9999.", code="bad_body") from None
    payload = {"datastack": datastack_name, "timestamp": moment_text(moment), "expires_on": moment_text(expires)}
    job = await runtime.job_runner.run_for_request(CREATE_VERSION, payload, str(identity.id), wait_s)
    if not job.done:
        return JSONResponse({"job": job.to_json(), "message": f"The version is being built; follow it at /jobs/api/v1/jobs/{job.id}."}, status_code=202)
    if job.error is not None:
        job.error.raise_()
    return job.result


@router.api_route(route_path(V3["neuroglancer_annotation_path"]) + "/{rest:path}", methods=["GET"], include_in_schema=False)
@router.api_route(route_path(V3["neuroglancer_segprop_path"]) + "/info", methods=["GET"], include_in_schema=False)
def neuroglancer_sources(request: Request) -> None:
    raise NotImplementedYet(
        "Neuroglancer precomputed annotation and segment-property sources are not served yet; "
        "query the table and build the layer locally (e.g. with nglui) instead.",
        code="not_implemented",
    )
