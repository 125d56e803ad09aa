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
            current = runtime.annotations.table_metadata(aligned_volume[0], table, include_deleted=True)
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


@router.post(route_path(V1["edges"]), responses=ANSWERS)
async def edges(datastack_name: Datastack, body: Annotated[wire.EdgesRequest, Body()], request: Request, context: AuthContext = Depends(current_context)) -> Response:
    """Connections (pre root, post root, synapse count, summed size) among the given roots, or all."""
    service = _service(request, context, datastack_name)
    return await _answer(request, lambda: service.edges(datastack_name, body))


@router.post(route_path(V1["adjacency"]), responses=ANSWERS)
async def adjacency(datastack_name: Datastack, body: Annotated[wire.AdjacencyRequest, Body()], request: Request, context: AuthContext = Depends(current_context)) -> Response:
    """The non-zero cells of the roots × roots matrix of synapse counts."""
    service = _service(request, context, datastack_name)
    return await _answer(request, lambda: service.adjacency(datastack_name, body))


@router.post(route_path(V1["partners"]), responses=ANSWERS)
async def partners(datastack_name: Datastack, body: Annotated[wire.PartnersRequest, Body()], request: Request, context: AuthContext = Depends(current_context)) -> Response:
    """Each root's input or output partners, strongest first."""
    service = _service(request, context, datastack_name)
    return await _answer(request, lambda: service.partners(datastack_name, body))


@router.post(route_path(V1["common_partners"]), responses=ANSWERS)
async def common_partners(datastack_name: Datastack, body: Annotated[wire.PartnersRequest, Body()], request: Request, context: AuthContext = Depends(current_context)) -> Response:
    """The partners every given root shares."""
    service = _service(request, context, datastack_name)
    return await _answer(request, lambda: service.common_partners(datastack_name, body))


@router.post(route_path(V1["cell_type_matrix"]), responses=ANSWERS)
async def cell_type_matrix(datastack_name: Datastack, body: Annotated[wire.CellTypeRequest, Body()], request: Request, context: AuthContext = Depends(current_context)) -> Response:
    """Synapses, connections and neurons per (presynaptic type, postsynaptic type)."""
    service = _service(request, context, datastack_name)
    return await _answer(request, lambda: service.cell_type_matrix(datastack_name, body))


@router.post(route_path(V1["paths"]), responses=ANSWERS)
async def paths(datastack_name: Datastack, body: Annotated[wire.PathsRequest, Body()], request: Request, context: AuthContext = Depends(current_context)) -> Response:
    """Directed paths of up to ``max_hops`` connections from sources to targets."""
    service = _service(request, context, datastack_name)
    return await _answer(request, lambda: service.paths(datastack_name, body))


@router.post(route_path(V1["diff"]), responses=ANSWERS)
async def diff(datastack_name: Datastack, body: Annotated[wire.DiffRequest, Body()], request: Request, context: AuthContext = Depends(current_context)) -> Response:
    """Partners gained and lost by roots between two moments, roots followed through lineage."""
    service = _service(request, context, datastack_name)
    return await _answer(request, lambda: service.diff(datastack_name, body))
