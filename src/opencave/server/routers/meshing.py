"""Meshing service (``/meshing``): graphene mesh manifests and the fragment files.

Neuroglancer's graphene source and cloud-volume ask the manifest for a node's fragments, then
read each fragment from the graph's ``data_dir`` (``/volumes/{table_id}/ws/<mesh dir>/…``).
The work happens in ``opencave.services.meshing``. Remesh requests (``…/remeshing``, in the
chunkedgraph router) are queued jobs, run by any process that runs jobs.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from opencave.server.params import Bounds, Flag, Int32, NodeId, media_answers
from opencave.server.routers.chunkedgraph import JsonBody, TableId, _graph, _json
from opencave.server.routers.volumes import MAX_VOLUME_KEY, READ_METHODS, require_volume_access
from opencave.server.security import current_context, runtime_of
from opencave.services.auth import AuthContext
from opencave.services.meshing.layout import MESH_DIR, UNSHARDED_MESH_DIR, MeshLayout
from opencave.services.meshing.service import ManifestQuery
from opencave.wire.endpoints import MESHING, route_path
from opencave.wire.versions import CHUNKEDGRAPH_SERVER_VERSION


router = APIRouter(tags=["meshing"], strict_content_type=False)
V1 = MESHING.for_version(1)
MAX_FRAGMENT_NAME = 200


@router.get(route_path(MESHING.common["get_version"]))
def version() -> str:
    return CHUNKEDGRAPH_SERVER_VERSION


class ManifestBody(JsonBody):
    """The JSON body some clients send with the manifest GET (cloud-volume sends start_layer)."""

    start_layer: Int32 | None = None
    flexible_start_layer: Int32 | None = Field(None, description="Accepted; only layer 2 is meshed, so it changes nothing.")
    return_seg_ids: Flag = False
    return_seg_id_layers: Flag = False
    return_seg_chunk_coordinates: Flag = False


Fragment = Annotated[str, Path(max_length=MAX_FRAGMENT_NAME, description="A fragment name as a manifest lists it.")]
VolumeKey = Annotated[str, Path(max_length=MAX_VOLUME_KEY, description="The access key of the graph's data_dir.")]


@router.get(route_path(V1["manifest"]))
async def manifest(
    table_id: TableId,
    node_id: Annotated[NodeId, Path(description="An L2 node or any node above it (usually a root).")],
    lod: Annotated[Int32, Path(description="Level of detail (meshes have one).")],
    request: Request,
    body: Annotated[ManifestBody | None, Body(description="Optional; sent with the GET.")] = None,
    verify: Annotated[Flag, Query(description="List only fragments that exist (meshing missing ones first).")] = False,
    return_seg_ids: Annotated[Flag, Query(description="Also answer the L2 ids of the fragments.")] = False,
    prepend_seg_ids: Annotated[Flag, Query(description="Name fragments ~<l2_id>:<name>, as Neuroglancer asks.")] = False,
    start_layer: Annotated[Int32 | None, Query(description="The layer meshes are listed at (2).")] = None,
    bounds: Annotated[Bounds, Query(description="Only fragments whose chunks meet x0-x1_y0-y1_z0-z1 (voxels).")] = None,
    context: AuthContext = Depends(current_context),
) -> Response:
    """The fragments of a node's L2 descendants (graphene manifest)."""
    body = body or ManifestBody()
    query = ManifestQuery(
        verify=verify,
        return_seg_ids=return_seg_ids or body.return_seg_ids,
        prepend_seg_ids=prepend_seg_ids,
        start_layer=body.start_layer if body.start_layer is not None else start_layer,
        bounds=bounds,
        return_seg_id_layers=body.return_seg_id_layers,
        return_seg_chunk_coordinates=body.return_seg_chunk_coordinates,
    )
    handle = await run_in_threadpool(_graph, request, context, table_id)
    answer = await run_in_threadpool(runtime_of(request).meshes.manifest, handle, node_id, query)
    return _json(answer)


async def _fragment(request: Request, table_id: str, name: str, key: str | None) -> Response:
    MeshLayout.check_fragment_name(name)  # names no fragment can have (cloud-volume asks for
    # ``info`` without credentials) are 404 before authentication: they reveal nothing
    runtime = runtime_of(request)
    require_volume_access(request, table_id, key)
    handle = await run_in_threadpool(runtime.graphs.graph, table_id)
    data = await run_in_threadpool(runtime.meshes.fragment, handle, name)
    return Response(data, media_type="application/octet-stream")


# The mesh directory's info, as cloud-volume assumes when there is none: unsharded legacy meshes
# listed by manifests. Neuroglancer's graphene source needs it to exist; it is the same for every
# graph and reveals nothing, so it needs no credentials (cloud-volume asks for it without).
MESH_INFO = {"@type": "neuroglancer_legacy_mesh", "spatial_index": None}


@router.api_route(f"/volumes/{{table_id}}/access/{{key}}/ws/{MESH_DIR}/info", include_in_schema=False, methods=READ_METHODS)
@router.api_route(f"/volumes/{{table_id}}/ws/{MESH_DIR}/info", include_in_schema=False, methods=READ_METHODS)
def mesh_info() -> dict:
    return MESH_INFO


# Registered before the volumes router, whose catch-all serves the watershed's own files.
# Neuroglancer reads the fragments of an unsharded mesh directory at ``<mesh dir>//<name>``.
@router.api_route(f"/volumes/{{table_id}}/access/{{key}}/ws/{MESH_DIR}/{UNSHARDED_MESH_DIR}/{{name}}", include_in_schema=False, methods=READ_METHODS)
@router.api_route(f"/volumes/{{table_id}}/access/{{key}}/ws/{MESH_DIR}//{{name}}", include_in_schema=False, methods=READ_METHODS)
@router.api_route(f"/volumes/{{table_id}}/access/{{key}}/ws/{MESH_DIR}/{{name}}", include_in_schema=False, methods=READ_METHODS)
async def keyed_fragment(table_id: TableId, key: VolumeKey, name: Fragment, request: Request) -> Response:
    """A mesh fragment under the graph's data_dir, the access key standing for the token."""
    return await _fragment(request, table_id, name, key)


@router.api_route(f"/volumes/{{table_id}}/ws/{MESH_DIR}/{UNSHARDED_MESH_DIR}/{{name}}", include_in_schema=False, methods=READ_METHODS)
@router.api_route(f"/volumes/{{table_id}}/ws/{MESH_DIR}//{{name}}", include_in_schema=False, methods=READ_METHODS)
@router.head(f"/volumes/{{table_id}}/ws/{MESH_DIR}/{{name}}", include_in_schema=False)
@router.get(f"/volumes/{{table_id}}/ws/{MESH_DIR}/{{name}}", responses=media_answers("application/octet-stream"))
async def fragment(table_id: TableId, name: Fragment, request: Request) -> Response:
    """A mesh fragment (Draco); a token, or HTTP Basic with the token as password."""
    return await _fragment(request, table_id, name, None)
