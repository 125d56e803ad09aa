"""Builds a synthetic world and turns it into a proofread chunkedgraph: ingest, then the
world's proofreading history replayed as real edits at their historical timestamps, then the
L2 cache filled and the world's EM image rendered. Each step is idempotent, so an interrupted
start is completed by the next.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from opencave.services.chunkedgraph import edits
from opencave.services.chunkedgraph.index import GraphIndex
from opencave.services.chunkedgraph.service import GraphHandle, GraphService
from opencave.services.imagery import image_volume
from opencave.services.l2cache.cache import L2Cache


class _AlreadyApplied(Exception):
    """Another process replayed this history step first."""


def _say(message: str) -> None:
    print(f"opencave: {message}", file=sys.stderr, flush=True)


def _posix(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def build_world_graph(
    graphs: GraphService, l2cache: L2Cache, table_id: str, world_dir: Path, size: str, seed: int, progress: bool = True
) -> GraphHandle:
    """World files → stored graph with its history, L2 attributes and EM image (skips finished steps)."""
    from opencave.demo.world import build_world, load_world

    if not (world_dir / "world.json").exists():
        if progress:
            _say(f"building the {size} synthetic world {table_id} (seed {seed})")
        build_world(world_dir, size=size, seed=seed, progress=progress)
    world = load_world(world_dir)
    if not graphs.exists(table_id):
        if progress:
            _say(f"ingesting {world.n_supervoxels:,} supervoxels into chunkedgraph {table_id}")
        try:
            graphs.create_graph(table_id, world_dir, _posix(world.epoch), progress=_say if progress else None)
        except Exception:
            if not graphs.exists(table_id):
                raise
    handle = graphs.graph(table_id)
    history = world.history
    if handle.index.seq < len(history):
        if progress:
            _say(f"replaying {len(history) - handle.index.seq} proofreading operations")
        replay_history(graphs, handle, history)
    missing = _l2_without_attributes(l2cache, handle)
    if missing.size:
        if progress:
            _say(f"computing L2 cache attributes of {missing.size:,} L2 nodes")
        l2cache.compute(handle, missing)
    image_volume(world_dir, progress=_say if progress else None)
    return handle


def replay_history(graphs: GraphService, handle: GraphHandle, history: list[dict[str, Any]]) -> None:
    """Apply history step i as operation i + 1, unless it is applied already."""
    for step, entry in enumerate(history):
        expected = step + 1
        if handle.index.seq >= expected:
            continue

        def plan(index: GraphIndex, entry=entry, expected=expected) -> edits.EditPlan:
            if index.seq + 1 != expected:
                raise _AlreadyApplied
            return _plan(index, entry)

        try:
            graphs.commit(handle, plan, str(entry["user_id"]), _posix(entry["timestamp"]))
        except _AlreadyApplied:
            continue


def _plan(index: GraphIndex, entry: dict[str, Any]) -> edits.EditPlan:
    kind = entry["kind"]
    if kind == "merge":
        (sv_a, *point_a), (sv_b, *point_b) = entry["points"]
        details = {"source_ids": [sv_a], "sink_ids": [sv_b], "source_coords": [point_a], "sink_coords": [point_b]}
        return edits.plan_merge(index, int(sv_a), int(sv_b), details)
    if kind == "split":
        sources = np.array([p[0] for p in entry["sources"]], dtype=np.uint64)
        sinks = np.array([p[0] for p in entry["sinks"]], dtype=np.uint64)
        source_coords = np.array([p[1:] for p in entry["sources"]], dtype=np.int64)
        sink_coords = np.array([p[1:] for p in entry["sinks"]], dtype=np.int64)
        cut = edits.find_split(index, sources, sinks, source_coords, sink_coords)
        details = {
            "source_ids": sources.tolist(),
            "sink_ids": sinks.tolist(),
            "source_coords": source_coords.tolist(),
            "sink_coords": sink_coords.tolist(),
            "bb_offset": list(edits.DEFAULT_BB_OFFSET),
        }
        return edits.plan_split(index, cut, details)
    if kind in ("undo", "redo"):
        return edits.plan_undo_redo(index, int(entry["target"]) + 1, redo=kind == "redo")
    raise ValueError(f"unknown history operation {kind!r}")


def _l2_without_attributes(l2cache: L2Cache, handle: GraphHandle) -> np.ndarray:
    index = handle.index
    l2 = index.node_id.view()[np.flatnonzero(index.node_layer.view() == 2)]
    stored = l2cache.stored_ids(handle.table_id)
    return l2[~np.isin(l2, stored)]
