"""Meshing service (``/meshing``): graphene mesh manifests and the fragment files.

Neuroglancer's graphene source and cloud-volume ask the manifest for a node's fragments, then
read each fragment from the graph's ``data_dir`` (``/volumes/{table_id}/ws/<mesh dir>/…``).
The work happens in ``opencave.services.meshing``. Remesh requests are queued by the
chunkedgraph router (``…/remeshing``); the worker that consumes them runs for the lifetime of
the app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from opencave.errors import BadRequest
from opencave.server.routers.chunkedgraph import _body_json, _flag, _graph, _json, _node_id
from opencave.server.routers.volumes import require_volume_access
from opencave.server.security import current_context, runtime_of
from opencave.services.auth import AuthContext
from opencave.services.chunkedgraph import queries
from opencave.services.meshing.layout import MESH_DIR, UNSHARDED_MESH_DIR, MeshLayout
from opencave.services.meshing.service import ManifestQuery
from opencave.wire.endpoints import MESHING, route_path
from opencave.wire.versions import CHUNKEDGRAPH_SERVER_VERSION


@asynccontextmanager
async def _request_worker(app: FastAPI) -> AsyncIterator[None]:
    worker = app.state.runtime.meshes.worker
    worker.start()
    try:
        yield
    finally:
        await run_in_threadpool(worker.stop)


router = APIRouter(tags=["meshing"], lifespan=_request_worker)
V1 = MESHING.for_version(1)


@router.get(route_path(MESHING.common["get_version"]))
def version() -> str:
    return CHUNKEDGRAPH_SERVER_VERSION


def _int_or_none(value: Any, name: str) -> int | None:
    if value is None or value == "" or value == "None":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be an integer; got {value!r}.", code=f"bad_{name}") from None


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, (str, int)) and _flag(str(value), False))


async def _manifest_query(request: Request) -> ManifestQuery:
    """Query parameters plus the optional JSON body of the GET (cloud-volume sends start_layer there)."""
    params = request.query_params
    body: dict[str, Any] = {}
    if await request.body():
        body = await _body_json(request)
        if not isinstance(body, dict):
            raise BadRequest('The manifest body must be a JSON object such as {"start_layer": 2}.', code="bad_body")
    start_layer = _int_or_none(params.get("start_layer"), "start_layer")
    if "start_layer" in body:
        start_layer = _int_or_none(body["start_layer"], "start_layer")
    if "flexible_start_layer" in body:
        _int_or_none(body["flexible_start_layer"], "flexible_start_layer")  # validated; only L2 is meshed
    return ManifestQuery(
        verify=_flag(params.get("verify"), False),
        return_seg_ids=_flag(params.get("return_seg_ids"), False) or _truthy(body.get("return_seg_ids")),
        prepend_seg_ids=_flag(params.get("prepend_seg_ids"), False),
        start_layer=start_layer,
        bounds=queries.parse_bounds(params.get("bounds")),
        return_seg_id_layers=_truthy(body.get("return_seg_id_layers")),
        return_seg_chunk_coordinates=_truthy(body.get("return_seg_chunk_coordinates")),
    )


@router.get(route_path(V1["manifest"]))
async def manifest(table_id: str, node_id: str, lod: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    node = _node_id(node_id)
    if _int_or_none(lod, "lod") is None:
        raise BadRequest(f"The manifest path ends with <node_id>:<lod>, lod an integer; got {lod!r}.", code="bad_lod")
    query = await _manifest_query(request)
    handle = await run_in_threadpool(_graph, request, context, table_id)
    answer = await run_in_threadpool(runtime_of(request).meshes.manifest, handle, node, query)
    return _json(answer)


# Registered before the volumes router, whose catch-all serves the watershed's own files.
@router.get(f"/volumes/{{table_id}}/access/{{key}}/ws/{MESH_DIR}/{UNSHARDED_MESH_DIR}/{{name}}", include_in_schema=False)
@router.get(f"/volumes/{{table_id}}/access/{{key}}/ws/{MESH_DIR}/{{name}}", include_in_schema=False)
@router.get(f"/volumes/{{table_id}}/ws/{MESH_DIR}/{UNSHARDED_MESH_DIR}/{{name}}", include_in_schema=False)
@router.get(f"/volumes/{{table_id}}/ws/{MESH_DIR}/{{name}}")
async def fragment(table_id: str, name: str, request: Request, key: str | None = None) -> Response:
    MeshLayout.check_fragment_name(name)  # names no fragment can have (cloud-volume asks for
    # ``info`` without credentials) are 404 before authentication: they reveal nothing
    runtime = runtime_of(request)
    require_volume_access(request, table_id, key)
    handle = await run_in_threadpool(runtime.graphs.graph, table_id)
    data = await run_in_threadpool(runtime.meshes.fragment, handle, name)
    return Response(data, media_type="application/octet-stream")

