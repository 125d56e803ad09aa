"""ChunkedGraph service (``/segmentation``): PyChunkedGraph's v1 table API.

Handlers parse parameters and bodies, check permissions and encode answers; the graph work
happens in ``opencave.services.chunkedgraph``, off the event loop.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from opencave.errors import BadRequest
from opencave.server.security import current_context, runtime_of
from opencave.services.auth import AuthContext
from opencave.services.chunkedgraph import edits, paths, queries
from opencave.services.chunkedgraph.index import GraphIndex, Operation
from opencave.services.chunkedgraph.lookup import nm_to_voxels, resolve_supervoxel
from opencave.services.chunkedgraph.service import GraphHandle
from opencave.wire.endpoints import CHUNKEDGRAPH, route_path
from opencave.wire.versions import CHUNKEDGRAPH_API_VERSIONS, CHUNKEDGRAPH_SERVER_VERSION

router = APIRouter(tags=["chunkedgraph"])
V1 = CHUNKEDGRAPH.for_version(1)
TABLE = route_path("{cg_server_address}/segmentation/api/v1/table/{table_id}")
NAMESPACE = "pychunkedgraph"
MAX_JSON_IDS = 1_000_000
MAX_BINARY_IDS = 20_000_000
FUTURE_TOLERANCE_S = 60.0


def _path(key: str) -> str:
    return route_path(V1[key])


# -- encoding ----------------------------------------------------------------------------------
def _plain(value: Any, as_str: bool) -> Any:
    """JSON-ready value: numpy ids as ints (or strings with ``int64_as_str``)."""
    if isinstance(value, np.ndarray):
        return [str(v) for v in value.ravel().tolist()] if as_str and value.dtype.kind in "ui" else value.tolist()
    if isinstance(value, np.integer):
        return str(int(value)) if as_str else int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, dict):
        return {str(k): _plain(v, as_str) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, as_str) for v in value]
    return value


def _json(payload: Any, request: Request | None = None, status: int = 200, headers: dict | None = None) -> Response:
    as_str = request is not None and _flag(request.query_params.get("int64_as_str"), False)
    body = json.dumps(_plain(payload, as_str), separators=(",", ":")) + "\n"
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "t", "y")


def _float(request: Request, name: str) -> float | None:
    value = request.query_params.get(name)
    if value is None or value == "" or value == "None":
        return None
    try:
        return float(value)
    except ValueError:
        raise BadRequest(f"{name} must be a unix timestamp in seconds; got {value!r}.", code="bad_timestamp") from None


def _int(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "" or value == "None":
        return None
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"{name} must be an integer; got {value!r}.") from None


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


def _seq(index: GraphIndex, request: Request, name: str = "timestamp") -> int:
    return index.seq_at(_checked_time(index, _float(request, name), name))


def _node_id(value: str) -> int:
    try:
        node = int(value)
    except ValueError:
        raise BadRequest(f"Node ids are decimal integers; got {value!r}.", code="bad_node_id") from None
    if not 0 < node < 2**64:
        raise BadRequest(f"Node id {value} is out of range.", code="bad_node_id")
    return node


async def _body_json(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        raise BadRequest("This endpoint needs a JSON body.", code="missing_body")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"Request body is not valid JSON ({exc}); send a JSON document.", code="invalid_json") from None


def _ids(body: Any, key: str) -> np.ndarray:
    values = body.get(key) if isinstance(body, dict) else None
    if not isinstance(values, list):
        raise BadRequest(f"The body must be a JSON object with a list '{key}'.", code="bad_body")
    if len(values) > MAX_JSON_IDS:
        raise BadRequest(f"Too many ids ({len(values):,}); send at most {MAX_JSON_IDS:,} per request.", code="too_many_ids")
    try:
        ids = np.array([int(v) for v in values], dtype=np.uint64)
    except (TypeError, ValueError, OverflowError):
        raise BadRequest(f"'{key}' must hold positive integer node ids.", code="bad_node_id") from None
    return ids


def _points(body: Any, name: str) -> list[tuple[int, list[float]]]:
    """``[[node_id, x_nm, y_nm, z_nm], …]`` → (id, point) pairs."""
    if not isinstance(body, list) or not body:
        raise BadRequest(f"{name} must be a list of [node_id, x, y, z] entries (coordinates in nm).", code="bad_body")
    points = []
    for entry in body:
        try:
            node, x, y, z = entry
            points.append((int(node), [float(x), float(y), float(z)]))
        except (TypeError, ValueError):
            raise BadRequest(f"Each entry of {name} must be [node_id, x, y, z] (coordinates in nm); got {entry!r}.", code="bad_body") from None
    return points


def _edit_answer(operation: Operation) -> dict[str, Any]:
    return {"operation_id": operation.op_id, "new_root_ids": np.array(operation.new_roots, dtype=np.uint64)}


def _user(context: AuthContext) -> str:
    return str(context.identity.id)


def _resolve(handle: GraphHandle, points: list[tuple[int, list[float]]], seq: int) -> tuple[np.ndarray, np.ndarray]:
    index = handle.index
    volume = handle.volume
    svs, coords = [], []
    for node, point in points:
        voxel = nm_to_voxels(index, point)
        svs.append(resolve_supervoxel(index, node, voxel, seq, volume.supervoxels_near))
        coords.append(voxel)
    return np.array(svs, dtype=np.uint64), np.array(coords, dtype=np.int64)


# -- service-level endpoints -------------------------------------------------------------------
@router.get(route_path(CHUNKEDGRAPH.common["get_api_versions"]))
def api_versions() -> list[int]:
    return CHUNKEDGRAPH_API_VERSIONS


@router.get(route_path(CHUNKEDGRAPH.common["get_version"]))
def version() -> str:
    return CHUNKEDGRAPH_SERVER_VERSION


@router.get(route_path(CHUNKEDGRAPH.common["info"]))
def table_info(table_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    from opencave.server.routers.volumes import volume_url

    handle = _graph(request, context, table_id)
    return _json(runtime_of(request).graphs.info(handle, volume_url(request, context, table_id)))


# -- roots -------------------------------------------------------------------------------------
@router.get(_path("handle_root"))
def root(table_id: str, supervoxel_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    handle = _graph(request, context, table_id)
    index = handle.index
    seq = _seq(index, request)
    found = queries.root(index, _node_id(supervoxel_id), seq, _int(request, "stop_layer"))
    return _json({"root_id": np.uint64(found)}, request)


@router.post(_path("get_roots"))
async def roots_binary(table_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    raw = await request.body()
    if len(raw) % 8:
        raise BadRequest("The body must be little-endian uint64 node ids (a multiple of 8 bytes).", code="bad_body")
    if len(raw) // 8 > MAX_BINARY_IDS:
        raise BadRequest(f"Too many ids; send at most {MAX_BINARY_IDS:,} per request.", code="too_many_ids")
    handle = await run_in_threadpool(_graph, request, context, table_id)
    index = handle.index
    seq = _seq(index, request)
    ids = np.frombuffer(raw, dtype="<u8")
    result = await run_in_threadpool(queries.roots, index, ids, seq, _int(request, "stop_layer"))
    if _flag(request.query_params.get("assert_roots"), False) and (result == 0).any():
        raise BadRequest(f"Node {int(ids[result == 0][0])} does not exist in this graph at that time.", code="unknown_node")
    return Response(result.astype("<u8").tobytes(), media_type="application/octet-stream")


@router.post(_path("handle_roots"))
async def roots_json(table_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    body = await _body_json(request)
    handle = await run_in_threadpool(_graph, request, context, table_id)
    index = handle.index
    result = await run_in_threadpool(queries.roots, index, _ids(body, "node_ids"), _seq(index, request), _int(request, "stop_layer"))
    if request.query_params.get("as_binary") in ("root_ids", "true", "True", "1"):
        return Response(result.astype("<u8").tobytes(), media_type="application/octet-stream")
    return _json({"root_ids": result}, request)


# -- hierarchy ---------------------------------------------------------------------------------
@router.get(_path("handle_children"))
def children(table_id: str, root_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    index = _graph(request, context, table_id).index
    return _json({"children_ids": queries.children(index, _node_id(root_id))}, request)


@router.get(_path("leaves_from_root"))
def leaves(table_id: str, root_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    index = _graph(request, context, table_id).index
    bounds = queries.parse_bounds(request.query_params.get("bounds"))
    found = queries.leaves(index, _node_id(root_id), _int(request, "stop_layer") or 1, bounds)
    return _json({"leaf_ids": found}, request)


@router.post(_path("leaves_many"))
@router.post(TABLE + "/leaves_many", include_in_schema=False)
async def leaves_many(table_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    body = await _body_json(request)
    index = (await run_in_threadpool(_graph, request, context, table_id)).index
    bounds = queries.parse_bounds(request.query_params.get("bounds"))
    result = await run_in_threadpool(queries.leaves_many, index, _ids(body, "node_ids"), _int(request, "stop_layer") or 1, bounds)
    return _json(result, request)


@router.post(_path("minimal_covering_nodes"))
async def minimal_covering_nodes(table_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    if _flag(request.query_params.get("is_binary"), False):
        raw = await request.body()
        if len(raw) % 8:
            raise BadRequest("A binary body must be little-endian uint64 ids.", code="bad_body")
        ids = np.frombuffer(raw, dtype="<u8").astype(np.uint64)
    else:
        ids = _ids(await _body_json(request), "node_ids")
    index = (await run_in_threadpool(_graph, request, context, table_id)).index
    result = await run_in_threadpool(queries.minimal_covering_nodes, index, ids, _seq(index, request))
    if _flag(request.query_params.get("as_array"), False):
        return Response(result.astype("<u8").tobytes(), media_type="application/octet-stream")
    return _json(result, request)


@router.get(_path("get_subgraph"))
def subgraph(table_id: str, root_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    index = _graph(request, context, table_id).index
    bounds = queries.parse_bounds(request.query_params.get("bounds"))
    pairs, affinities, areas = queries.subgraph(index, _node_id(root_id), bounds)
    return _json({"nodes": pairs, "affinities": affinities, "areas": areas}, request)


@router.get(_path("lvl2_graph"))
def level2_graph(table_id: str, root_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    index = _graph(request, context, table_id).index
    bounds = queries.parse_bounds(request.query_params.get("bounds"))
    pairs = queries.level2_graph(index, _node_id(root_id), bounds)
    return _json({"edge_graph": pairs}, request, headers={"Used-Bounds": str(bounds is not None)})


@router.get(_path("contact_sites"))
def contact_sites(table_id: str, root_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    index = _graph(request, context, table_id).index
    bounds = queries.parse_bounds(request.query_params.get("bounds"))
    partners = _flag(request.query_params.get("partners"), True)
    return _json(queries.contact_sites(index, _node_id(root_id), bounds, partners), request)


# -- edits -------------------------------------------------------------------------------------
@router.post(_path("do_merge"))
async def merge(table_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    points = _points(await _body_json(request), "The merge body")
    if len(points) != 2:
        raise BadRequest("A merge takes exactly two points: [[id_a, x, y, z], [id_b, x, y, z]] (nm).", code="bad_body")
    handle = await run_in_threadpool(_graph, request, context, table_id, "edit")

    def plan(index: GraphIndex) -> edits.EditPlan:
        svs, coords = _resolve(handle, points, index.seq)
        details = {"source_ids": [int(svs[0])], "sink_ids": [int(svs[1])], "source_coords": [coords[0].tolist()], "sink_coords": [coords[1].tolist()]}
        return edits.plan_merge(index, int(svs[0]), int(svs[1]), details)

    operation = await run_in_threadpool(runtime_of(request).graphs.commit, handle, plan, _user(context))
    await run_in_threadpool(runtime_of(request).l2cache.schedule, handle, operation)
    await run_in_threadpool(runtime_of(request).meshes.schedule, handle, operation)
    return _json(_edit_answer(operation), request)


def _split_points(body: Any) -> tuple[list, list]:
    if not isinstance(body, dict) or "sources" not in body or "sinks" not in body:
        raise BadRequest('A split body is {"sources": [[id, x, y, z], …], "sinks": [[id, x, y, z], …]} (nm).', code="bad_body")
    return _points(body["sources"], "sources"), _points(body["sinks"], "sinks")


def _find_cut(handle: GraphHandle, index: GraphIndex, sources: list, sinks: list, mincut: bool) -> tuple[edits.SplitCut, dict]:
    src, src_coords = _resolve(handle, sources, index.seq)
    snk, snk_coords = _resolve(handle, sinks, index.seq)
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
async def split(table_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    sources, sinks = _split_points(await _body_json(request))
    mincut = _flag(request.query_params.get("mincut"), True)
    handle = await run_in_threadpool(_graph, request, context, table_id, "edit")

    def plan(index: GraphIndex) -> edits.EditPlan:
        cut, details = _find_cut(handle, index, sources, sinks, mincut)
        return edits.plan_split(index, cut, details)

    operation = await run_in_threadpool(runtime_of(request).graphs.commit, handle, plan, _user(context))
    await run_in_threadpool(runtime_of(request).l2cache.schedule, handle, operation)
    await run_in_threadpool(runtime_of(request).meshes.schedule, handle, operation)
    return _json(_edit_answer(operation), request)


@router.post(_path("preview_split"))
async def split_preview(table_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    sources, sinks = _split_points(await _body_json(request))
    handle = await run_in_threadpool(_graph, request, context, table_id)
    cut, _ = await run_in_threadpool(_find_cut, handle, handle.index, sources, sinks, True)
    return _json({"supervoxel_connected_components": cut.local_components, "illegal_split": not cut.separated}, request)


async def _undo_redo(table_id: str, request: Request, context: AuthContext, redo: bool) -> Response:
    body = await _body_json(request)
    try:
        target = int(body["operation_id"])
    except (TypeError, KeyError, ValueError):
        raise BadRequest('The body must be {"operation_id": <int>}.', code="bad_body") from None
    handle = await run_in_threadpool(_graph, request, context, table_id, "edit")
    operation = await run_in_threadpool(
        runtime_of(request).graphs.commit, handle, lambda index: edits.plan_undo_redo(index, target, redo), _user(context)
    )
    await run_in_threadpool(runtime_of(request).l2cache.schedule, handle, operation)
    await run_in_threadpool(runtime_of(request).meshes.schedule, handle, operation)
    return _json(_edit_answer(operation), request)


@router.post(_path("undo"))
async def undo(table_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    return await _undo_redo(table_id, request, context, redo=False)


@router.post(TABLE + "/redo")
async def redo(table_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    return await _undo_redo(table_id, request, context, redo=True)


# -- history and lineage -----------------------------------------------------------------------
@router.get(_path("operation_details"))
def operation_details(table_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    index = _graph(request, context, table_id).index
    text = request.query_params.get("operation_ids", "")
    try:
        op_ids = [int(v) for v in text.strip().strip("[]").split(",") if v.strip()]
    except ValueError:
        raise BadRequest(f"operation_ids must be a list like [1, 2]; got {text!r}.") from None
    if not op_ids:
        raise BadRequest("operation_ids must name at least one operation, e.g. operation_ids=[1, 2].")
    return _json(queries.operation_details(index, op_ids), request)


@router.get(_path("user_operations"))
def user_operations(table_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    index = _graph(request, context, table_id).index
    user_id = request.query_params.get("user_id")
    start = _float(request, "start_time") or 0.0
    end = _float(request, "end_time") or time.time()
    include = _flag(request.query_params.get("include_undone", request.query_params.get("include_undo")), True)
    operations = queries.user_operations(index, user_id, start, end, include)
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
def change_log(table_id: str, root_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    index = _graph(request, context, table_id).index
    filtered = _flag(request.query_params.get("filtered"), False)
    return _json(queries.change_log(index, _node_id(root_id), filtered), request)


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


@router.get(TABLE + "/root/{root_id}/tabular_change_log")
def tabular_change_log(table_id: str, root_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    index = _graph(request, context, table_id).index
    filtered = _flag(request.query_params.get("filtered"), True)
    return Response(_tabular(request, index, _node_id(root_id), filtered), media_type="application/json")


@router.get(_path("tabular_change_log"))
async def tabular_change_log_many(table_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    body = await _body_json(request)
    index = (await run_in_threadpool(_graph, request, context, table_id)).index
    filtered = _flag(request.query_params.get("filtered"), True)
    ids = _ids(body, "root_ids")
    out = {str(int(r)): await run_in_threadpool(_tabular, request, index, int(r), filtered) for r in ids}
    return _json(out)


@router.get(_path("merge_log"))
def merge_log(table_id: str, root_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    index = _graph(request, context, table_id).index
    return _json(queries.merge_log(index, _node_id(root_id)), request)


def _lineage_window(index: GraphIndex, request: Request) -> tuple[float, float]:
    past = _float(request, "timestamp_past")
    future = _float(request, "timestamp_future")
    t_past = index.created if past is None else max(past, index.created)
    if past is not None and past > time.time() + FUTURE_TOLERANCE_S:
        raise BadRequest("timestamp_past is in the future.", code="timestamp_in_future")
    t_future = time.time() if future is None else future
    return t_past, t_future


@router.get(TABLE + "/root/{root_id}/lineage_graph")
def lineage_graph(table_id: str, root_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    index = _graph(request, context, table_id).index
    t_past, t_future = _lineage_window(index, request)
    return _json(queries.lineage_graph(index, [_node_id(root_id)], t_past, t_future), request)


@router.post(_path("handle_lineage_graph"))
async def lineage_graph_multiple(table_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    body = await _body_json(request)
    index = (await run_in_threadpool(_graph, request, context, table_id)).index
    t_past, t_future = _lineage_window(index, request)
    graph = await run_in_threadpool(queries.lineage_graph, index, _ids(body, "root_ids"), t_past, t_future)
    return _json(graph, request)


@router.get(_path("past_id_mapping"))
async def past_id_mapping(table_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    body = await _body_json(request)
    index = (await run_in_threadpool(_graph, request, context, table_id)).index
    past = _float(request, "timestamp_past")
    seq_past = 0 if past is None or past < index.created else _seq(index, request, "timestamp_past")
    seq_future = _seq(index, request, "timestamp_future")
    return _json(await run_in_threadpool(queries.past_id_mapping, index, _ids(body, "root_ids"), seq_past, seq_future), request)


@router.post(_path("is_latest_roots"))
async def is_latest_roots(table_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    body = await _body_json(request)
    index = (await run_in_threadpool(_graph, request, context, table_id)).index
    result = await run_in_threadpool(queries.is_latest, index, _ids(body, "node_ids"), _seq(index, request))
    return _json({"is_latest": result}, request)


@router.post(_path("root_timestamps"))
async def root_timestamps(table_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    body = await _body_json(request)
    index = (await run_in_threadpool(_graph, request, context, table_id)).index
    when = _checked_time(index, _float(request, "timestamp"))
    latest = _flag(request.query_params.get("latest"), False)
    stamps = await run_in_threadpool(queries.root_timestamps, index, _ids(body, "node_ids"), index.seq_at(when), latest, when)
    return _json({"timestamp": stamps}, request)


@router.get(_path("delta_roots"))
def delta_roots(table_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    index = _graph(request, context, table_id).index
    if _float(request, "timestamp_past") is None:
        raise BadRequest("timestamp_past is required (unix seconds).", code="missing_parameter")
    old, new = queries.delta_roots(index, _seq(index, request, "timestamp_past"), _seq(index, request, "timestamp_future"))
    return _json({"old_roots": old, "new_roots": new}, request)


def _iso(timestamp: float, delimiter: str) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(sep=delimiter)


@router.get(_path("oldest_timestamp"))
def oldest_timestamp(table_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    index = _graph(request, context, table_id).index
    return _json({"iso": _iso(index.created, request.query_params.get("delimiter", " "))})


@router.get(TABLE + "/root/{root_id}/last_edit")
def last_edit(table_id: str, root_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    index = _graph(request, context, table_id).index
    stamp = queries.root_timestamps(index, [_node_id(root_id)], index.seq, False, time.time())[0]
    return _json({"iso": _iso(stamp, request.query_params.get("delimiter", " "))})


@router.get(_path("valid_nodes"))
async def valid_nodes(table_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    body = await _body_json(request)
    index = (await run_in_threadpool(_graph, request, context, table_id)).index
    start = _float(request, "start_timestamp") or 0.0
    end = _float(request, "end_timestamp") or time.time()
    return _json({"valid_roots": queries.valid_nodes(index, _ids(body, "node_ids"), start, end)}, request)


# -- paths -------------------------------------------------------------------------------------
@router.post(_path("find_path"))
async def find_path(table_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    points = _points(await _body_json(request), "The find_path body")
    if len(points) != 2:
        raise BadRequest("find_path takes two points: [[root_id, x, y, z], [root_id, x, y, z]] (nm).", code="bad_body")
    handle = await run_in_threadpool(_graph, request, context, table_id)
    l2cache = runtime_of(request).l2cache
    return _json(await run_in_threadpool(_find_path, handle, points, l2cache), request)


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
@router.post(_path("remesh_level2_chunks"))
async def remesh(table_id: str, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    body = await _body_json(request)
    handle = await run_in_threadpool(_graph, request, context, table_id, "edit")
    queued = await run_in_threadpool(runtime_of(request).graphs.request_remesh, handle, _ids(body, "new_lvl2_ids"))
    return _json({"queued": queued}, status=202)
