"""L2 cache service (``/l2cache/api/v1``): attributes of level-2 nodes."""

from __future__ import annotations

import json

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from opencave.errors import BadRequest
from opencave.server.routers.chunkedgraph import MAX_JSON_IDS, _graph
from opencave.server.security import current_context, runtime_of
from opencave.services.auth import AuthContext
from opencave.services.l2cache import ATTRIBUTE_METADATA
from opencave.wire.endpoints import L2CACHE, route_path

router = APIRouter(tags=["l2cache"])
V1 = L2CACHE.for_version(1)


@router.post(route_path(V1["l2cache_data"]))
async def attributes(table_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    try:
        body = json.loads(await request.body())
        ids = body["l2_ids"]
        if not isinstance(ids, list):
            raise TypeError
        l2_ids = np.array([int(v) for v in ids], dtype=np.uint64)
    except (ValueError, TypeError, KeyError, OverflowError):
        raise BadRequest('The body must be {"l2_ids": [<L2 node ids>]}.', code="bad_body") from None
    if l2_ids.size > MAX_JSON_IDS:
        raise BadRequest(f"Too many ids ({l2_ids.size:,}); send at most {MAX_JSON_IDS:,}.", code="too_many_ids")
    names_param = request.query_params.get("attribute_names")
    names = [n for n in names_param.split(",") if n] if names_param else None
    handle = await run_in_threadpool(_graph, request, context, table_id)
    result = await run_in_threadpool(runtime_of(request).l2cache.attributes, handle, l2_ids, names)
    body = {str(k): v for k, v in result.items()}
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


@router.get(route_path(V1["l2cache_meta"]))
def attribute_metadata() -> dict[str, str]:
    return dict(ATTRIBUTE_METADATA)


@router.get(route_path(V1["l2cache_table_mapping"]))
def table_mapping(request: Request) -> dict[str, dict[str, str]]:
    runtime = runtime_of(request)
    base = runtime.settings.server_url
    return {
        table: {"cv_path": f"graphene://{base}/segmentation/table/{table}", "l2cache_id": f"l2cache_{table}"}
        for table in runtime.graphs.table_ids()
    }

