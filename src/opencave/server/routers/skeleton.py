"""Skeleton service (``/skeletoncache/api``): CAVE's SkeletonService v1 API.

Handlers take declared ids, versions and formats, check ``view`` on the datastack and encode
answers; skeletons are made and kept by ``opencave.services.skeleton``, off the event loop.
Literal routes (``info``, ``get_refusal_list``, ``exists``, ``query_cache``) are registered
before the ``{skeleton_version}/{root_id}`` routes so they are not taken for ids.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, PrivateAttr, WithJsonSchema, model_validator
from starlette.concurrency import run_in_threadpool

from opencave.errors import NotImplementedYet
from opencave.server.params import INT32_MAX, INT64_MAX, Flag, Name, invalid, media_answers
from opencave.server.routers.volumes import volume_url
from opencave.server.security import current_context, runtime_of
from opencave.services.auth import AuthContext
from opencave.services.skeleton.service import MAX_ASYNC_BULK, MAX_CACHED_BULK, MAX_SYNC_BULK, SkeletonService
from opencave.wire import skeletons as wire
from opencave.wire.endpoints import SKELETON, route_path

router = APIRouter(tags=["skeleton"])
V1 = SKELETON.for_version(1)
NAMESPACE = "datastack"
MAX_EXISTS = 1000
MAX_PREFIXES = 1000
BINARY = "application/octet-stream"
JSON = "application/json"
SKELETON_ANSWERS = media_answers(BINARY, JSON, description="The skeleton in the requested format")
# Formats this server answers; "meshwork" is accepted but answered 501, so it is not advertised.
SERVED_FORMATS = [f for f in wire.OUTPUT_FORMATS if f != "meshwork"]


# -- declared inputs -------------------------------------------------------------------------------
def _version(value: Any) -> int:
    """A skeleton version as sent (path text or JSON), resolved to 1-4."""
    try:
        if isinstance(value, bool) or not re.fullmatch(r"\s*[+-]?[0-9]{1,4}\s*", str(value)):
            raise ValueError
        return wire.resolve_skeleton_version(int(str(value)))
    except ValueError:
        raise invalid("bad_skeleton_version", f"Unknown skeleton version: {str(value)[:40]}. Valid options: {wire.SKELETON_VERSIONS}.") from None


def _root_id(value: Any) -> int:
    """A root id from path text or JSON (int or decimal string); ids are stored as signed 64-bit."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not re.fullmatch(r"\s*[+-]?[0-9]{1,40}\s*", str(value)):
        raise invalid("bad_root_id", f"Root ids are positive decimal integers; got {str(value)[:80]!r}.")
    number = int(str(value))
    if not 0 < number <= INT64_MAX:
        raise invalid("bad_root_id", f"Root id {number} is out of range; root ids are between 1 and 2**63-1.")
    return number


def root_id_list(limit: int, what: str, in_path: bool = False):
    """Root ids as ``1,2,3`` in a path, or a JSON list in a body (where a single id counts as a
    list of one)."""

    def parse(value: Any) -> list[int]:
        if in_path:
            value = [p for p in str(value).strip().strip("[]").split(",") if p.strip()]
        elif isinstance(value, (int, str)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list) or not value:
            raise invalid("bad_root_ids", "root_ids must be a non-empty list of root ids.")
        if len(value) > limit:
            raise invalid("too_many_root_ids", f"Too many root IDs requested: {len(value)}. Maximum allowed is {limit} for {what}.")
        return [_root_id(v) for v in value]

    item = {"type": "integer", "format": "int64", "minimum": 1, "maximum": INT64_MAX}
    return Annotated[Any, BeforeValidator(parse), WithJsonSchema({"type": "array", "items": item, "minItems": 1, "maxItems": limit})]


def _output_format(allowed: tuple[str, ...] | list[str], message: str):
    def parse(value: Any) -> str:
        if value not in allowed:
            raise invalid("bad_format", message.format(value=str(value)[:40]))
        return value

    return Annotated[str, BeforeValidator(parse)]


def _verbose_level(value: Any) -> int:
    """caveclient sends ``?verbose_level=0`` (``None`` when a caller passes None); it only sets logging."""
    if value is None or str(value).strip() in ("", "None"):
        return 0
    if isinstance(value, bool) or not re.fullmatch(r"\s*[+-]?[0-9]{1,10}\s*", str(value)) or abs(int(str(value))) > INT32_MAX:
        raise invalid("bad_verbose_level", f"verbose_level must be a small integer (0: quiet); got {str(value)[:40]!r}.")
    return int(str(value))


def _prefixes(value: Any) -> list[str]:
    prefixes = [p.strip() for p in str(value).strip("[]").split(",") if p.strip()]
    if not all(p.isdigit() and p.isascii() and len(p) <= 20 for p in prefixes) or len(prefixes) > MAX_PREFIXES:
        raise invalid("bad_prefix", f"Root id prefixes are up to {MAX_PREFIXES} runs of at most 20 decimal digits separated by commas; got {str(value)[:80]!r}.")
    return prefixes


def _limit(value: Any) -> int:
    if not re.fullmatch(r"[0-9]{1,10}", str(value)) or int(str(value)) > INT32_MAX:
        raise invalid("bad_limit", f"limit must be a non-negative integer (0: no limit); got {str(value)[:40]!r}.")
    return int(str(value))


SkeletonVersion = Annotated[int, BeforeValidator(_version), WithJsonSchema({"type": "integer", "enum": wire.SKELETON_VERSIONS})]
"""A skeleton version (−1 latest, 0 Neuroglancer's, 1-4), resolved to 1-4."""
RootId = Annotated[int, BeforeValidator(_root_id), WithJsonSchema({"type": "integer", "format": "int64", "minimum": 1, "maximum": INT64_MAX})]
OutputFormat = _output_format(wire.OUTPUT_FORMATS, "Unknown output format {value!r}; use one of " + str(list(wire.OUTPUT_FORMATS)) + ".")
BulkFormat = _output_format(wire.BULK_FORMATS, "Bulk skeletons come as one of " + str(list(wire.BULK_FORMATS)) + "; got {value!r}.")
VerboseLevel = Annotated[int, BeforeValidator(_verbose_level), WithJsonSchema({"type": "integer", "format": "int32", "minimum": -INT32_MAX, "maximum": INT32_MAX})]
Prefixes = Annotated[Any, BeforeValidator(_prefixes), WithJsonSchema({"type": "string", "pattern": "^[0-9]{1,20}(,[0-9]{1,20})*$", "example": "123,456"})]
Limit = Annotated[int, BeforeValidator(_limit), WithJsonSchema({"type": "integer", "minimum": 0, "maximum": INT32_MAX})]

Datastack = Annotated[Name, Path(description="The datastack whose skeletons are asked for")]
VersionPath = Annotated[SkeletonVersion, Path(description="Skeleton version: -1 latest, 0 Neuroglancer's, 1-4")]
RootPath = Annotated[RootId, Path(description="A root id of the datastack's segmentation")]
Verbose = Annotated[VerboseLevel, Query(description="Logging detail on the server (accepted, not used)")]
FormatPath = Annotated[OutputFormat, Path(description="Output format", json_schema_extra={"enum": SERVED_FORMATS})]
BulkFormatPath = Annotated[BulkFormat, Path(description="Output format of each skeleton", json_schema_extra={"enum": list(wire.BULK_FORMATS)})]
ExistsIds = root_id_list(MAX_EXISTS, "exists")
CachedBulkIds = root_id_list(MAX_CACHED_BULK, "cached bulk requests")
AsyncBulkIds = root_id_list(MAX_ASYNC_BULK, "asynchronous bulk requests")
IdsPath = Path(description="Comma-separated root ids")


class _JsonObject(BaseModel):
    """A JSON object body; caveclient sends ``verbose_level`` with every body, other keys are ignored."""

    model_config = ConfigDict(extra="ignore")
    verbose_level: VerboseLevel = 0

    @model_validator(mode="before")
    @classmethod
    def _object(cls, data: Any) -> Any:
        if isinstance(data, bytes):  # FastAPI reads only bodies declared as JSON as JSON
            raise invalid("bad_body", "Send the body as JSON with the header Content-Type: application/json.")
        if not isinstance(data, dict):
            raise invalid("bad_body", 'Send a JSON object, e.g. {"root_ids": [...], "skeleton_version": 4}.')
        return data


class ExistsBody(_JsonObject):
    root_ids: ExistsIds
    skeleton_version: SkeletonVersion = wire.LATEST_SKELETON_VERSION
    _single: bool = PrivateAttr(False)  # a bare id (not a list) gets a bare answer

    @model_validator(mode="wrap")
    @classmethod
    def _remember_single(cls, data: Any, handler: Any) -> ExistsBody:
        body = handler(data)
        body._single = not isinstance(data["root_ids"], list)
        return body


class CachedBulkBody(_JsonObject):
    root_ids: CachedBulkIds
    generate_missing: Flag = False


class GenerateBody(_JsonObject):
    root_ids: AsyncBulkIds
    skeleton_version: SkeletonVersion = wire.LATEST_SKELETON_VERSION


def _path(key: str) -> str:
    return route_path(V1[key])


def _allowed(request: Request, context: AuthContext, datastack: str) -> SkeletonService:
    runtime = runtime_of(request)
    runtime.identities.require(context, "view", NAMESPACE, datastack)
    return runtime.skeletons


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status_code=status, media_type=JSON)


async def _skeleton_answer(service: SkeletonService, datastack: str, version: int, root_id: int, fmt: str, wait: bool) -> Response:
    if fmt == "meshwork":
        raise NotImplementedYet("Meshworks are not provided by this server; ask for a skeleton format instead.", code="no_meshworks")
    if fmt == "none":  # only make sure the skeleton exists (now, or in the background)
        await run_in_threadpool(service.check, datastack, root_id)
        if wait:
            await run_in_threadpool(service.skeleton, datastack, root_id)
        else:
            await run_in_threadpool(service.generate_async, datastack, [root_id])
        return _json(None)
    encoded = await run_in_threadpool(service.answer, datastack, root_id, version, fmt)
    headers = {"Content-Disposition": f'attachment; filename="{encoded.filename}"'} if encoded.filename else None
    return Response(encoded.body, media_type=encoded.media_type, headers=headers)


# -- service versions ------------------------------------------------------------------------------
@router.get(_path("get_version"))
def version() -> str:
    return wire.SKELETON_SERVER_VERSION


@router.get(_path("get_versions"))
def versions() -> list[int]:
    return list(wire.SKELETON_VERSIONS)


# -- info documents and cache queries (literal routes first) ------------------------------------
@router.get(_path("precomputed_info"))
async def precomputed_info(datastack_name: Datastack, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    service = _allowed(request, context, datastack_name)
    handle = await run_in_threadpool(service.graph_of, datastack_name)
    data_dir = volume_url(request, context, handle.table_id)
    info = await run_in_threadpool(service.segmentation_info, datastack_name, data_dir)
    return _json(info)


@router.get(_path("skeleton_info"))
@router.get(_path("bulk_skeleton_info"))
async def skeleton_info(datastack_name: Datastack, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    service = _allowed(request, context, datastack_name)
    await run_in_threadpool(service.graph_of, datastack_name)
    return _json(wire.precomputed_skeleton_info(wire.NEUROGLANCER_SKELETON_VERSION))


@router.get(_path("get_refusal_list"), response_class=Response, responses=media_answers(BINARY, description="gzip of CSV lines datastack,root_id"))
async def refusal_list(
    datastack_name: Datastack, request: Request, verbose_level: Verbose = 0, context: AuthContext = Depends(current_context)
) -> Response:
    service = _allowed(request, context, datastack_name)
    body = await run_in_threadpool(service.refusal_list, datastack_name)
    return Response(body, media_type=BINARY)


@router.post(_path("skeletons_exist_via_skvn_rids_as_post"))
async def exists_post(
    datastack_name: Datastack, body: ExistsBody, request: Request, verbose_level: Verbose = 0, context: AuthContext = Depends(current_context)
) -> Response:
    service = _allowed(request, context, datastack_name)
    found = await run_in_threadpool(service.exists, datastack_name, body.root_ids)
    return _json(found[body.root_ids[0]] if body._single else {str(k): v for k, v in found.items()})


@router.get(_path("get_cache_contents_via_skvn_ridprefixes_limit"))
async def query_cache(
    datastack_name: Datastack,
    skeleton_version: VersionPath,
    root_id_prefixes: Annotated[Prefixes, Path(description="Root id prefixes (decimal digits), comma-separated")],
    limit: Annotated[Limit, Path(description="At most this many file names (0: no limit)")],
    request: Request,
    verbose_level: Verbose = 0,
    context: AuthContext = Depends(current_context),
) -> Response:
    service = _allowed(request, context, datastack_name)
    return _json(await run_in_threadpool(service.query_cache, datastack_name, skeleton_version, root_id_prefixes, limit))


@router.get(_path("skeletons_exist_via_skvn_rids"))
async def exists_get(
    datastack_name: Datastack,
    skeleton_version: VersionPath,
    root_ids: Annotated[root_id_list(MAX_EXISTS, "exists", in_path=True), IdsPath],
    request: Request,
    verbose_level: Verbose = 0,
    context: AuthContext = Depends(current_context),
) -> Response:
    service = _allowed(request, context, datastack_name)
    found = await run_in_threadpool(service.exists, datastack_name, root_ids)
    return _json(found[root_ids[0]] if len(root_ids) == 1 else {str(k): v for k, v in found.items()})


@router.get(_path("skeleton_info_versioned"))
async def skeleton_info_versioned(
    datastack_name: Datastack, skeleton_version: VersionPath, request: Request, context: AuthContext = Depends(current_context)
) -> Response:
    service = _allowed(request, context, datastack_name)
    await run_in_threadpool(service.graph_of, datastack_name)
    return _json(wire.precomputed_skeleton_info(skeleton_version))


# -- single skeletons ----------------------------------------------------------------------------------
@router.get(_path("get_skeleton_via_rid"), response_class=Response, responses=media_answers(BINARY, description="Neuroglancer precomputed skeleton (v2)"))
async def skeleton_default(
    datastack_name: Datastack, root_id: RootPath, request: Request, verbose_level: Verbose = 0, context: AuthContext = Depends(current_context)
) -> Response:
    service = _allowed(request, context, datastack_name)
    return await _skeleton_answer(service, datastack_name, wire.NEUROGLANCER_SKELETON_VERSION, root_id, "precomputed", True)


@router.get(_path("get_skeleton_via_skvn_rid"), response_class=Response, responses=media_answers(BINARY, description="Neuroglancer precomputed skeleton"))
async def skeleton_precomputed(
    datastack_name: Datastack,
    skeleton_version: VersionPath,
    root_id: RootPath,
    request: Request,
    verbose_level: Verbose = 0,
    context: AuthContext = Depends(current_context),
) -> Response:
    service = _allowed(request, context, datastack_name)
    return await _skeleton_answer(service, datastack_name, skeleton_version, root_id, "precomputed", True)


@router.get(_path("get_skeleton_via_skvn_rid_fmt"), responses=SKELETON_ANSWERS)
async def skeleton_formatted(
    datastack_name: Datastack,
    skeleton_version: VersionPath,
    root_id: RootPath,
    output_format: FormatPath,
    request: Request,
    verbose_level: Verbose = 0,
    context: AuthContext = Depends(current_context),
) -> Response:
    service = _allowed(request, context, datastack_name)
    return await _skeleton_answer(service, datastack_name, skeleton_version, root_id, output_format, False)


@router.get(_path("get_skeleton_async_via_skvn_rid"), response_class=Response, responses=media_answers(BINARY, description="Neuroglancer precomputed skeleton"))
async def skeleton_async(
    datastack_name: Datastack,
    skeleton_version: VersionPath,
    root_id: RootPath,
    request: Request,
    verbose_level: Verbose = 0,
    context: AuthContext = Depends(current_context),
) -> Response:
    service = _allowed(request, context, datastack_name)
    return await _skeleton_answer(service, datastack_name, skeleton_version, root_id, "precomputed", True)


@router.get(_path("get_skeleton_async_via_skvn_rid_fmt"), responses=SKELETON_ANSWERS)
async def skeleton_async_formatted(
    datastack_name: Datastack,
    skeleton_version: VersionPath,
    root_id: RootPath,
    output_format: FormatPath,
    request: Request,
    verbose_level: Verbose = 0,
    context: AuthContext = Depends(current_context),
) -> Response:
    service = _allowed(request, context, datastack_name)
    return await _skeleton_answer(service, datastack_name, skeleton_version, root_id, output_format, True)


# -- bulk ------------------------------------------------------------------------------------------------
@router.get(_path("get_bulk_skeletons_via_skvn_rids"))
async def bulk_skeletons(
    datastack_name: Datastack,
    skeleton_version: VersionPath,
    output_format: BulkFormatPath,
    gen_missing_sks: Annotated[Flag, Path(description="Make missing skeletons now (True) or queue them (False)")],
    root_ids: Annotated[root_id_list(MAX_SYNC_BULK, "synchronous bulk requests", in_path=True), IdsPath],
    request: Request,
    verbose_level: Verbose = 0,
    context: AuthContext = Depends(current_context),
) -> Response:
    service = _allowed(request, context, datastack_name)
    return _json(await run_in_threadpool(service.bulk, datastack_name, root_ids, skeleton_version, output_format, gen_missing_sks))


@router.post(_path("get_cached_skeletons_bulk_as_post"))
async def cached_skeletons(
    datastack_name: Datastack,
    skeleton_version: VersionPath,
    output_format: BulkFormatPath,
    body: CachedBulkBody,
    request: Request,
    context: AuthContext = Depends(current_context),
) -> Response:
    service = _allowed(request, context, datastack_name)
    return _json(await run_in_threadpool(service.cached_bulk, datastack_name, body.root_ids, skeleton_version, output_format, body.generate_missing))


@router.get(_path("gen_bulk_skeletons_via_skvn_rids"))
async def generate_get(
    datastack_name: Datastack,
    skeleton_version: VersionPath,
    root_ids: Annotated[root_id_list(MAX_ASYNC_BULK, "asynchronous bulk requests", in_path=True), IdsPath],
    request: Request,
    verbose_level: Verbose = 0,
    context: AuthContext = Depends(current_context),
) -> Response:
    service = _allowed(request, context, datastack_name)
    return _json(await run_in_threadpool(service.generate_async, datastack_name, root_ids))


@router.post(_path("gen_bulk_skeletons_via_skvn_rids_as_post"))
async def generate_post(
    datastack_name: Datastack, body: GenerateBody, request: Request, verbose_level: Verbose = 0, context: AuthContext = Depends(current_context)
) -> Response:
    service = _allowed(request, context, datastack_name)
    return _json(await run_in_threadpool(service.generate_async, datastack_name, body.root_ids))


# Always 501 (there is no bucket), so it is left out of the OpenAPI document like other unserved URLs.
@router.post(_path("get_skeleton_token_as_post"), include_in_schema=False)
async def skeleton_token(
    datastack_name: Datastack,
    skeleton_version: VersionPath,
    request: Request,
    body: Annotated[_JsonObject | None, Body()] = None,
    context: AuthContext = Depends(current_context),
) -> Response:
    _allowed(request, context, datastack_name)
    raise NotImplementedYet(
        "Skeletons are not kept in a cloud bucket on this server, so there is no storage token; "
        "use fetch_skeletons(method='server') (the get_cached_skeletons endpoint).",
        code="no_bucket",
    )
