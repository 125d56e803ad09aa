"""Annotation engine (``/annotation/api/v2``): live annotation tables of an aligned volume.

Thin: parse, check the dataset permission (``view`` to read, ``edit`` to write, on the aligned
volume), let the service check the table's own permissions and do the work off the event loop.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from opencave.errors import BadRequest
from opencave.runtime import Runtime
from opencave.server.security import current_context, runtime_of
from opencave.services.annotation import AnnotationService
from opencave.services.auth import AuthContext
from opencave.wire.endpoints import ANNOTATION, route_path

router = APIRouter(tags=["annotation"])
V2 = ANNOTATION.for_version(2)
NAMESPACE = "aligned_volume"
CREATE_KEYS = {
    "description",
    "voxel_resolution_x",
    "voxel_resolution_y",
    "voxel_resolution_z",
    "user_id",
    "table_metadata",
    "reference_table",
    "track_target_id_updates",
    "flat_segmentation_source",
    "read_permission",
    "write_permission",
    "notice_text",
}
UPDATE_KEYS = {"description", "flat_segmentation_source", "read_permission", "write_permission", "user_id", "notice_text"}


def _path(key: str) -> str:
    return route_path(V2[key])


def _service(request: Request, context: AuthContext, aligned_volume: str, permission: str) -> AnnotationService:
    runtime: Runtime = runtime_of(request)
    runtime.identities.require(context, permission, NAMESPACE, aligned_volume)
    return runtime.annotations


def _notice(metadata: dict) -> dict[str, str]:
    """The ``Warning`` header caveclient logs for a table whose owner set a notice."""
    notice = metadata.get("notice_text")
    if not notice:
        return {}
    text = " ".join(notice.split()).encode("latin-1", "replace").decode("latin-1")
    return {"Warning": f"Table Owner Notice: {text}"}


async def _body(request: Request) -> dict:
    raw = await request.body()
    if not raw:
        raise BadRequest("This endpoint needs a JSON body.", code="missing_body")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Request body is not valid JSON ({exc}); send a JSON document.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.", code="invalid_body")
    return body


def _object(body: dict, key: str) -> dict:
    value = body.get(key) if body.get(key) is not None else {}
    if not isinstance(value, dict):
        raise BadRequest(f"'{key}' must be a JSON object.", code="invalid_body")
    return value


def _unknown(given: dict, allowed: set[str], where: str) -> None:
    extra = sorted(set(given) - allowed)
    if extra:
        raise BadRequest(f"Unknown keys {extra} in {where}; allowed: {sorted(allowed)}.", code="invalid_body")


def _user(context: AuthContext) -> str:
    return str(context.identity.id)


# -- tables ------------------------------------------------------------------------------------
@router.get(_path("tables"))
def list_tables(aligned_volume_name: str, request: Request, context: AuthContext = Depends(current_context)) -> list[str]:
    service = _service(request, context, aligned_volume_name, "view")
    text = request.query_params.get("timestamp")
    timestamp = None
    if text:
        try:
            timestamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest(f"timestamp must be ISO 8601 (YYYY-MM-DDTHH:MM:SS.ffffff); got {text!r}.", code="bad_timestamp") from None
    return service.table_names(aligned_volume_name, timestamp=timestamp)


@router.post(_path("tables"))
async def create_table(aligned_volume_name: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    body = await _body(request)
    meta = _object(body, "metadata")
    _unknown(meta, CREATE_KEYS, "metadata")
    link = _object(meta, "table_metadata")
    missing = [k for k in ("voxel_resolution_x", "voxel_resolution_y", "voxel_resolution_z") if meta.get(k) is None]
    if missing:
        raise BadRequest(f"metadata must give {missing} (the voxel size of positions, in nm).", code="invalid_body")
    service = await run_in_threadpool(_service, request, context, aligned_volume_name, "edit")
    await run_in_threadpool(
        service.create_table,
        aligned_volume_name,
        body.get("table_name"),
        body.get("schema_type"),
        description=meta.get("description"),
        voxel_resolution=[meta[k] for k in ("voxel_resolution_x", "voxel_resolution_y", "voxel_resolution_z")],
        user_id=meta.get("user_id") if meta.get("user_id") is not None else _user(context),
        reference_table=link.get("reference_table", meta.get("reference_table")),
        track_target_id_updates=link.get("track_target_id_updates", meta.get("track_target_id_updates")),
        flat_segmentation_source=meta.get("flat_segmentation_source"),
        read_permission=meta.get("read_permission") or "PUBLIC",
        write_permission=meta.get("write_permission") or "PRIVATE",
        notice_text=meta.get("notice_text"),
    )
    return Response(body["table_name"], media_type="text/html")


@router.put(_path("tables"))
async def update_table(aligned_volume_name: str, request: Request, context: AuthContext = Depends(current_context)) -> JSONResponse:
    body = await _body(request)
    meta = _object(body, "metadata")
    _unknown(meta, UPDATE_KEYS, "metadata")
    table_name = body.get("table_name")
    if not isinstance(table_name, str) or not table_name:
        raise BadRequest('Send {"table_name": <name>, "metadata": {…}}.', code="invalid_body")
    fields: dict[str, Any] = {k: v for k, v in meta.items() if k != "user_id"}
    if meta.get("user_id") is not None:
        fields["owner"] = meta["user_id"]
    service = await run_in_threadpool(_service, request, context, aligned_volume_name, "edit")
    updated = await run_in_threadpool(
        lambda: service.update_table_metadata(aligned_volume_name, table_name, _user(context), admin=context.identity.admin, **fields)
    )
    return JSONResponse(updated)


@router.get(_path("table_info"))
def table_metadata(aligned_volume_name: str, table_name: str, request: Request, context: AuthContext = Depends(current_context)) -> JSONResponse:
    found = _service(request, context, aligned_volume_name, "view").table_metadata(aligned_volume_name, table_name)
    return JSONResponse(found, headers=_notice(found))


@router.delete(_path("table_info"))
def delete_table(aligned_volume_name: str, table_name: str, request: Request, context: AuthContext = Depends(current_context)) -> bool:
    service = _service(request, context, aligned_volume_name, "edit")
    service.delete_table(aligned_volume_name, table_name, _user(context), admin=context.identity.admin)
    return True


@router.get(_path("table_count"))
def count(aligned_volume_name: str, table_name: str, request: Request, context: AuthContext = Depends(current_context)) -> int:
    service = _service(request, context, aligned_volume_name, "view")
    service.authorize(aligned_volume_name, table_name, context.identity, "read")
    return service.count(aligned_volume_name, table_name)


# -- annotations -------------------------------------------------------------------------------
def _ids_param(request: Request) -> list[int]:
    text = request.query_params.get("annotation_ids", "")
    try:
        ids = [int(v) for v in text.strip().strip("[]").split(",") if v.strip()]
    except ValueError:
        raise BadRequest(f"annotation_ids must be comma-separated integers, e.g. annotation_ids=1,2,3; got {text!r}.", code="invalid_ids") from None
    if not ids:
        raise BadRequest("Name the annotations to get: annotation_ids=1,2,3.", code="invalid_ids")
    return ids


@router.get(_path("annotations"))
def get_annotations(aligned_volume_name: str, table_name: str, request: Request, context: AuthContext = Depends(current_context)) -> JSONResponse:
    ids = _ids_param(request)
    service = _service(request, context, aligned_volume_name, "view")
    found = service.authorize(aligned_volume_name, table_name, context.identity, "read")
    return JSONResponse(service.get(aligned_volume_name, table_name, ids), headers=_notice(found))


async def _write(request: Request, context: AuthContext, aligned_volume: str, table_name: str, key: str) -> tuple[AnnotationService, Any]:
    body = await _body(request)
    if key not in body:
        raise BadRequest(f'The body must be {{"{key}": [...]}}.', code="invalid_body")
    service = await run_in_threadpool(_service, request, context, aligned_volume, "edit")
    await run_in_threadpool(service.authorize, aligned_volume, table_name, context.identity, "write")
    return service, body[key]


@router.post(_path("annotations"))
async def insert_annotations(aligned_volume_name: str, table_name: str, request: Request, context: AuthContext = Depends(current_context)) -> list[int]:
    service, annotations = await _write(request, context, aligned_volume_name, table_name, "annotations")
    return await run_in_threadpool(service.insert, aligned_volume_name, table_name, annotations)


@router.put(_path("annotations"))
async def update_annotations(aligned_volume_name: str, table_name: str, request: Request, context: AuthContext = Depends(current_context)) -> dict[str, int]:
    service, annotations = await _write(request, context, aligned_volume_name, table_name, "annotations")
    mapping = await run_in_threadpool(service.update, aligned_volume_name, table_name, annotations)
    return {str(old): new for old, new in mapping.items()}


@router.delete(_path("annotations"))
async def delete_annotations(aligned_volume_name: str, table_name: str, request: Request, context: AuthContext = Depends(current_context)) -> list[int]:
    service, ids = await _write(request, context, aligned_volume_name, table_name, "annotation_ids")
    return await run_in_threadpool(service.delete, aligned_volume_name, table_name, ids)
