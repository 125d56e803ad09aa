"""Volume files (``/volumes/{table_id}/ws/…``): the watershed in Neuroglancer precomputed
format, so cloud-volume and Neuroglancer read it over HTTP. The same files are under
``/volumes/{table_id}/access/{key}/ws/…``, the ``data_dir`` the graph's info gives: the key
stands for the token there (see ``opencave.services.auth.volume_keys``).

The graph's EM image (``/volumes/{table_id}/image/…``, a demo datastack's ``image_source``) is
served the same way and under the same rules: JPEG chunks, built from the world on first use.

Files are stored gzip-compressed and sent as they are with ``Content-Encoding: gzip``. Besides
the usual token forms, HTTP Basic authentication with the token as password is accepted, which
is how cloud-volume authenticates to plain HTTP(S) sources.
"""

from __future__ import annotations

import base64
import json
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from opencave.errors import NotFound, Unauthorized
from opencave.server.params import MAX_NAME, media_answers
from opencave.server.routers.chunkedgraph import NAMESPACE
from opencave.server.security import authenticate, presented_token, runtime_of
from opencave.services.auth import AuthContext
from opencave.services.auth.volume_keys import user_of_volume_key, volume_key
from opencave.services.imagery import ImageVolume, image_volume
from opencave.services.imagery.volume import ImageFile
from opencave.services.segmentation.volume import WatershedVolume

router = APIRouter(tags=["volumes"])
MAX_VOLUME_KEY = 64  # "u<user id>-<32 hex digits>"
MAX_FILE_PATH = 512
READ_METHODS = ["GET", "HEAD"]
WRITE_METHODS = ["POST", "PUT", "DELETE", "PATCH"]


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            _, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return password or None
    return presented_token(request)


def volume_url(request: Request, context: AuthContext, table_id: str) -> str:
    """The ``data_dir`` to give this caller: with an access key naming them when tokens are
    required, since cloud-volume reads the files there without sending one."""
    runtime = runtime_of(request)
    base = f"{runtime.settings.server_url}/volumes/{table_id}"
    if not runtime.settings.auth_enabled:
        return f"{base}/ws"
    return f"{base}/access/{volume_key(runtime.secret_key, context.identity.id, table_id)}/ws"


def require_volume_access(request: Request, table_id: str, key: str | None = None) -> None:
    """Raise unless the request may read the graph's volume files: by the access key in its URL
    (the key's user must still be allowed to view the graph) or by a token."""
    runtime = runtime_of(request)
    if key is not None and runtime.settings.auth_enabled:
        user_id = user_of_volume_key(runtime.secret_key, key, table_id)
        if user_id is None:
            raise Unauthorized(
                f"The access key in this volume URL is not valid for {table_id}; read the graph's info "
                "again (GET /segmentation/table/{table_id}/info) for a current data_dir.",
                code="invalid_volume_key",
            )
        context = runtime.identities.context_for_user(user_id)
    else:
        context = authenticate(request, _token(request))
    runtime.identities.require(context, "view", NAMESPACE, table_id)


def _no_such_file(table_id: str, path: str) -> NotFound:
    return NotFound(f"No volume file {path!r} in {table_id}; chunks are named like 8_8_40/0-64_0-64_0-16.", code="no_such_file")


VolumeTable = Annotated[str, Path(min_length=1, max_length=MAX_NAME, description="The graph's table id.")]
VolumeKey = Annotated[str, Path(max_length=MAX_VOLUME_KEY, description="The access key of the graph's data_dir.")]
FilePath = Annotated[str, Path(max_length=MAX_FILE_PATH, description="A file of the precomputed volume: info, or a chunk such as 8_8_40/0-64_0-64_0-16.")]


async def _watershed_file(request: Request, table_id: str, path: str, key: str | None) -> Response:
    if not WatershedVolume.can_exist(path):
        raise _no_such_file(table_id, path)
    runtime = runtime_of(request)
    require_volume_access(request, table_id, key)
    handle = await run_in_threadpool(runtime.graphs.graph, table_id)
    if path == "info":
        return Response(json.dumps(handle.volume.info), media_type="application/json")
    data = await run_in_threadpool(handle.volume.raw_file, path)
    if data is None:
        raise _no_such_file(table_id, path)
    return Response(data, media_type="application/octet-stream", headers={"Content-Encoding": "gzip"})


@router.api_route("/volumes/{table_id}/access/{key}/ws/{path:path}", include_in_schema=False, methods=READ_METHODS)
async def keyed_watershed_file(table_id: VolumeTable, key: VolumeKey, path: FilePath, request: Request) -> Response:
    """A watershed file under the graph's data_dir, the access key standing for the token."""
    return await _watershed_file(request, table_id, path, key)


@router.head("/volumes/{table_id}/ws/{path:path}", include_in_schema=False)
@router.get("/volumes/{table_id}/ws/{path:path}", responses=media_answers("application/json", "application/octet-stream"))
async def watershed_file(table_id: VolumeTable, path: FilePath, request: Request) -> Response:
    """A watershed file (gzip-encoded chunk or the JSON info); a token, or HTTP Basic with the token as password."""
    return await _watershed_file(request, table_id, path, None)


async def _image_file(request: Request, table_id: str, path: str, key: str | None) -> Response:
    """An image file after the watershed's access check; the first request of a world without an
    image waits for it to be built."""
    if not ImageVolume.can_exist(path):
        raise NotFound(f"No image file {path!r} in {table_id}; chunks are named like 8_8_40/0-128_0-128_0-16.", code="no_such_file")
    runtime = runtime_of(request)
    require_volume_access(request, table_id, key)

    def read() -> ImageFile | None:
        try:
            volume = image_volume(runtime.graphs.graph(table_id).world_dir)
        except FileNotFoundError:
            return None
        return volume.raw_file(path)

    found = await run_in_threadpool(read)
    if found is None:
        raise NotFound(f"No image file {path!r} in {table_id}; the scales and chunk names are in its info.", code="no_such_file")
    return Response(found.data, media_type=found.media_type, headers={"Content-Encoding": "gzip"} if found.gzipped else None)


@router.api_route("/volumes/{table_id}/access/{key}/image/{path:path}", include_in_schema=False, methods=READ_METHODS)
async def keyed_image_file(table_id: VolumeTable, key: VolumeKey, path: FilePath, request: Request) -> Response:
    """An EM image file, the access key standing for the token."""
    return await _image_file(request, table_id, path, key)


@router.head("/volumes/{table_id}/image/{path:path}", include_in_schema=False)
@router.get("/volumes/{table_id}/image/{path:path}", responses=media_answers("application/json", "image/jpeg"))
async def image_file(table_id: VolumeTable, path: FilePath, request: Request) -> Response:
    """An EM image file (a JPEG chunk or the JSON info), made from the graph's world on first use;
    a token, or HTTP Basic with the token as password."""
    return await _image_file(request, table_id, path, None)


@router.api_route("/volumes/{table_id}/access/{key}/ws/{path:path}", methods=WRITE_METHODS, include_in_schema=False)
@router.api_route("/volumes/{table_id}/ws/{path:path}", methods=WRITE_METHODS, include_in_schema=False)
@router.api_route("/volumes/{table_id}/access/{key}/image/{path:path}", methods=WRITE_METHODS, include_in_schema=False)
@router.api_route("/volumes/{table_id}/image/{path:path}", methods=WRITE_METHODS, include_in_schema=False)
def read_only(request: Request) -> None:
    """Volume files are read-only: other methods answer 405 naming the allowed ones (rather than
    falling through to the 501 of the volume service this server does not provide)."""
    raise HTTPException(405, headers={"Allow": "GET, HEAD"})
