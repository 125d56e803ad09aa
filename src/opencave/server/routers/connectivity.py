"""Connectivity service (``/connectivity/api/v1/datastack/{datastack_name}/…``), an opencave
extension: connections, adjacency, partners, common partners, cell-type aggregates, paths and
diffs, at a version or a timestamp.

Thin: declared bodies (``wire.connectivity``), ``view`` on the datastack and ``read`` on every
table an answer reads (as a query of that table would need), the work off the event loop, and
the answer as Arrow IPC (``Accept: application/vnd.apache.arrow.stream``, what opencave's client
asks for) or JSON ``{"meta", "data"}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from opencave.errors import NotFound
from opencave.server.params import Name, media_answers
from opencave.server.security import current_context, runtime_of
from opencave.services.auth import AuthContext
from opencave.services.connectivity.service import ConnectivityService, Result
from opencave.wire import connectivity as wire
from opencave.wire.endpoints import CONNECTIVITY, route_path

router = APIRouter(tags=["connectivity"])
V1 = CONNECTIVITY.for_version(1)
NAMESPACE = "datastack"
ANSWERS = media_answers(wire.ARROW_STREAM, "application/json", description="The answer table and what it describes")
Datastack = Annotated[Name, Path(description="the datastack")]


def _service(request: Request, context: AuthContext, datastack: str) -> ConnectivityService:
    runtime = runtime_of(request)
    runtime.identities.require(context, "view", NAMESPACE, datastack)

    aligned_volume: list[str] = []

    def check_read(table: str, frozen: dict[str, Any] | None) -> None:
        # as a query of the table: its owner's permissions as set now, else the version's copy
        if not aligned_volume:
            aligned_volume.append(runtime.info.aligned_volume_of(datastack))
        try:
            current = runtime.annotations.permissions(aligned_volume[0], table, include_deleted=True)
        except NotFound:
            if frozen is None:
                raise
            current = frozen
        runtime.annotations.access.require(context.identity, current, "read")

    return ConnectivityService(runtime.materialize, runtime.live, runtime.graphs, check_read)


async def _answer(request: Request, work: Callable[[], Result]) -> Response:
    result = await run_in_threadpool(work)
    if wire.ARROW_STREAM in request.headers.get("accept", ""):
        return Response(wire.encode_arrow(result.table, result.meta), media_type=wire.ARROW_STREAM)
    return JSONResponse(wire.json_answer(result.table, result.meta))


def _register(operation: str, body_type: type, summary: str) -> None:
    """One POST route per operation: the declared body, the caller's permissions, the answer."""

    async def handler(datastack_name: Datastack, body: Any, request: Request, context: AuthContext = Depends(current_context)) -> Response:
        service = _service(request, context, datastack_name)
        return await _answer(request, lambda: getattr(service, operation)(datastack_name, body))

    handler.__name__ = operation
    handler.__annotations__["body"] = Annotated[body_type, Body()]  # a real type: annotations are text here
    router.add_api_route(route_path(V1[operation]), handler, methods=["POST"], responses=ANSWERS, summary=summary, description=summary)


for _operation, _body, _summary in (
    ("edges", wire.EdgesRequest, "Connections (pre root, post root, synapse count, summed size) among the given roots, or all"),
    ("adjacency", wire.AdjacencyRequest, "The non-zero cells of the roots × roots matrix of synapse counts"),
    ("partners", wire.PartnersRequest, "Each root's input or output partners, strongest first"),
    ("common_partners", wire.PartnersRequest, "The partners every given root shares"),
    ("cell_type_matrix", wire.CellTypeRequest, "Synapses, connections and neurons per (presynaptic type, postsynaptic type)"),
    ("paths", wire.PathsRequest, "Directed paths of up to max_hops connections from sources to targets"),
    ("diff", wire.DiffRequest, "Partners gained and lost by roots between two moments, roots followed through lineage"),
):
    _register(_operation, _body, _summary)
