"""Skeleton service (``/skeletoncache/api``): CAVE's SkeletonService v1 API.

Handlers parse ids, versions and formats, check ``view`` on the datastack and encode answers;
skeletons are made and kept by ``opencave.services.skeleton``, off the event loop. Literal
routes (``info``, ``get_refusal_list``, ``exists``, ``query_cache``) are registered before the
``{skeleton_version}/{root_id}`` routes so they are not taken for ids.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from opencave.errors import BadRequest, NotImplementedYet
from opencave.server.routers.volumes import volume_url
from opencave.server.security import current_context, runtime_of
from opencave.services.auth import AuthContext
from opencave.services.skeleton.service import (
    MAX_ASYNC_BULK,
    MAX_CACHED_BULK,
    MAX_SYNC_BULK,
    SkeletonService,
    parse_root_id,
    parse_root_ids,
    parse_version,
)
from opencave.wire import skeletons as wire
from opencave.wire.endpoints import SKELETON, route_path

router = APIRouter(tags=["skeleton"])
V1 = SKELETON.for_version(1)
NAMESPACE = "datastack"
MAX_EXISTS = 1000


def _path(key: str) -> str:
    return route_path(V1[key])


def _allowed(request: Request, context: AuthContext, datastack: str) -> SkeletonService:
    runtime = runtime_of(request)
    runtime.identities.require(context, "view", NAMESPACE, datastack)
    return runtime.skeletons


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status_code=status, media_type="application/json")


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"Request body is not valid JSON ({exc}).", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest('Send a JSON object, e.g. {"root_ids": [...], "skeleton_version": 4}.', code="bad_body")
    return body


def _id_list(text: str, limit: int, what: str) -> list[int]:
    parts = [p for p in text.strip("[]").split(",") if p.strip()]
    return parse_root_ids(parts, limit, what)


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "t", "yes"):
        return True
    if value in ("false", "0", "f", "no"):
        return False
    raise BadRequest(f"gen_missing_sks must be True or False; got {text!r}.", code="bad_flag")


def _format(fmt: str) -> str:
    if fmt == "meshwork":
        raise NotImplementedYet("Meshworks are not provided by this server; ask for a skeleton format instead.", code="no_meshworks")
    if fmt not in wire.OUTPUT_FORMATS:
        raise BadRequest(f"Unknown output format {fmt!r}; use one of {list(wire.OUTPUT_FORMATS)}.", code="bad_format")
    return fmt


def _bulk_format(fmt: str) -> str:
    if fmt not in wire.BULK_FORMATS:
        raise BadRequest(f"Bulk skeletons come as one of {list(wire.BULK_FORMATS)}; got {fmt!r}.", code="bad_format")
    return fmt


async def _skeleton_answer(service: SkeletonService, datastack: str, version: str, root_id: str, fmt: str, wait: bool) -> Response:
    concrete, rid, fmt = parse_version(version), parse_root_id(root_id), _format(fmt)
    if fmt == "none":  # only make sure the skeleton exists (now, or in the background)
        await run_in_threadpool(service.check, datastack, rid)
        if wait:
            await run_in_threadpool(service.skeleton, datastack, rid)
        else:
            await run_in_threadpool(service.generate_async, datastack, [rid])
        return _json(None)
    encoded = await run_in_threadpool(service.answer, datastack, rid, concrete, fmt)
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
async def precomputed_info(datastack_name: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    service = _allowed(request, context, datastack_name)
    handle = await run_in_threadpool(service.graph_of, datastack_name)
    data_dir = volume_url(request, context, handle.table_id)
    info = await run_in_threadpool(service.segmentation_info, datastack_name, data_dir)
    return _json(info)


@router.get(_path("skeleton_info"))
@router.get(_path("bulk_skeleton_info"))
async def skeleton_info(datastack_name: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    service = _allowed(request, context, datastack_name)
    await run_in_threadpool(service.graph_of, datastack_name)
    return _json(wire.precomputed_skeleton_info(wire.NEUROGLANCER_SKELETON_VERSION))


@router.get(_path("get_refusal_list"))
async def refusal_list(datastack_name: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    service = _allowed(request, context, datastack_name)
    body = await run_in_threadpool(service.refusal_list, datastack_name)
    return Response(body, media_type="application/octet-stream")


@router.post(_path("skeletons_exist_via_skvn_rids_as_post"))
async def exists_post(datastack_name: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    service = _allowed(request, context, datastack_name)
    body = await _body(request)
    if "root_ids" not in body:
        raise BadRequest('The body needs "root_ids" (a list of root ids).', code="bad_body")
    parse_version(body.get("skeleton_version", wire.LATEST_SKELETON_VERSION))
    single = not isinstance(body["root_ids"], list)
    rids = parse_root_ids(body["root_ids"], MAX_EXISTS, "exists")
    found = await run_in_threadpool(service.exists, datastack_name, rids)
    return _json(found[rids[0]] if single else {str(k): v for k, v in found.items()})


@router.get(_path("get_cache_contents_via_skvn_ridprefixes_limit"))
async def query_cache(
    datastack_name: str, skeleton_version: str, root_id_prefixes: str, limit: str, request: Request, context: AuthContext = Depends(current_context)
) -> Response:
    service = _allowed(request, context, datastack_name)
    concrete = parse_version(skeleton_version)
    prefixes = [p.strip() for p in root_id_prefixes.strip("[]").split(",") if p.strip()]
    if not all(p.isdigit() for p in prefixes):
        raise BadRequest(f"Root id prefixes are decimal digits separated by commas; got {root_id_prefixes!r}.", code="bad_prefix")
    try:
        count = int(limit)
    except ValueError:
        raise BadRequest(f"limit must be a non-negative integer (0: no limit); got {limit!r}.", code="bad_limit") from None
    if count < 0:
        raise BadRequest("limit must be a non-negative integer (0: no limit).", code="bad_limit")
    return _json(await run_in_threadpool(service.query_cache, datastack_name, concrete, prefixes, count))


@router.get(_path("skeletons_exist_via_skvn_rids"))
async def exists_get(datastack_name: str, skeleton_version: str, root_ids: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    service = _allowed(request, context, datastack_name)
    parse_version(skeleton_version)
    rids = _id_list(root_ids, MAX_EXISTS, "exists")
    found = await run_in_threadpool(service.exists, datastack_name, rids)
    return _json(found[rids[0]] if len(rids) == 1 else {str(k): v for k, v in found.items()})


@router.get(_path("skeleton_info_versioned"))
async def skeleton_info_versioned(datastack_name: str, skeleton_version: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    service = _allowed(request, context, datastack_name)
    concrete = parse_version(skeleton_version)
    await run_in_threadpool(service.graph_of, datastack_name)
    return _json(wire.precomputed_skeleton_info(concrete))


# -- single skeletons ----------------------------------------------------------------------------------
@router.get(_path("get_skeleton_via_rid"))
async def skeleton_default(datastack_name: str, root_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    service = _allowed(request, context, datastack_name)
    return await _skeleton_answer(service, datastack_name, str(wire.NEUROGLANCER_SKELETON_VERSION), root_id, "precomputed", True)


@router.get(_path("get_skeleton_via_skvn_rid"))
async def skeleton_precomputed(datastack_name: str, skeleton_version: str, root_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    service = _allowed(request, context, datastack_name)
    return await _skeleton_answer(service, datastack_name, skeleton_version, root_id, "precomputed", True)


@router.get(_path("get_skeleton_via_skvn_rid_fmt"))
async def skeleton_formatted(
    datastack_name: str, skeleton_version: str, root_id: str, output_format: str, request: Request, context: AuthContext = Depends(current_context)
) -> Response:
    service = _allowed(request, context, datastack_name)
    return await _skeleton_answer(service, datastack_name, skeleton_version, root_id, output_format, False)


@router.get(_path("get_skeleton_async_via_skvn_rid"))
async def skeleton_async(datastack_name: str, skeleton_version: str, root_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    service = _allowed(request, context, datastack_name)
    return await _skeleton_answer(service, datastack_name, skeleton_version, root_id, "precomputed", True)


@router.get(_path("get_skeleton_async_via_skvn_rid_fmt"))
async def skeleton_async_formatted(
    datastack_name: str, skeleton_version: str, root_id: str, output_format: str, request: Request, context: AuthContext = Depends(current_context)
) -> Response:
    service = _allowed(request, context, datastack_name)
    return await _skeleton_answer(service, datastack_name, skeleton_version, root_id, output_format, True)


# -- bulk ------------------------------------------------------------------------------------------------
@router.get(_path("get_bulk_skeletons_via_skvn_rids"))
async def bulk_skeletons(
    datastack_name: str,
    skeleton_version: str,
    output_format: str,
    gen_missing_sks: str,
    root_ids: str,
    request: Request,
    context: AuthContext = Depends(current_context),
) -> Response:
    service = _allowed(request, context, datastack_name)
    concrete, fmt, generate = parse_version(skeleton_version), _bulk_format(output_format), _flag(gen_missing_sks)
    rids = _id_list(root_ids, MAX_SYNC_BULK, "synchronous bulk requests")
    return _json(await run_in_threadpool(service.bulk, datastack_name, rids, concrete, fmt, generate))


@router.post(_path("get_cached_skeletons_bulk_as_post"))
async def cached_skeletons(
    datastack_name: str, skeleton_version: str, output_format: str, request: Request, context: AuthContext = Depends(current_context)
) -> Response:
    service = _allowed(request, context, datastack_name)
    concrete, fmt = parse_version(skeleton_version), _bulk_format(output_format)
    body = await _body(request)
    rids = parse_root_ids(body.get("root_ids"), MAX_CACHED_BULK, "cached bulk requests")
    generate = body.get("generate_missing", False)
    if not isinstance(generate, bool):
        raise BadRequest("generate_missing must be true or false.", code="bad_body")
    return _json(await run_in_threadpool(service.cached_bulk, datastack_name, rids, concrete, fmt, generate))


@router.get(_path("gen_bulk_skeletons_via_skvn_rids"))
async def generate_get(datastack_name: str, skeleton_version: str, root_ids: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    service = _allowed(request, context, datastack_name)
    parse_version(skeleton_version)
    rids = _id_list(root_ids, MAX_ASYNC_BULK, "asynchronous bulk requests")
    return _json(await run_in_threadpool(service.generate_async, datastack_name, rids))


@router.post(_path("gen_bulk_skeletons_via_skvn_rids_as_post"))
async def generate_post(datastack_name: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    service = _allowed(request, context, datastack_name)
    body = await _body(request)
    parse_version(body.get("skeleton_version", wire.LATEST_SKELETON_VERSION))
    rids = parse_root_ids(body.get("root_ids"), MAX_ASYNC_BULK, "asynchronous bulk requests")
    return _json(await run_in_threadpool(service.generate_async, datastack_name, rids))


@router.post(_path("get_skeleton_token_as_post"))
async def skeleton_token(datastack_name: str, skeleton_version: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    _allowed(request, context, datastack_name)
    parse_version(skeleton_version)
    raise NotImplementedYet(
        "Skeletons are not kept in a cloud bucket on this server, so there is no storage token; "
        "use fetch_skeletons(method='server') (the get_cached_skeletons endpoint).",
        code="no_bucket",
    )
