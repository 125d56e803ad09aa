"""L2 cache service (``/l2cache/api/v1``): attributes of level-2 nodes."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BeforeValidator, WithJsonSchema
from starlette.concurrency import run_in_threadpool

from opencave.server.params import Flag, NodeIdList, invalid, node_id_array
from opencave.server.routers.chunkedgraph import JsonBody, TableId, _graph
from opencave.server.security import current_context, runtime_of
from opencave.services.auth import AuthContext
from opencave.services.l2cache import ATTRIBUTE_METADATA, ATTRIBUTE_NAMES
from opencave.wire.endpoints import L2CACHE, route_path

router = APIRouter(tags=["l2cache"], strict_content_type=False)
V1 = L2CACHE.for_version(1)
MAX_NAMES_LENGTH = 1000


class AttributesBody(JsonBody):
    l2_ids: NodeIdList


def _attribute_names(value: Any) -> list[str] | None:
    if isinstance(value, list):  # repeated parameters
        value = ",".join(str(v) for v in value)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_NAMES_LENGTH:
        raise invalid("unknown_attribute", f"attribute_names is a comma-separated list of at most {MAX_NAMES_LENGTH} characters; known: {list(ATTRIBUTE_NAMES)}.")
    return [n for n in value.split(",") if n] or None


AttributeNames = Annotated[
    list[str] | None,
    BeforeValidator(_attribute_names),
    WithJsonSchema({"type": "string", "maxLength": MAX_NAMES_LENGTH, "example": ",".join(ATTRIBUTE_NAMES[:2])}),
    Query(description=f"Comma-separated attributes to answer (default all): {', '.join(ATTRIBUTE_NAMES)}."),
]


@router.post(route_path(V1["l2cache_data"]))
async def attributes(
    table_id: TableId,
    body: AttributesBody,
    request: Request,
    attribute_names: AttributeNames = None,
    int64_as_str: Annotated[Flag, Query(description="Accepted as caveclient sends it; L2 ids are JSON object keys, so strings anyway.")] = False,
    context: AuthContext = Depends(current_context),
) -> Response:
    """``{l2_id: {attribute: value}}`` for each id; ``{}`` for ids that are not L2 nodes."""
    handle = await run_in_threadpool(_graph, request, context, table_id)
    result = await run_in_threadpool(runtime_of(request).l2cache.attributes, handle, node_id_array(body.l2_ids), attribute_names)
    answer = {str(k): v for k, v in result.items()}
    return Response(json.dumps(answer, separators=(",", ":")), media_type="application/json")


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

