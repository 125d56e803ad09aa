"""ChunkedGraph service (``/segmentation``): PyChunkedGraph's v1 table API.

Every path, query and body parameter is declared (types from ``server/params.py``), so FastAPI
validates them and the OpenAPI document lists them; handlers check permissions, call
``opencave.services.chunkedgraph`` off the event loop and encode answers. caveclient sends its
JSON bodies without a Content-Type (and some with GET), so bodies are read as JSON either way.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from itertools import chain
from typing import Annotated, Any, TypeVar

import numpy as np
import orjson
import pandas as pd
from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator
from starlette.concurrency import run_in_threadpool

from opencave.errors import BadRequest
from opencave.server.params import (
    MAX_NAME,
    Bounds,
    Coordinate,
    Flag,
    _int32,
    NodeId,
    NodeIdList,
    NodeIdOrZeroList,
    RowId,
    RowIdList,
    UnixTime,
    binary_body,
    invalid,
    media_answers,
    node_id_array,
    text,
)
from opencave.server.security import current_context, runtime_of
from opencave.services.auth import AuthContext
from opencave.services.chunkedgraph import edits, paths, queries
from opencave.services.chunkedgraph.index import GraphIndex, Operation
from opencave.services.chunkedgraph.lookup import nm_to_voxels, resolve_supervoxel
from opencave.services.chunkedgraph.service import GraphHandle
from opencave.wire.endpoints import CHUNKEDGRAPH, route_path
from opencave.wire.json_chunks import json_chunks
from opencave.wire.versions import CHUNKEDGRAPH_API_VERSIONS, CHUNKEDGRAPH_SERVER_VERSION

router = APIRouter(tags=["chunkedgraph"], strict_content_type=False)
V1 = CHUNKEDGRAPH.for_version(1)
TABLE = route_path("{cg_server_address}/segmentation/api/v1/table/{table_id}")
NAMESPACE = "pychunkedgraph"
MAX_BINARY_IDS = 20_000_000
FUTURE_TOLERANCE_S = 60.0
MAX_EDIT_POINTS = 10_000  # sources or sinks of one split
MAX_LAYER = 255  # a node id's layer field is 8 bits
FAST_JSON_IDS = 1_000_000  # ~20 MB of text at most, made at once
INLINE_IDS = 100_000  # answers encoded on the event loop (~2 ms of JSON at most)
OCTET_STREAM = "application/octet-stream"


def _path(key: str) -> str:
    return route_path(V1[key])


# -- declared inputs ---------------------------------------------------------------------------
TableId = Annotated[str, Path(min_length=1, max_length=MAX_NAME, description="The graph's table id, e.g. opencave_demo.")]
RootId = Annotated[NodeId, Path(description="A root id (or any node id where the endpoint says so).")]
Timestamp = Annotated[UnixTime, Query(description="The moment to answer for (unix seconds); default now.")]
def _layer(value: Any) -> int | None:
    if value is None or value == "" or value == "None":
        return None
    layer = _int32(value)
    if not 1 <= layer <= MAX_LAYER:
        raise invalid("bad_layer", f"stop_layer must be a layer between 1 (supervoxels) and {MAX_LAYER}; got {layer}.")
    return layer


StopLayer = Annotated[
    int | None,
    BeforeValidator(_layer),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_LAYER}),
    Query(description="Stop at this layer (1 = supervoxels)."),
]
QueryBounds = Annotated[Bounds, Query(description="Only nodes whose chunks meet x0-x1_y0-y1_z0-z1 (voxels).")]


def _int64_as_str(int64_as_str: Annotated[Flag, Query(description="Ids as JSON strings (for clients without 64-bit integers).")] = False) -> bool:
    return int64_as_str


AsStr = Annotated[bool, Depends(_int64_as_str)]


def _delimiter(value: Any) -> str:
    if not isinstance(value, str) or len(value) != 1 or not value.isprintable():
        raise invalid("bad_delimiter", f"delimiter must be one printable character (the separator between date and time, e.g. 'T'); got {str(value)[:40]!r}.")
    return value


Delimiter = Annotated[
    str, BeforeValidator(_delimiter), Query(description="One character between date and time in the ISO answer.", min_length=1, max_length=1)
]


class JsonBody(BaseModel):
    """A JSON body; keys caveclient sends besides the declared ones are ignored, as CAVE does."""

    model_config = ConfigDict(extra="ignore")


class NodeIdsBody(JsonBody):
    node_ids: NodeIdOrZeroList  # 0 ("no segment", e.g. an unassigned annotation) answers as such


class RootIdsBody(JsonBody):
    root_ids: NodeIdOrZeroList


class RemeshBody(JsonBody):
    new_lvl2_ids: NodeIdList


class OperationBody(JsonBody):
    operation_id: RowId


def _edit_point(value: Any) -> Any:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise invalid("bad_body", f"Each point must be [node_id, x, y, z] (coordinates in nm); got {str(value)[:80]}.")
    return value


EditPoint = Annotated[tuple[NodeId, Coordinate, Coordinate, Coordinate], BeforeValidator(_edit_point)]
"""``[node_id, x_nm, y_nm, z_nm]``: a node (a supervoxel, or the object to find one of) and a point."""


def _points(count: int | None, what: str):
    def check(value: Any) -> Any:
        if not isinstance(value, list) or not value or (count is not None and len(value) != count):
            size = "exactly two" if count == 2 else "a non-empty list of"
            raise invalid("bad_body", f"{what} takes {size} [node_id, x, y, z] points (coordinates in nm).")
        return value

    return Annotated[list[EditPoint], BeforeValidator(check), Field(min_length=count or 1, max_length=count or MAX_EDIT_POINTS)]


class SplitBody(JsonBody):
    @model_validator(mode="before")
    @classmethod
    def _both_sides(cls, value: Any) -> Any:
        if not isinstance(value, dict) or "sources" not in value or "sinks" not in value:
            raise invalid("bad_body", 'A split body is {"sources": [[id, x, y, z], …], "sinks": [[id, x, y, z], …]} (nm).')
        return value

    sources: _points(None, "sources")  # type: ignore[valid-type]
    sinks: _points(None, "sinks")  # type: ignore[valid-type]


MergePoints = _points(2, "A merge")
PathPoints = _points(2, "find_path")

ModelT = TypeVar("ModelT", bound=BaseModel)


def _parse_json(model: type[ModelT], raw: bytes) -> ModelT:
    """A raw body validated as ``model`` (for endpoints whose body is JSON or binary)."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        raise RequestValidationError(error.errors(include_url=False)) from None


# -- encoding ----------------------------------------------------------------------------------
def _json(payload: Any, as_str: bool = False, status: int = 200, headers: dict | None = None) -> Response:
    """A JSON answer; one holding more than a megabyte of text is streamed as it is encoded,
    so big id arrays never exist as Python ints or one string (see ``wire.json_chunks``)."""
    chunks = json_chunks(payload, as_str)
    first = next(chunks)
    second = next(chunks, None)
    if second is None:
        return Response(first, status_code=status, media_type="application/json", headers=headers)
    return StreamingResponse(chain((first, second), chunks), status_code=status, media_type="application/json", headers=headers)


def _binary(ids: np.ndarray) -> Response:
    return Response(ids.astype("<u8").tobytes(), media_type=OCTET_STREAM)


def _wants_binary(request: Request) -> bool:
    """Whether the caller asked for raw ids (``Accept: application/octet-stream``, as opencave's
    client does); caveclient accepts anything and gets JSON."""
    return request.headers.get("accept", "").split(",")[0].split(";")[0].strip() == OCTET_STREAM


def _ids(request: Request, key: str, ids: np.ndarray, as_str: bool) -> Response:
    """An answer of one id array: raw little-endian uint64 if asked for, else ``{key: ids}``.

    JSON of up to ``FAST_JSON_IDS`` integer ids is made by orjson in one call, about five times
    faster than slice-wise encoding and the same text; bigger answers stream (``_json``)."""
    if _wants_binary(request):
        return _binary(ids)
    if not as_str and ids.dtype.kind in "ui" and ids.ndim == 1 and ids.size <= FAST_JSON_IDS:
        text = orjson.dumps({key: np.ascontiguousarray(ids)}, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE)
        return Response(text, media_type="application/json")
    return _json({key: ids}, as_str)


# -- request helpers -------------------------------------------------------------------------
def _graph(request: Request, context: AuthContext, table_id: str, permission: str = "view") -> GraphHandle:
    runtime = runtime_of(request)
    runtime.identities.require(context, permission, NAMESPACE, table_id)
    return runtime.graphs.graph(table_id)


def _checked_time(index: GraphIndex, value: float | None, name: str = "timestamp") -> float:
    """A request timestamp (default now), refused before the graph existed or in the future."""
    now = time.time()
    if value is None:
        return now
    if value < index.created:
        raise BadRequest(
            f"{name} {value} is before the oldest timestamp of this graph ({index.created}); "
            "ask for a time after the graph was created (see oldest_timestamp).",
            code="timestamp_too_old",
        )
    if value > now + FUTURE_TOLERANCE_S:
        raise BadRequest(f"{name} {value} is in the future; ask for a time up to now.", code="timestamp_in_future")
    return min(value, now)


def _seq(index: GraphIndex, value: float | None, name: str = "timestamp") -> int:
    return index.seq_at(_checked_time(index, value, name))


def _edit_answer(operation: Operation) -> dict[str, Any]:
    return {"operation_id": operation.op_id, "new_root_ids": np.array(operation.new_roots, dtype=np.uint64)}


def _user(context: AuthContext) -> str:
    return str(context.identity.id)


def _resolve(handle: GraphHandle, points: list[tuple[int, float, float, float]], seq: int) -> tuple[np.ndarray, np.ndarray]:
    index = handle.index
    volume = handle.volume
    svs, coords = [], []
    for node, *point in points:
        voxel = nm_to_voxels(index, point)
        svs.append(resolve_supervoxel(index, node, voxel, seq, volume.supervoxels_near))
        coords.append(voxel)
    return np.array(svs, dtype=np.uint64), np.array(coords, dtype=np.int64)


def _binary_ids(raw: bytes) -> np.ndarray:
    if len(raw) % 8:
        raise BadRequest("The body must be little-endian uint64 node ids (a multiple of 8 bytes).", code="bad_body")
    if len(raw) // 8 > MAX_BINARY_IDS:
        raise BadRequest(f"Too many ids; send at most {MAX_BINARY_IDS:,} per request.", code="too_many_ids")
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64)


# -- service-level endpoints -------------------------------------------------------------------
@router.get(route_path(CHUNKEDGRAPH.common["get_api_versions"]))
def api_versions() -> list[int]:
    return CHUNKEDGRAPH_API_VERSIONS


@router.get(route_path(CHUNKEDGRAPH.common["get_version"]))
def version() -> str:
    return CHUNKEDGRAPH_SERVER_VERSION


@router.get(route_path(CHUNKEDGRAPH.common["info"]))
def table_info(table_id: TableId, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    """The graph's info (watershed geometry, layers, data_dir with an access key)."""
    from opencave.server.routers.volumes import volume_url

    handle = _graph(request, context, table_id)
    return _json(runtime_of(request).graphs.info(handle, volume_url(request, context, table_id)))


# -- roots -------------------------------------------------------------------------------------
@router.get(_path("handle_root"))
def root(
    table_id: TableId,
    supervoxel_id: Annotated[NodeId, Path(description="Any node id; usually a supervoxel.")],
    request: Request,
    as_str: AsStr,
    timestamp: Timestamp = None,
    stop_layer: StopLayer = None,
    context: AuthContext = Depends(current_context),
) -> Response:
    index = _graph(request, context, table_id).index
    found = queries.root(index, supervoxel_id, _seq(index, timestamp), stop_layer)
    return _json({"root_id": np.uint64(found)}, as_str)


@router.get(_path("label_roots"))
def label_roots(
    table_id: TableId,
    label: Annotated[NodeId, Path(description="A label of the segmentation the graph was ingested from.")],
    request: Request,
    as_str: AsStr,
    timestamp: Timestamp = None,
    context: AuthContext = Depends(current_context),
) -> Response:
    """The roots holding an original label of an ingested segmentation (largest share first),
    the voxels of the label in each, and the supervoxels the label became."""
    handle = _graph(request, context, table_id)
    if handle.labels is None:
        raise BadRequest(f"Graph {table_id} was not ingested from a segmentation, so it has no original labels.", code="not_ingested")
    found = handle.labels.roots(handle.index, label, _seq(handle.index, timestamp))
    return _json(
        {"label": np.uint64(found.label), "root_ids": found.root_ids, "voxels": found.voxels, "supervoxel_ids": found.supervoxels},
        as_str,
    )


@router.post(_path("get_roots"), openapi_extra=binary_body("Little-endian uint64 node ids."), responses=media_answers(OCTET_STREAM))
async def roots_binary(
    table_id: TableId,
    request: Request,
    timestamp: Timestamp = None,
    stop_layer: StopLayer = None,
    assert_roots: Annotated[Flag, Query(description="Refuse ids that do not exist at that time (else their root is 0).")] = False,
    context: AuthContext = Depends(current_context),
) -> Response:
    """Roots of many nodes, binary in and out (0 for ids unknown at that time)."""
    ids = _binary_ids(await request.body())
    index = (await run_in_threadpool(_graph, request, context, table_id)).index
    result = await run_in_threadpool(queries.roots, index, ids, _seq(index, timestamp), stop_layer)
    if assert_roots and (result == 0).any():
        raise BadRequest(f"Node {int(ids[result == 0][0])} does not exist in this graph at that time.", code="unknown_node")
    return _binary(result)


@router.post(_path("handle_roots"), responses=media_answers("application/json", OCTET_STREAM))
async def roots_json(
    table_id: TableId,
    body: NodeIdsBody,
    request: Request,
    as_str: AsStr,
    timestamp: Timestamp = None,
    stop_layer: StopLayer = None,
    as_binary: Annotated[str, Query(max_length=16, description="root_ids or true: answer little-endian uint64 roots.")] = "",
    context: AuthContext = Depends(current_context),
) -> Response:
    index = (await run_in_threadpool(_graph, request, context, table_id)).index
    result = await run_in_threadpool(queries.roots, index, node_id_array(body.node_ids), _seq(index, timestamp), stop_layer)
    if as_binary in ("root_ids", "true", "True", "1"):
        return _binary(result)
    return _json({"root_ids": result}, as_str)


# -- hierarchy ---------------------------------------------------------------------------------
@router.get(_path("handle_children"))
def children(table_id: TableId, root_id: RootId, request: Request, as_str: AsStr, context: AuthContext = Depends(current_context)) -> Response:
    index = _graph(request, context, table_id).index
    return _json({"children_ids": queries.children(index, root_id)}, as_str)


@router.get(_path("leaves_from_root"), responses=media_answers("application/json", OCTET_STREAM))
async def leaves(
    table_id: TableId,
    root_id: RootId,
    request: Request,
    as_str: AsStr,
    stop_layer: StopLayer = None,
    bounds: QueryBounds = None,
    context: AuthContext = Depends(current_context),
) -> Response:
    """The supervoxels (or nodes at ``stop_layer``) below a node; raw uint64 ids with
    ``Accept: application/octet-stream``.

    With the graph's index up to date, the walk (~0.2 ms for 15,000 supervoxels) and the
    encoding run on the event loop: a hop to the thread pool would cost as much again. Big
    answers are encoded on a worker thread."""
    runtime = runtime_of(request)
    runtime.identities.require(context, "view", NAMESPACE, table_id)
    handle = runtime.graphs.current(table_id, context.generations.graph) or await run_in_threadpool(runtime.graphs.graph, table_id)
    found = queries.leaves(handle.index, root_id, stop_layer or 1, bounds)
    if found.size <= INLINE_IDS:
        return _ids(request, "leaf_ids", found, as_str)
    return await run_in_threadpool(_ids, request, "leaf_ids", found, as_str)


@router.post(_path("leaves_many"))
@router.post(TABLE + "/leaves_many", include_in_schema=False)
async def leaves_many(
    table_id: TableId,
    body: NodeIdsBody,
    request: Request,
    as_str: AsStr,
    stop_layer: StopLayer = None,
    bounds: QueryBounds = None,
    context: AuthContext = Depends(current_context),
) -> Response:
    index = (await run_in_threadpool(_graph, request, context, table_id)).index
    result = await run_in_threadpool(queries.leaves_many, index, node_id_array(body.node_ids), stop_layer or 1, bounds)
    return _json(result, as_str)


@router.post(
    _path("minimal_covering_nodes"),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": '{"node_ids": [...]} or, with is_binary, little-endian uint64 node ids.',
            "content": {
                "application/json": {"schema": NodeIdsBody.model_json_schema()},
                OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
    responses=media_answers("application/json", OCTET_STREAM),
)
async def minimal_covering_nodes(
    table_id: TableId,
    request: Request,
    as_str: AsStr,
    timestamp: Timestamp = None,
    is_binary: Annotated[Flag, Query(description="The body is little-endian uint64 ids.")] = False,
    as_array: Annotated[Flag, Query(description="Answer little-endian uint64 ids.")] = False,
    context: AuthContext = Depends(current_context),
) -> Response:
    """The fewest nodes whose supervoxels are exactly those of the given nodes."""
    raw = await request.body()
    ids = _binary_ids(raw) if is_binary else node_id_array(_parse_json(NodeIdsBody, raw).node_ids)
    index = (await run_in_threadpool(_graph, request, context, table_id)).index
    result = await run_in_threadpool(queries.minimal_covering_nodes, index, ids, _seq(index, timestamp))
    return _binary(result) if as_array else _json(result, as_str)


@router.get(_path("get_subgraph"))
def subgraph(
    table_id: TableId, root_id: RootId, request: Request, as_str: AsStr, bounds: QueryBounds = None, context: AuthContext = Depends(current_context)
) -> Response:
    index = _graph(request, context, table_id).index
    pairs, affinities, areas = queries.subgraph(index, root_id, bounds)
    return _json({"nodes": pairs, "affinities": affinities, "areas": areas}, as_str)


@router.get(_path("lvl2_graph"))
def level2_graph(
    table_id: TableId, root_id: RootId, request: Request, as_str: AsStr, bounds: QueryBounds = None, context: AuthContext = Depends(current_context)
) -> Response:
    index = _graph(request, context, table_id).index
    pairs = queries.level2_graph(index, root_id, bounds)
    return _json({"edge_graph": pairs}, as_str, headers={"Used-Bounds": str(bounds is not None)})


@router.get(_path("contact_sites"))
def contact_sites(
    table_id: TableId,
    root_id: RootId,
    request: Request,
    as_str: AsStr,
    bounds: QueryBounds = None,
    partners: Annotated[Flag, Query(description="Group the contacts by partner object.")] = True,
    context: AuthContext = Depends(current_context),
) -> Response:
    index = _graph(request, context, table_id).index
    return _json(queries.contact_sites(index, root_id, bounds, partners), as_str)


# -- edits -------------------------------------------------------------------------------------
@router.post(_path("do_merge"))
async def merge(
    table_id: TableId,
    points: Annotated[MergePoints, Body(description="[[id_a, x, y, z], [id_b, x, y, z]] (nm).")],
    request: Request,
    as_str: AsStr,
    context: AuthContext = Depends(current_context),
) -> Response:
    handle = await run_in_threadpool(_graph, request, context, table_id, "edit")

    def plan(index: GraphIndex) -> edits.EditPlan:
        svs, coords = _resolve(handle, points, index.seq)
        details = {"source_ids": [int(svs[0])], "sink_ids": [int(svs[1])], "source_coords": [coords[0].tolist()], "sink_coords": [coords[1].tolist()]}
        return edits.plan_merge(index, int(svs[0]), int(svs[1]), details)

    operation = await run_in_threadpool(runtime_of(request).graphs.commit, handle, plan, _user(context))
    return _json(_edit_answer(operation), as_str)


def _find_cut(handle: GraphHandle, index: GraphIndex, body: SplitBody, mincut: bool) -> tuple[edits.SplitCut, dict]:
    src, src_coords = _resolve(handle, body.sources, index.seq)
    snk, snk_coords = _resolve(handle, body.sinks, index.seq)
    cut = edits.find_split(index, src, snk, src_coords, snk_coords, mincut=mincut)
    details = {
        "source_ids": src.tolist(),
        "sink_ids": snk.tolist(),
        "source_coords": src_coords.tolist(),
        "sink_coords": snk_coords.tolist(),
        "bb_offset": list(edits.DEFAULT_BB_OFFSET),
    }
    return cut, details


@router.post(_path("execute_split"))
async def split(
    table_id: TableId,
    body: SplitBody,
    request: Request,
    as_str: AsStr,
    mincut: Annotated[Flag, Query(description="Cut by minimum affinity (else remove the edges between sources and sinks).")] = True,
    context: AuthContext = Depends(current_context),
) -> Response:
    handle = await run_in_threadpool(_graph, request, context, table_id, "edit")

    def plan(index: GraphIndex) -> edits.EditPlan:
        cut, details = _find_cut(handle, index, body, mincut)
        return edits.plan_split(index, cut, details)

    operation = await run_in_threadpool(runtime_of(request).graphs.commit, handle, plan, _user(context))
    return _json(_edit_answer(operation), as_str)


@router.post(_path("preview_split"))
async def split_preview(table_id: TableId, body: SplitBody, request: Request, as_str: AsStr, context: AuthContext = Depends(current_context)) -> Response:
    handle = await run_in_threadpool(_graph, request, context, table_id)
    cut, _ = await run_in_threadpool(_find_cut, handle, handle.index, body, True)
    return _json({"supervoxel_connected_components": cut.local_components, "illegal_split": not cut.separated}, as_str)


async def _undo_redo(table_id: str, body: OperationBody, request: Request, context: AuthContext, as_str: bool, redo: bool) -> Response:
    handle = await run_in_threadpool(_graph, request, context, table_id, "edit")
    operation = await run_in_threadpool(
        runtime_of(request).graphs.commit, handle, lambda index: edits.plan_undo_redo(index, body.operation_id, redo), _user(context)
    )
    return _json(_edit_answer(operation), as_str)


@router.post(_path("undo"))
async def undo(table_id: TableId, body: OperationBody, request: Request, as_str: AsStr, context: AuthContext = Depends(current_context)) -> Response:
    return await _undo_redo(table_id, body, request, context, as_str, redo=False)


@router.post(TABLE + "/redo")
async def redo(table_id: TableId, body: OperationBody, request: Request, as_str: AsStr, context: AuthContext = Depends(current_context)) -> Response:
    return await _undo_redo(table_id, body, request, context, as_str, redo=True)


# -- history and lineage -----------------------------------------------------------------------
@router.get(_path("operation_details"))
def operation_details(
    table_id: TableId,
    operation_ids: Annotated[RowIdList, Query(description="Operation ids, e.g. [1, 2] or 1,2.")],
    request: Request,
    as_str: AsStr,
    context: AuthContext = Depends(current_context),
) -> Response:
    if not operation_ids:
        raise BadRequest("operation_ids must name at least one operation, e.g. operation_ids=[1, 2].")
    index = _graph(request, context, table_id).index
    return _json(queries.operation_details(index, operation_ids), as_str)


@router.get(_path("user_operations"))
def user_operations(
    table_id: TableId,
    request: Request,
    user_id: Annotated[text(MAX_NAME) | None, Query(description="Only this user's operations.")] = None,
    start_time: Annotated[UnixTime, Query(description="Operations from this moment (unix seconds).")] = None,
    end_time: Annotated[UnixTime, Query(description="Operations up to this moment (unix seconds); default now.")] = None,
    include_undone: Annotated[Flag | None, Query(description="Include operations that were undone (default true).")] = None,
    include_undo: Annotated[Flag | None, Query(description="caveclient's name for include_undone.")] = None,
    context: AuthContext = Depends(current_context),
) -> Response:
    index = _graph(request, context, table_id).index
    include = next((flag for flag in (include_undone, include_undo) if flag is not None), True)
    operations = queries.user_operations(index, user_id, start_time or 0.0, end_time or time.time(), include)
    frame = pd.DataFrame(
        {
            "operation_id": [op.op_id for op in operations],
            "timestamp": [round(op.timestamp * 1000) for op in operations],
            "user_id": [op.user_id for op in operations],
            "is_merge": [op.is_merge for op in operations],
            "kind": [op.kind for op in operations],
        }
    )
    return Response(frame.to_json(), media_type="application/json")


@router.get(_path("change_log"))
def change_log(
    table_id: TableId,
    root_id: RootId,
    request: Request,
    as_str: AsStr,
    filtered: Annotated[Flag, Query(description="Only the operations that shaped this root.")] = False,
    context: AuthContext = Depends(current_context),
) -> Response:
    index = _graph(request, context, table_id).index
    return _json(queries.change_log(index, root_id, filtered), as_str)


def _tabular(request: Request, index: GraphIndex, root_id: int, filtered: bool) -> str:
    rows = queries.tabular_change_log(index, root_id, filtered)
    ids = {int(row["user_id"]) for row in rows if str(row["user_id"]).isdigit()}
    known = {str(user.id): user for user in runtime_of(request).accounts.find_users(ids=sorted(ids))} if ids else {}
    for row in rows:
        user = known.get(str(row["user_id"]))
        row["user_name"] = user.name if user else ""
        row["user_affiliation"] = user.pi if user else ""
    columns = ["operation_id", "timestamp", "user_id", "before_root_ids", "after_root_ids", "is_merge"]
    if not filtered:
        columns += ["in_neuron", "is_relevant"]
    return pd.DataFrame(rows, columns=columns + ["user_name", "user_affiliation"]).to_json()


FilteredTrue = Annotated[Flag, Query(description="Only the operations that shaped the final object.")]


@router.get(TABLE + "/root/{root_id}/tabular_change_log")
def tabular_change_log(
    table_id: TableId, root_id: RootId, request: Request, filtered: FilteredTrue = True, context: AuthContext = Depends(current_context)
) -> Response:
    index = _graph(request, context, table_id).index
    return Response(_tabular(request, index, root_id, filtered), media_type="application/json")


@router.get(_path("tabular_change_log"))
async def tabular_change_log_many(
    table_id: TableId, body: RootIdsBody, request: Request, filtered: FilteredTrue = True, context: AuthContext = Depends(current_context)
) -> Response:
    """The tabular change log of each root (a GET with a JSON body, as caveclient sends it)."""
    index = (await run_in_threadpool(_graph, request, context, table_id)).index
    out = {str(r): await run_in_threadpool(_tabular, request, index, r, filtered) for r in body.root_ids}
    return _json(out)


@router.get(_path("merge_log"))
def merge_log(table_id: TableId, root_id: RootId, request: Request, as_str: AsStr, context: AuthContext = Depends(current_context)) -> Response:
    index = _graph(request, context, table_id).index
    return _json(queries.merge_log(index, root_id), as_str)


TimestampPast = Annotated[UnixTime, Query(description="The earlier moment (unix seconds); default the graph's creation.")]
TimestampFuture = Annotated[UnixTime, Query(description="The later moment (unix seconds); default now.")]


def _lineage_window(index: GraphIndex, past: float | None, future: float | None) -> tuple[float, float]:
    if past is not None and past > time.time() + FUTURE_TOLERANCE_S:
        raise BadRequest("timestamp_past is in the future.", code="timestamp_in_future")
    t_past = index.created if past is None else max(past, index.created)
    t_future = time.time() if future is None else future
    return t_past, t_future


@router.get(TABLE + "/root/{root_id}/lineage_graph")
def lineage_graph(
    table_id: TableId,
    root_id: RootId,
    request: Request,
    as_str: AsStr,
    timestamp_past: TimestampPast = None,
    timestamp_future: TimestampFuture = None,
    context: AuthContext = Depends(current_context),
) -> Response:
    index = _graph(request, context, table_id).index
    t_past, t_future = _lineage_window(index, timestamp_past, timestamp_future)
    return _json(queries.lineage_graph(index, [root_id], t_past, t_future), as_str)


@router.post(_path("handle_lineage_graph"))
async def lineage_graph_multiple(
    table_id: TableId,
    body: RootIdsBody,
    request: Request,
    as_str: AsStr,
    timestamp_past: TimestampPast = None,
    timestamp_future: TimestampFuture = None,
    context: AuthContext = Depends(current_context),
) -> Response:
    index = (await run_in_threadpool(_graph, request, context, table_id)).index
    t_past, t_future = _lineage_window(index, timestamp_past, timestamp_future)
    graph = await run_in_threadpool(queries.lineage_graph, index, node_id_array(body.root_ids), t_past, t_future)
    return _json(graph, as_str)


@router.get(_path("past_id_mapping"))
async def past_id_mapping(
    table_id: TableId,
    body: RootIdsBody,
    request: Request,
    as_str: AsStr,
    timestamp_past: TimestampPast = None,
    timestamp_future: TimestampFuture = None,
    context: AuthContext = Depends(current_context),
) -> Response:
    """Roots' ancestors at ``timestamp_past`` and descendants at ``timestamp_future`` (a GET with a JSON body)."""
    index = (await run_in_threadpool(_graph, request, context, table_id)).index
    seq_past = 0 if timestamp_past is None or timestamp_past < index.created else _seq(index, timestamp_past, "timestamp_past")
    seq_future = _seq(index, timestamp_future, "timestamp_future")
    mapping = await run_in_threadpool(queries.past_id_mapping, index, node_id_array(body.root_ids), seq_past, seq_future)
    return _json(mapping, as_str)


@router.post(_path("is_latest_roots"))
async def is_latest_roots(
    table_id: TableId, body: NodeIdsBody, request: Request, as_str: AsStr, timestamp: Timestamp = None, context: AuthContext = Depends(current_context)
) -> Response:
    index = (await run_in_threadpool(_graph, request, context, table_id)).index
    result = await run_in_threadpool(queries.is_latest, index, node_id_array(body.node_ids), _seq(index, timestamp))
    return _json({"is_latest": result}, as_str)


@router.post(_path("root_timestamps"))
async def root_timestamps(
    table_id: TableId,
    body: NodeIdsBody,
    request: Request,
    as_str: AsStr,
    timestamp: Timestamp = None,
    latest: Annotated[Flag, Query(description="When each root stopped being the latest (else when it was made).")] = False,
    context: AuthContext = Depends(current_context),
) -> Response:
    index = (await run_in_threadpool(_graph, request, context, table_id)).index
    when = _checked_time(index, timestamp)
    stamps = await run_in_threadpool(queries.root_timestamps, index, node_id_array(body.node_ids), index.seq_at(when), latest, when)
    return _json({"timestamp": stamps}, as_str)


@router.get(_path("delta_roots"))
def delta_roots(
    table_id: TableId,
    timestamp_past: Annotated[UnixTime, Query(description="The earlier moment (unix seconds).")],
    request: Request,
    as_str: AsStr,
    timestamp_future: TimestampFuture = None,
    context: AuthContext = Depends(current_context),
) -> Response:
    """Roots that stopped and started being current between two moments."""
    if timestamp_past is None:
        raise BadRequest("timestamp_past is required (unix seconds).", code="missing_parameter")
    index = _graph(request, context, table_id).index
    old, new = queries.delta_roots(index, _seq(index, timestamp_past, "timestamp_past"), _seq(index, timestamp_future, "timestamp_future"))
    return _json({"old_roots": old, "new_roots": new}, as_str)


def _iso(timestamp: float, delimiter: str) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(sep=delimiter)


@router.get(_path("oldest_timestamp"))
def oldest_timestamp(table_id: TableId, request: Request, delimiter: Delimiter = " ", context: AuthContext = Depends(current_context)) -> Response:
    index = _graph(request, context, table_id).index
    return _json({"iso": _iso(index.created, delimiter)})


@router.get(TABLE + "/root/{root_id}/last_edit")
def last_edit(table_id: TableId, root_id: RootId, request: Request, delimiter: Delimiter = " ", context: AuthContext = Depends(current_context)) -> Response:
    index = _graph(request, context, table_id).index
    stamp = queries.root_timestamps(index, [root_id], index.seq, False, time.time())[0]
    return _json({"iso": _iso(stamp, delimiter)})


@router.get(_path("valid_nodes"))
async def valid_nodes(
    table_id: TableId,
    body: NodeIdsBody,
    request: Request,
    as_str: AsStr,
    start_timestamp: Annotated[UnixTime, Query(description="Created from this moment (unix seconds).")] = None,
    end_timestamp: Annotated[UnixTime, Query(description="Created up to this moment (unix seconds); default now.")] = None,
    context: AuthContext = Depends(current_context),
) -> Response:
    """The given ids that exist and were created in the window (a GET with a JSON body)."""
    index = (await run_in_threadpool(_graph, request, context, table_id)).index
    ids = node_id_array(body.node_ids)
    return _json({"valid_roots": queries.valid_nodes(index, ids, start_timestamp or 0.0, end_timestamp or time.time())}, as_str)


# -- paths -------------------------------------------------------------------------------------
@router.post(_path("find_path"))
async def find_path(
    table_id: TableId,
    points: Annotated[PathPoints, Body(description="[[root_id, x, y, z], [root_id, x, y, z]] (nm) on one object.")],
    request: Request,
    as_str: AsStr,
    context: AuthContext = Depends(current_context),
) -> Response:
    """The shortest path through the object's L2 graph between two points, with L2 centroids."""
    handle = await run_in_threadpool(_graph, request, context, table_id)
    l2cache = runtime_of(request).l2cache
    return _json(await run_in_threadpool(_find_path, handle, points, l2cache), as_str)


def _find_path(handle: GraphHandle, points: list, l2cache) -> dict[str, Any]:
    index = handle.index
    seq = index.seq
    svs, _ = _resolve(handle, points, seq)
    roots = queries.roots(index, svs, seq)
    if roots[0] != roots[1]:
        raise BadRequest("find_path needs two points on the same object.", code="different_objects")
    l2_path = paths.level2_path(index, int(roots[0]), queries.level2_of_supervoxels(index, svs, seq))
    attributes = l2cache.attributes(handle, l2_path, ["rep_coord_nm"])
    centroids = [attributes[int(l2)]["rep_coord_nm"] for l2 in l2_path if attributes.get(int(l2))]
    failed = np.array([l2 for l2 in l2_path if not attributes.get(int(l2))], dtype=np.uint64)
    return {"centroids_list": centroids, "failed_l2_ids": failed, "l2_path": l2_path}


# -- meshing: remeshing requests ----------------------------------------------------------------
@router.post(_path("remesh_level2_chunks"), status_code=202)
async def remesh(table_id: TableId, body: RemeshBody, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    """Queue L2 nodes for re-meshing (a job: any process running jobs meshes them)."""
    handle = await run_in_threadpool(_graph, request, context, table_id, "edit")
    queued = await run_in_threadpool(runtime_of(request).meshes.request_remesh, handle, node_id_array(body.new_lvl2_ids))
    return _json({"queued": queued}, status=202)
