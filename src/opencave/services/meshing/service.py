"""The meshing service: L2 meshes made from the watershed, stored, and listed per node.

An L2 node never changes (an edit makes new ones), so its mesh is made once — in the background
after the edit that created it, when a remesh request for it is consumed, or when a manifest or
fragment first needs it — and kept in the live store for every server process. Only what a node's mesh
shows across its chunk faces depends on the edges leaving it, so an edit that changes such
edges re-meshes the (reused) nodes at their ends. A manifest of any node lists the meshes of
its L2 descendants; an old root's descendants are still in the index, so its manifest lists
the fragments it had.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine

from opencave.background import BackgroundExecutor
from opencave.errors import BadRequest, NotFound
from opencave.services.chunkedgraph import queries
from opencave.services.chunkedgraph.service import CommittedEdit, GraphHandle, GraphService
from opencave.services.jobs.queue import JobQueue
from opencave.wire.node_ids import chunk_coordinates

from .assignment import alive_until, chunk_labels, reached_chunks, slab_labels
from .chunk import Surface, encode_draco, surfaces, weld
from .layout import MESHED_LAYER, MeshLayout
from .store import MeshStore

WAIT_FOR_OTHERS_S = 300.0
REMESH_JOB = "meshing.remesh"  # the queued job that meshes the L2 nodes of a remesh request
# Steps to the lower neighbours whose cells touch a chunk: faces, then edges, then the corner.
LOWER_STEPS = [np.array(s, dtype=np.int64) for s in ((1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1))]


def _sub_steps(step: np.ndarray) -> list[np.ndarray]:
    """Nonzero steps within ``step``: the lower neighbours that could claim a node there."""
    return [s for s in LOWER_STEPS if (s <= step).all()]


@dataclass(frozen=True)
class ManifestQuery:
    """What a manifest request asks for (PyChunkedGraph's query parameters and body keys)."""

    verify: bool = False
    return_seg_ids: bool = False
    prepend_seg_ids: bool = False
    start_layer: int | None = None
    bounds: np.ndarray | None = None
    return_seg_id_layers: bool = False
    return_seg_chunk_coordinates: bool = False


class MeshService:
    def __init__(self, engine: Engine, graphs: GraphService, background: BackgroundExecutor, jobs: JobQueue) -> None:
        self.store = MeshStore(engine)
        self.graphs = graphs
        self.background = background
        self.jobs = jobs
        self._lock = threading.Lock()
        self._in_flight: dict[tuple[str, int], threading.Event] = {}

    # -- remesh requests (caveclient's remesh_level2_chunks) ---------------------------------------
    def request_remesh(self, handle: GraphHandle, l2_ids: np.ndarray) -> int:
        """Queue a job meshing these L2 nodes (any process running jobs takes it; a request
        outlives a crash); the number of nodes queued."""
        index = handle.index
        idx = index.node_index(l2_ids)
        wrong = (idx < 0) | (index.node_layer.view()[np.maximum(idx, 0)] != MESHED_LAYER)
        if wrong.any():
            raise BadRequest(f"Node {int(l2_ids[wrong][0])} is not a layer-2 node of this graph; remeshing takes L2 ids.", code="not_level2")
        if l2_ids.size:
            self.jobs.submit(REMESH_JOB, {"table_id": handle.table_id, "l2_ids": sorted({int(i) for i in l2_ids})})
        return int(l2_ids.size)

    def remesh(self, table_id: str, l2_ids: list[int]) -> dict[str, int]:
        """The job's work: mesh those of the nodes without a mesh (a graph gone since: nothing)."""
        try:
            handle = self.graphs.graph(table_id)
        except NotFound:
            return {"meshed": 0}
        return {"meshed": len(self.ensure(handle, l2_ids))}

    @staticmethod
    def layout(handle: GraphHandle) -> MeshLayout:
        return MeshLayout(handle.index.geometry)

    # -- making meshes ---------------------------------------------------------------------
    def ensure(self, handle: GraphHandle, l2_ids: Iterable[int]) -> dict[int, int]:
        """Fragment size of each L2 node (0: no surface), meshing those not stored yet (and
        waiting for those this process is re-meshing)."""
        ids = sorted({int(i) for i in l2_ids})
        self._wait_for(handle.table_id, ids)
        sizes = self.store.sizes(handle.table_id, ids)
        missing = [i for i in ids if i not in sizes]
        if missing:
            self.generate(handle, missing)
            sizes.update(self.store.sizes(handle.table_id, missing))
            still = [i for i in missing if i not in sizes]
            if still:
                raise RuntimeError(f"meshes of {len(still)} L2 nodes were not stored (e.g. {still[0]})")
        return sizes

    def generate(self, handle: GraphHandle, l2_ids: list[int], replace: bool = False) -> None:
        """Mesh and store L2 nodes (``replace``: overwrite stored meshes). Nodes another thread of
        this process is meshing are waited for instead."""
        mine = self._claim(handle.table_id, l2_ids)
        try:
            if mine:
                self._mesh(handle, np.array(mine, dtype=np.uint64), replace)
        finally:
            self._release(handle.table_id, mine)
        self._wait_for(handle.table_id, [int(i) for i in l2_ids])

    def _claim(self, table_id: str, l2_ids: Iterable[int]) -> list[int]:
        """Mark nodes as being meshed by the caller; those already marked are left out."""
        mine = []
        with self._lock:
            for l2 in l2_ids:
                key = (table_id, int(l2))
                if key not in self._in_flight:
                    self._in_flight[key] = threading.Event()
                    mine.append(int(l2))
        return mine

    def _release(self, table_id: str, l2_ids: list[int]) -> None:
        with self._lock:
            for l2 in l2_ids:
                self._in_flight.pop((table_id, l2)).set()

    def _wait_for(self, table_id: str, l2_ids: list[int]) -> None:
        with self._lock:
            events = [e for e in (self._in_flight.get((table_id, i)) for i in l2_ids) if e is not None]
        deadline = time.monotonic() + WAIT_FOR_OTHERS_S
        for event in events:
            event.wait(max(0.0, deadline - time.monotonic()))

    def _mesh(self, handle: GraphHandle, l2_ids: np.ndarray, replace: bool) -> None:
        """Mesh L2 nodes chunk by chunk, each as of the latest state it exists in (nodes of one
        chunk alive until different operations are meshed in separate passes: old and new nodes
        share supervoxels)."""
        index = handle.index
        layout = self.layout(handle)
        idx = index.node_index(l2_ids)
        if (idx < 0).any() or (index.node_layer.view()[np.maximum(idx, 0)] != MESHED_LAYER).any():
            raise ValueError("only L2 nodes of the graph can be meshed")
        coords = chunk_coordinates(index.layout, l2_ids)
        until = alive_until(index, idx)
        groups: dict[tuple[int, int, int], dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
        for node, c, seq in zip(idx.tolist(), coords.tolist(), until.tolist()):
            groups[tuple(c)][int(seq)].append(int(node))
        resolution = layout.resolution
        grid = layout.draco_grid_size
        volume_start = layout.voxel_offset
        volume_end = volume_start + np.asarray(index.geometry.volume_size, dtype=np.int64)
        node_ids = index.node_id.view()
        write = self.store.replace if replace else self.store.write
        for chunk, by_seq in groups.items():
            lo, hi = layout.chunk_box(np.array(chunk))
            top = np.minimum(hi + 1, volume_end)
            labels = handle.volume.cutout(lo, top)
            pieces: dict[int, list[Surface]] = {n: [] for members in by_seq.values() for n in members}
            for seq, members in by_seq.items():
                nodes = np.array(members, dtype=np.int64)
                volume = chunk_labels(index, labels, chunk, seq, nodes)
                for value, surface in surfaces(volume, lo * resolution, resolution).items():
                    pieces[members[value - 1]].append(surface)
                reach = [reached_chunks(index, n, seq) for n in members]
                for step in LOWER_STEPS:
                    if (lo - step < volume_start).any():
                        continue  # the volume's edge stays open
                    owners = [tuple(int(c) - int(d) for c, d in zip(chunk, sub)) for sub in _sub_steps(step)]
                    lonely = np.array([not any(o in r for o in owners) for r in reach], dtype=bool)
                    if not lonely.any():
                        continue
                    slab_lo = lo - step
                    slab_hi = np.where(step > 0, lo + 1, top)
                    cut = handle.volume.cutout(slab_lo, slab_hi)
                    slab = slab_labels(index, cut, chunk, seq, nodes, lonely)
                    for value, surface in surfaces(slab, slab_lo * resolution, resolution).items():
                        pieces[members[value - 1]].append(surface)
            fragments = {
                int(node_ids[n]): encode_draco(*weld(parts, grid), grid) if parts else b"" for n, parts in pieces.items()
            }
            write(handle.table_id, fragments)

    def after_edit(self, edit: CommittedEdit) -> None:
        """Queue, after an edit (a subscriber to edits): meshing its new L2 nodes, and re-meshing
        the other L2 nodes at the ends of the edges it changed (what they claim across chunk
        faces changed), to start once edits pause (a manifest needing a claimed node waits for
        it meanwhile). If the work is dropped, the stale meshes are deleted so that manifests
        mesh them again on demand."""
        handle, new_ids, touched = edit.handle, list(edit.new_l2_ids), list(edit.edge_end_l2_ids)
        if not new_ids and not touched:
            return
        claimed = self._claim(handle.table_id, touched)  # now, so manifests wait for them

        def work() -> None:
            try:
                edit.wait_for_quiet()
                if claimed:
                    self._mesh(handle, np.array(claimed, dtype=np.uint64), replace=True)
            finally:
                self._release(handle.table_id, claimed)
            self.ensure(handle, new_ids)

        def dropped() -> None:
            self._release(handle.table_id, claimed)
            self.store.forget(handle.table_id, touched)

        self.background.submit(f"meshes after operation {edit.operation.op_id} of {handle.table_id}", work, dropped)

    # -- reading ---------------------------------------------------------------------------
    def manifest(self, handle: GraphHandle, node_id: int, query: ManifestQuery) -> dict[str, Any]:
        """The fragments of a node's L2 descendants (with ``verify``: only meshes with a surface,
        meshing what is missing first)."""
        index = handle.index
        idx = index.node_index([node_id])[0]
        if idx < 0:
            raise NotFound(f"Node {node_id} does not exist in graph {handle.table_id}.", code="unknown_node")
        layer = int(index.node_layer.view()[idx])
        if layer < MESHED_LAYER:
            raise BadRequest(
                f"Node {node_id} is a supervoxel (layer 1); meshes exist for nodes of layer 2 and above "
                "(L2 ids and roots).",
                code="supervoxel_id",
            )
        if query.start_layer is not None and query.start_layer < MESHED_LAYER:
            raise BadRequest(
                f"start_layer {query.start_layer} is below the meshed layer; meshes are made for layer {MESHED_LAYER}.",
                code="bad_start_layer",
            )
        l2_ids = queries.leaves(index, node_id, stop_layer=MESHED_LAYER, bounds=query.bounds)
        l2_ids = np.sort(l2_ids[_layers(handle, l2_ids) == MESHED_LAYER])
        ids = [int(i) for i in l2_ids]
        if query.verify:
            sizes = self.ensure(handle, ids)
            ids = [i for i in ids if sizes.get(i, 0) > 0]
        layout = self.layout(handle)
        names = [layout.fragment_name(i) for i in ids]
        if query.prepend_seg_ids:
            names = [f"~{i}:{name}" for i, name in zip(ids, names)]
        answer: dict[str, Any] = {"fragments": names}
        if query.return_seg_ids:
            answer["seg_ids"] = ids
        if query.return_seg_id_layers:
            answer["seg_id_layers"] = [MESHED_LAYER] * len(ids)
        if query.return_seg_chunk_coordinates:
            answer["seg_chunk_coordinates"] = chunk_coordinates(index.layout, np.array(ids, dtype=np.uint64)).tolist() if ids else []
        return answer

    def fragment(self, handle: GraphHandle, name: str) -> bytes:
        """The Draco bytes of a fragment named as manifests name them (meshed now if need be)."""
        layout = self.layout(handle)
        l2_id = layout.parse_fragment_name(name)
        index = handle.index
        idx = index.node_index([l2_id])[0]
        if idx < 0 or int(index.node_layer.view()[idx]) != MESHED_LAYER:
            raise NotFound(f"No mesh fragment {name!r}: {l2_id} is not an L2 node of {handle.table_id}.", code="no_such_fragment")
        data = self.store.fragment(handle.table_id, l2_id)
        if data is None:
            self.ensure(handle, [l2_id])
            data = self.store.fragment(handle.table_id, l2_id) or b""
        if not data:
            raise NotFound(f"L2 node {l2_id} has no surface in its chunk, so fragment {name!r} is empty.", code="empty_fragment")
        return data


def _layers(handle: GraphHandle, ids: np.ndarray) -> np.ndarray:
    index = handle.index
    idx = index.node_index(ids)
    return index.node_layer.view()[np.maximum(idx, 0)]
