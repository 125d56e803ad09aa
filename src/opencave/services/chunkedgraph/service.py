"""The chunkedgraph service: graphs registered in the store, their in-memory indexes kept in
step with the store, and edits committed atomically.

Every edit runs in one transaction that first bumps the graph's ``last_op_id`` row — a row
lock on PostgreSQL, the write lock on SQLite — so edits of a graph are serialised across all
server processes, and a process reading the graph brings its index up to date with the
operations others committed (``refresh``). A killed process loses no committed edit and leaves
no partial one: nodes and the operation row commit together.

Services that derive data from the graph (L2 attributes, meshes) ``subscribe`` to edits: once an
edit has committed and reached the index, each subscriber gets a ``CommittedEdit`` captured then,
so it never reads an index that a later edit is extending. Subscribers only queue work; their
failure is logged and never changes the edit's answer. That work waits for a quiet moment
(``wait_for_quiet``): on a small machine, meshing started by one edit would otherwise share the
cores with the next edit, which a proofreader makes a moment later.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, insert, select, update

from opencave.errors import BadRequest, Conflict, NotFound
from opencave.storage.sql import reader
from opencave.storage.state import GRAPH_GENERATION, bump_generation
from opencave.services.segmentation.volume import WatershedVolume
from opencave.services.meshing.layout import MeshLayout
from opencave.storage.tables import cg_graphs, cg_nodes, cg_operations
from opencave.wire.node_ids import NodeIdLayout, get_layer

from .edits import EditPlan
from .hierarchy import BuiltHierarchy, build_hierarchy
from .index import Geometry, GraphIndex, Operation
from .labels import OriginalLabels

log = logging.getLogger("opencave.chunkedgraph")
INSERT_BATCH = 5000
QUIET_S = 0.3
"""Seconds without an edit in this process before work queued after edits starts."""
QUIET_MAX_WAIT_S = 3.0
"""Longest that work queued after an edit waits for a quiet moment (edits that never pause)."""


@dataclass
class GraphHandle:
    """One loaded graph: its index, its world files and the lock serialising its writers."""

    table_id: str
    world_dir: Path
    world: dict[str, Any]
    index: GraphIndex
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    sync_lock: threading.Lock = field(default_factory=threading.Lock)
    # the graph generation at which the index was last found to hold every committed edit
    fresh_at: str | None = None

    @cached_property
    def volume(self) -> WatershedVolume:
        """The watershed (supervoxel label volume) of the graph."""
        return WatershedVolume(self.world_dir / "ws")

    @cached_property
    def labels(self) -> OriginalLabels | None:
        """The original labels of an ingested segmentation (None for a synthetic world)."""
        return OriginalLabels.load(self.world_dir)


@dataclass(frozen=True)
class CommittedEdit:
    """An edit as its subscribers see it, captured when it committed (later edits extend the
    index meanwhile, so subscribers read nothing of the edit from it)."""

    handle: GraphHandle
    operation: Operation
    new_l2_ids: tuple[int, ...]  # the L2 nodes the edit created
    edge_end_l2_ids: tuple[int, ...]  # other L2 nodes, as of the edit, at the ends of the edges it changed
    wait_for_quiet: Callable[[], float] = lambda: 0.0  # the queued work calls it before starting


def load_geometry(world: dict[str, Any]) -> Geometry:
    masks = {int(k): int(v) for k, v in world["spatial_bit_masks"].items()}
    return Geometry(
        layout=NodeIdLayout(int(world["n_layers"]), masks),
        chunks_per_axis=tuple(world["chunks_per_axis"]),
        chunk_size=tuple(world["chunk_size"]),
        resolution=tuple(float(r) for r in world["resolution"]),
        voxel_offset=tuple(world["voxel_offset"]),
        volume_size=tuple(world["volume_size"]),
    )


def _new_index(world_dir: Path, world: dict[str, Any], created: float) -> GraphIndex:
    with np.load(world_dir / "graph.npz") as graph:
        return GraphIndex(
            load_geometry(world),
            graph["chunk_sv_counts"],
            graph["edges"],
            graph["affinity"],
            graph["area"],
            graph["initially_active"],
            created,
        )


def _to_posix(value: datetime) -> float:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


class GraphService:
    """Registry and access point of every chunkedgraph in the store."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._graphs: dict[str, GraphHandle] = {}
        self._load_lock = threading.Lock()
        self._subscribers: list[Callable[[CommittedEdit], None]] = []
        self._quiet = threading.Condition()
        self._editing = 0  # edits of this process being planned or committed now
        self._last_edit = 0.0  # time.monotonic() when the last one ended

    def wait_for_quiet(self, quiet_s: float = QUIET_S, max_wait_s: float = QUIET_MAX_WAIT_S) -> float:
        """Block until no edit has run in this process for ``quiet_s`` seconds, or ``max_wait_s``
        passed; the seconds waited. Background work derived from edits calls this first, so the
        next edit of a proofreader does not share the CPU with it (it is also done on demand)."""
        start = time.monotonic()
        deadline = start + max_wait_s
        with self._quiet:
            while True:
                now = time.monotonic()
                calm_at = now + quiet_s if self._editing else self._last_edit + quiet_s
                if calm_at <= now or now >= deadline:
                    return now - start
                self._quiet.wait(min(calm_at, deadline) - now)  # an edit ending wakes it early

    def _edit_started(self) -> None:
        with self._quiet:
            self._editing += 1

    def _edit_ended(self) -> None:
        with self._quiet:
            self._editing -= 1
            self._last_edit = time.monotonic()
            self._quiet.notify_all()

    def subscribe(self, callback: Callable[[CommittedEdit], None]) -> None:
        """Call ``callback`` after every edit this process commits, in the committing thread (so
        it should only queue work); a callback that raises is logged, and the edit stands."""
        self._subscribers.append(callback)

    # -- registry ----------------------------------------------------------------------------
    def table_ids(self) -> list[str]:
        with reader(self.engine).connect() as conn:
            return list(conn.execute(select(cg_graphs.c.table_id).order_by(cg_graphs.c.table_id)).scalars())

    def exists(self, table_id: str) -> bool:
        with reader(self.engine).connect() as conn:
            return conn.execute(select(cg_graphs.c.table_id).where(cg_graphs.c.table_id == table_id)).first() is not None

    def create_graph(self, table_id: str, world_dir: Path, created: float, progress: Callable[[str], None] | None = None) -> GraphHandle:
        """Ingest a world: build its initial hierarchy and store it (one transaction)."""
        world_dir = Path(world_dir).resolve()
        created = datetime.fromtimestamp(created, UTC).timestamp()  # as stored
        world = json.loads((world_dir / "world.json").read_text())
        index = _new_index(world_dir, world, created)
        if progress:
            progress(f"building the hierarchy of {index.n_sv:,} supervoxels")
        active = np.flatnonzero(index.active0.view())
        built = build_hierarchy(
            index.node_id.view(),
            index.sv_chunk_coords(np.arange(index.n_sv)),
            index.edge_a.view()[active],
            index.edge_b.view()[active],
            index.n_layers,
            index.allocate,
        )
        if progress:
            progress(f"storing {built.node_ids.size:,} nodes")
        with self.engine.begin() as conn:
            if conn.execute(select(cg_graphs.c.table_id).where(cg_graphs.c.table_id == table_id)).first():
                raise Conflict(f"Graph {table_id} exists already.")
            conn.execute(
                insert(cg_graphs).values(
                    table_id=table_id,
                    world_dir=str(world_dir),
                    created=datetime.fromtimestamp(created, UTC),
                    last_op_id=0,
                )
            )
            self._insert_nodes(conn, table_id, 0, built.node_ids, built.child_ptr, built.child_ids)
        index.apply(built, None)
        handle = GraphHandle(table_id, world_dir, world, index)
        with self._load_lock:
            self._graphs[table_id] = handle
        return handle

    def graph(self, table_id: str) -> GraphHandle:
        """The graph, brought up to date with every committed operation."""
        handle = self._graphs.get(table_id)
        if handle is None:
            with self._load_lock:
                handle = self._graphs.get(table_id)
                if handle is None:
                    handle = self._load(table_id)
                    self._graphs[table_id] = handle
        self.refresh(handle)
        return handle

    def current(self, table_id: str, generation: str | None = None) -> GraphHandle | None:
        """The graph if this process has loaded it and its index has every committed operation,
        else None: loading or catching up is slow work, left to ``graph`` on a worker thread,
        while a fresh index answers small reads on the spot.

        ``generation`` is the graph generation the request read with its token (every edit
        bumps it in its transaction): when the index was found complete at that generation,
        no edit has been committed since and no read is needed; otherwise one indexed read."""
        handle = self._graphs.get(table_id)
        if handle is None:
            return None
        if generation is not None and handle.fresh_at == generation:
            return handle
        with reader(self.engine).connect() as conn:
            last = conn.execute(select(cg_graphs.c.last_op_id).where(cg_graphs.c.table_id == table_id)).scalar()
        if last is None or last > handle.index.seq:
            return None
        if generation is not None:
            handle.fresh_at = generation  # read before ``last``: later edits change it
        return handle

    def _load(self, table_id: str) -> GraphHandle:
        with reader(self.engine).connect() as conn:
            row = conn.execute(select(cg_graphs).where(cg_graphs.c.table_id == table_id)).first()
            if row is None:
                raise NotFound(f"Graph {table_id!r} does not exist.", code="unknown_table")
            world_dir = Path(row.world_dir)
            world = json.loads((world_dir / "world.json").read_text())
            index = _new_index(world_dir, world, _to_posix(row.created))
            handle = GraphHandle(table_id, world_dir, world, index)
            self._catch_up(handle, conn)
        return handle

    def refresh(self, handle: GraphHandle) -> None:
        """Apply operations other processes committed since this index last looked."""
        with reader(self.engine).connect() as conn:
            last = conn.execute(select(cg_graphs.c.last_op_id).where(cg_graphs.c.table_id == handle.table_id)).scalar()
            if last is None:
                with self._load_lock:
                    self._graphs.pop(handle.table_id, None)
                raise NotFound(f"Graph {handle.table_id!r} does not exist.", code="unknown_table")
            if last > handle.index.seq:
                self._catch_up(handle, conn)

    def _catch_up(self, handle: GraphHandle, conn: Connection) -> None:
        with handle.sync_lock:
            index = handle.index
            start = index.seq + 1
            # The log first, then the nodes of exactly those operations: each statement may see
            # later commits of other processes (PostgreSQL, read committed), and an operation
            # read without its nodes would leave them out of the index for good.
            operations = conn.execute(
                select(cg_operations)
                .where(cg_operations.c.table_id == handle.table_id, cg_operations.c.op_id >= max(start, 1))
                .order_by(cg_operations.c.op_id)
            ).all()
            last = int(operations[-1].op_id) if operations else max(start - 1, 0)
            nodes = conn.execute(
                select(cg_nodes.c.op_id, cg_nodes.c.node_id, cg_nodes.c.children)
                .where(cg_nodes.c.table_id == handle.table_id, cg_nodes.c.op_id >= start, cg_nodes.c.op_id <= last)
                .order_by(cg_nodes.c.op_id, cg_nodes.c.node_id)
            ).all()
            by_op: dict[int, list[Any]] = {}
            for row in nodes:
                by_op.setdefault(int(row.op_id), []).append(row)
            if start == 0:
                index.apply(_node_arrays(by_op.get(0, [])), None)
            batch = []
            for row in operations:
                operation = Operation(
                    op_id=int(row.op_id),
                    timestamp=_to_posix(row.timestamp),
                    user_id=row.user_id,
                    kind=row.kind,
                    target_op_id=row.target_op_id,
                    details=json.loads(row.details),
                )
                batch.append((_node_arrays(by_op.get(operation.op_id, [])), operation))
            index.apply_many(batch)

    def info(self, handle: GraphHandle, data_dir: str) -> dict[str, Any]:
        """PyChunkedGraph's table info: the watershed's precomputed info plus the graph layout;
        ``data_dir`` is the URL the caller reads the watershed and mesh files from."""
        world = handle.world
        ws_info = handle.volume.info
        layout = handle.index.layout
        return {
            **ws_info,
            "data_dir": data_dir,
            "chunks_start_at_voxel_offset": True,
            "graph": {
                "chunk_size": list(world["chunk_size"]),
                "bounding_box": list(world["volume_size"]),
                "n_bits_for_layer_id": 8,
                "cv_mip": 0,
                "n_layers": layout.n_layers,
                "spatial_bit_masks": {str(k): v for k, v in layout.bits.items()},
            },
            "app": {"supported_api_versions": [0, 1]},
            **MeshLayout(handle.index.geometry).info(),  # mesh, mesh_metadata
        }

    # -- edits -------------------------------------------------------------------------------
    def commit(
        self,
        handle: GraphHandle,
        make_plan: Callable[[GraphIndex], EditPlan],
        user_id: str,
        timestamp: float | None = None,
    ) -> Operation:
        """Plan an edit on the newest state and commit it; serialised per graph."""
        self._edit_started()
        try:
            operation, built = self._commit(handle, make_plan, user_id, timestamp)
            self._publish(handle, operation, built)
        finally:
            self._edit_ended()
        return operation

    def _commit(
        self, handle: GraphHandle, make_plan: Callable[[GraphIndex], EditPlan], user_id: str, timestamp: float | None
    ) -> tuple[Operation, BuiltHierarchy]:
        with handle.write_lock:
            with self.engine.begin() as conn:
                conn.execute(
                    update(cg_graphs)
                    .where(cg_graphs.c.table_id == handle.table_id)
                    .values(last_op_id=cg_graphs.c.last_op_id + 1)
                )
                bump_generation(conn, GRAPH_GENERATION)  # every process's fresh indexes look again
                op_id = conn.execute(
                    select(cg_graphs.c.last_op_id).where(cg_graphs.c.table_id == handle.table_id)
                ).scalar_one()
                if op_id != handle.index.seq + 1:  # another process committed meanwhile
                    self._catch_up(handle, conn)
                index = handle.index
                if op_id != index.seq + 1:
                    raise RuntimeError(f"graph {handle.table_id}: operation counter {op_id} ahead of log {index.seq}")
                plan = make_plan(index)
                last = index.op_timestamp(index.seq)
                if timestamp is None:
                    timestamp = max(time.time(), last + 1e-6)
                elif timestamp <= last:
                    raise BadRequest("An edit's timestamp must be later than the graph's last operation.")
                moment = datetime.fromtimestamp(timestamp, UTC)  # stored to the microsecond
                if moment.timestamp() <= last:
                    moment += timedelta(microseconds=1)
                timestamp = moment.timestamp()
                operation = Operation(op_id, timestamp, str(user_id), plan.kind, plan.target_op_id, plan.log_details())
                conn.execute(
                    insert(cg_operations).values(
                        table_id=handle.table_id,
                        op_id=op_id,
                        timestamp=moment,
                        user_id=str(user_id),
                        kind=plan.kind,
                        target_op_id=plan.target_op_id,
                        details=json.dumps(operation.details, separators=(",", ":")),
                    )
                )
                built = plan.built
                self._insert_nodes(conn, handle.table_id, op_id, built.node_ids, built.child_ptr, built.child_ids)
            try:
                with handle.sync_lock:  # a reader may have caught up with this edit already
                    if handle.index.seq < op_id:
                        handle.index.apply(built, operation)
            except Exception:
                with self._load_lock:  # the store has the edit; rebuild the index from it
                    self._graphs.pop(handle.table_id, None)
                raise
        return operation, built

    def _publish(self, handle: GraphHandle, operation: Operation, built: BuiltHierarchy) -> None:
        """Tell the subscribers of a committed edit; nothing here may fail the edit."""
        if not self._subscribers:
            return
        try:
            edit = self._committed_edit(handle, operation, built, self.wait_for_quiet)
        except Exception:
            log.exception("describing operation %s of %s to its subscribers failed", operation.op_id, handle.table_id)
            return
        for callback in list(self._subscribers):
            try:
                callback(edit)
            except Exception:
                log.exception("a subscriber to edits failed on operation %s of %s", operation.op_id, handle.table_id)

    @staticmethod
    def _committed_edit(
        handle: GraphHandle, operation: Operation, built: BuiltHierarchy, wait_for_quiet: Callable[[], float]
    ) -> CommittedEdit:
        """The edit's new L2 nodes (from what it built) and the L2 nodes at the ends of the
        edges it changed, read as of the edit's own operation: reads at a fixed past ``seq``
        are stable while later edits are applied."""
        index = handle.index
        node_ids = np.asarray(built.node_ids, dtype=np.uint64)
        new_l2 = node_ids[get_layer(node_ids) == 2]
        ends = [v for key in ("added_edges", "removed_edges") for pair in operation.details.get(key) or [] for v in pair]
        edge_l2: list[int] = []
        if ends:
            sv_idx = index.sv_index(np.array(ends, dtype=np.uint64))
            l2 = index.roots_at(sv_idx[sv_idx >= 0], operation.op_id, stop_layer=2)
            edge_l2 = sorted(set(index.ids_of(l2[l2 >= 0]).tolist()) - set(new_l2.tolist()))
        return CommittedEdit(handle, operation, tuple(int(i) for i in new_l2), tuple(int(i) for i in edge_l2), wait_for_quiet)

    @staticmethod
    def _insert_nodes(conn: Connection, table_id: str, op_id: int, node_ids: np.ndarray, ptr: np.ndarray, children: np.ndarray) -> None:
        rows = [
            {
                "table_id": table_id,
                "node_id": int(node_ids[i]),
                "op_id": op_id,
                "children": children[ptr[i] : ptr[i + 1]].astype("<u8").tobytes(),
            }
            for i in range(node_ids.size)
        ]
        for start in range(0, len(rows), INSERT_BATCH):
            conn.execute(insert(cg_nodes), rows[start : start + INSERT_BATCH])


def _node_arrays(rows: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, child pointer, child ids) of stored node rows."""
    ids = np.array([int(r.node_id) for r in rows], dtype=np.uint64)
    blobs = [bytes(r.children) for r in rows]
    sizes = np.array([len(b) // 8 for b in blobs], dtype=np.int64)
    ptr = np.concatenate(([0], np.cumsum(sizes)))
    children = np.frombuffer(b"".join(blobs), dtype="<u8").astype(np.uint64) if blobs else np.zeros(0, np.uint64)
    return ids, ptr, children
