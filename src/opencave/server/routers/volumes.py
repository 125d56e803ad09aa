"""Volume files (``/volumes/{table_id}/ws/…``): the watershed in Neuroglancer precomputed
format, so cloud-volume and Neuroglancer read it over HTTP.

Files are stored gzip-compressed and sent as they are with ``Content-Encoding: gzip``. Besides
the usual token forms, HTTP Basic authentication with the token as password is accepted, which
is how cloud-volume authenticates to plain HTTP(S) sources.
"""

from __future__ import annotations

import base64
import json

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from opencave.errors import NotFound
from opencave.server.routers.chunkedgraph import NAMESPACE
from opencave.server.security import authenticate, presented_token, runtime_of
from opencave.services.segmentation.volume import WatershedVolume

router = APIRouter(tags=["volumes"])


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            _, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return password or None
    return presented_token(request)


def _no_such_file(table_id: str, path: str) -> NotFound:
    return NotFound(f"No volume file {path!r} in {table_id}; chunks are named like 8_8_40/0-64_0-64_0-16.", code="no_such_file")


@router.get("/volumes/{table_id}/ws/{path:path}")
async def watershed_file(table_id: str, path: str, request: Request) -> Response:
    if not WatershedVolume.can_exist(path):
        raise _no_such_file(table_id, path)
    runtime = runtime_of(request)
    context = authenticate(request, _token(request))
    runtime.identities.require(context, "view", NAMESPACE, table_id)
    handle = await run_in_threadpool(runtime.graphs.graph, table_id)
    if path == "info":
        return Response(json.dumps(handle.volume.info), media_type="application/json")
    data = await run_in_threadpool(handle.volume.raw_file, path)
    if data is None:
        raise _no_such_file(table_id, path)
    return Response(data, media_type="application/octet-stream", headers={"Content-Encoding": "gzip"})
