"""Fills a demo datastack's annotation tables and materializes its versions.

The content comes from ``demo.annotations`` (deterministic per world and seed); rows go in
through the annotation service's bulk path with their historical creation and deletion times,
so supervoxels are looked up from positions exactly as for any insert. Versions are then
created at the suggested moments of the timeline, which the live store and the chunkedgraph
can both answer for because neither forgets the past.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np

from opencave.demo.annotations import VOXEL_RESOLUTION, TableContent, generate_annotations
from opencave.demo.world.spec import load_world
from opencave.errors import Conflict
from opencave.services.materialize.roots import roots_of

if TYPE_CHECKING:
    from pathlib import Path

    from opencave.runtime import Runtime

DEMO_OWNER = "0"  # demo tables belong to no user: readable by all, written only by the generator

VIEWS = {
    "synapse_connections": (
        "Connections between pairs of segments: number of synapses and their summed size "
        "(autapses and synapses on background excluded).",
        "SELECT pre_pt_root_id, post_pt_root_id, count(*) AS n_synapses, sum(size) AS sum_size "
        "FROM synapses WHERE pre_pt_root_id <> post_pt_root_id AND pre_pt_root_id <> 0 AND post_pt_root_id <> 0 "
        "GROUP BY pre_pt_root_id, post_pt_root_id ORDER BY pre_pt_root_id, post_pt_root_id",
    ),
    "single_neurons": (
        "Nuclei whose segment holds exactly one nucleus, with their coarse cell type.",
        "SELECT n.id, n.pt_root_id, c.classification_system, c.cell_type, n.volume, "
        "n.pt_position_x, n.pt_position_y, n.pt_position_z FROM nucleus_detection n "
        "LEFT JOIN cell_types c ON c.target_id = n.id "
        "WHERE n.pt_root_id IN (SELECT pt_root_id FROM nucleus_detection WHERE pt_root_id <> 0 "
        "GROUP BY pt_root_id HAVING count(*) = 1) ORDER BY n.id",
    ),
}


def _moment(posix: float) -> datetime:
    return datetime.fromtimestamp(posix, tz=timezone.utc)


def populate_demo(
    runtime: "Runtime",
    datastack: str,
    world_dir: "Path",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Create and fill the demo tables, define the views and materialize the versions.

    Idempotent per step: tables that exist are kept, versions are only created when the
    datastack has none yet.
    """
    say = progress or (lambda message: None)
    world = load_world(world_dir)
    content = generate_annotations(world, seed, progress=say)
    aligned_volume = runtime.info.aligned_volume_of(datastack)
    graph_table = runtime.annotations.segmentation_of(aligned_volume)
    index = runtime.graphs.graph(graph_table).index if graph_table else None
    existing = set(runtime.annotations.table_names(aligned_volume, include_deleted=True))
    inserted: dict[str, np.ndarray] = {}
    for table in content.tables:
        if table.name in existing:
            continue
        inserted[table.name] = _insert(runtime, aligned_volume, table, inserted, index, world, say)
    for name, (description, query) in VIEWS.items():
        try:
            runtime.views.define(datastack, name, query, description, tuple(float(v) for v in VOXEL_RESOLUTION))
        except Conflict:
            pass
    if not runtime.materializer.registry.list(datastack, include_expired=True):
        for moment in content.version_times:
            runtime.materializer.create_version(datastack, _moment(moment), progress=say)


def _insert(runtime: "Runtime", aligned_volume: str, table: TableContent, inserted: dict[str, np.ndarray], index, world, say) -> np.ndarray:
    first = float(np.min(table.created)) if len(table.created) else world_epoch(world)
    runtime.annotations.create_table(
        aligned_volume,
        table.name,
        table.schema,
        description=table.description,
        voxel_resolution=VOXEL_RESOLUTION,
        user_id=DEMO_OWNER,
        reference_table=table.reference_table,
        read_permission="PUBLIC",
        write_permission="PRIVATE",
        timestamp=_moment(first - 1.0),
    )
    columns = dict(table.columns)
    if table.target_index is not None and table.reference_table is not None:
        columns["target_id"] = inserted[table.reference_table][table.target_index]
    if "valid_id" in columns and index is not None:
        # the proofread root: the soma's root when the status was recorded
        soma = np.array([int(world.cells[i]["soma_supervoxel"]) for i in columns["valid_id"]], dtype=np.int64)
        columns["valid_id"] = np.array([roots_of(index, soma[k : k + 1], t)[0] for k, t in enumerate(table.created)], dtype=np.int64)
    n = len(table.created)
    ids_guess = None
    if table.supersedes_index is not None:
        # ids are assigned in row order from the table's fresh sequence, so the superseded row's
        # id is known before inserting
        ids_guess = np.arange(1, n + 1, dtype=np.int64)
        links = np.full(n, np.nan)
        old = table.supersedes_index
        has = old >= 0
        links[old[has]] = ids_guess[has]
        columns["superceded_id"] = links
        columns["id"] = ids_guess
    say(f"inserting {n:,} rows into {table.name}")
    return runtime.annotations.insert_columns(
        aligned_volume, table.name, columns, created=table.created, deleted=table.deleted
    )


def world_epoch(world) -> float:
    return datetime.fromisoformat(world.epoch.replace("Z", "+00:00")).timestamp()
