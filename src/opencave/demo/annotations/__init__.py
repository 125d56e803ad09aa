"""The demo datastack's annotation tables, computed deterministically from a world and a seed.

Nothing here touches a database: the result is numpy columns under the schemas' flat column
names plus ``created``/``deleted`` times, ready for the annotation service's bulk insert, and
suggested materialization version times. Every bound point lies inside a known supervoxel
(``TableContent.supervoxel_ids``), so the service's point lookup gives the same ids.

Timeline (POSIX seconds, UTC), relative to the world epoch E (the graph's ingest):

* E + 5 min: nucleus detections (including ~3% false ones, deleted by proofreaders later);
* E + 10 min: the first synapse detection run (95% of synapses), inserted in batches;
* then the coarse cell types; **version 1** follows, before most proofreading;
* mid-history, 03:00 of a night: a second synapse detection run (5%); **version 2** follows;
* during the history, in working hours: ~1% of synapses deleted as false positives, false
  nuclei deleted, a few cell types corrected (old row deleted, new row created at once);
* after each cell's last edit: its proofreading status;
* **version 3**: an hour after the last of all events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from opencave.demo.annotations.cells import cell_types, nuclei, proofreading_status
from opencave.demo.annotations.synapses import (
    SYNAPSE_TARGETS,
    synapse_sites,
    synapse_target,
)
from opencave.demo.annotations.timeline import (
    DAY,
    HOUR,
    distinct_time,
    read_history,
    workday_times,
)
from opencave.demo.world.spec import WorldSpec

__all__ = [
    "SYNAPSE_TARGETS",
    "VOXEL_RESOLUTION",
    "DemoAnnotations",
    "TableContent",
    "generate_annotations",
    "synapse_target",
]

VOXEL_RESOLUTION = (8, 8, 40)
SECOND_BATCH = 0.05
FALSE_SYNAPSES = 0.01
INSERT_BATCH = 50_000  # rows per bulk insert of a detection run
INSERT_SECONDS = 2.0  # time one such insert takes


@dataclass(frozen=True)
class TableContent:
    """One annotation table's rows: flat schema columns (positions as (n, 3) voxel arrays at
    ``VOXEL_RESOLUTION``), creation and deletion times (NaN: never deleted).

    For a reference table, ``target_index`` indexes the rows of ``reference_table`` (the inserter
    maps it to their ids). ``supersedes_index`` (-1: none) marks a row as the update of an earlier
    row of the same table, deleted when this one was created. ``supervoxel_ids`` maps each flat
    supervoxel column to the supervoxel its point was placed in.
    """

    name: str
    schema: str
    description: str
    columns: dict[str, np.ndarray]
    created: np.ndarray
    deleted: np.ndarray
    reference_table: str | None = None
    target_index: np.ndarray | None = None
    supersedes_index: np.ndarray | None = None
    supervoxel_ids: dict[str, np.ndarray] | None = None

    @property
    def n_rows(self) -> int:
        return len(self.created)


@dataclass(frozen=True)
class DemoAnnotations:
    tables: list[TableContent]  # in insertion order (referenced tables first)
    version_times: list[float]  # suggested materialization times, increasing

    def table(self, name: str) -> TableContent:
        return next(t for t in self.tables if t.name == name)


def _batched(start: float, n: int) -> np.ndarray:
    """Creation times of ``n`` rows inserted in consecutive bulk batches from ``start``."""
    return start + (np.arange(n) // INSERT_BATCH) * INSERT_SECONDS


def generate_annotations(
    world: WorldSpec, seed: int = 0, progress: Callable[[str], None] | None = None
) -> DemoAnnotations:
    """All demo annotation tables of ``world``; the same world and seed give equal arrays."""
    say = progress or (lambda _: None)
    streams = np.random.SeedSequence(seed).spawn(5)
    syn_rng, nuc_rng, type_rng, proof_rng, time_rng = (np.random.default_rng(s) for s in streams)
    history = read_history(world)
    epoch = history.epoch

    say("nucleus detections")
    nuc = nuclei(world, nuc_rng)
    nuc_created = np.full(len(nuc.volume), epoch + 5 * 60.0)
    nuc_deleted = np.full(len(nuc.volume), np.nan)
    nuc_deleted[nuc.n_true :] = workday_times(
        time_rng,
        epoch + DAY,
        max(history.end, epoch + 2 * DAY),
        len(nuc.volume) - nuc.n_true,
    )

    target = synapse_target(world.size)
    say(f"synapses: placing {target:,} sites")
    syn = synapse_sites(world, syn_rng, target, SECOND_BATCH, progress)
    n_syn = len(syn.size)
    first_end = epoch + 10 * 60.0 + (max(syn.n_first - 1, 0) // INSERT_BATCH) * INSERT_SECONDS
    types_at = first_end + 10 * 60.0
    version_1 = types_at + 10 * 60.0 + 0.5
    mid = epoch + (history.end - epoch) / 2
    second_start = max(np.floor(mid / DAY) * DAY + 3 * HOUR, version_1 + HOUR)
    syn_created = np.concatenate(
        [
            _batched(epoch + 10 * 60.0, syn.n_first),
            _batched(second_start, n_syn - syn.n_first),
        ]
    )
    second_end = float(syn_created[-1]) if n_syn > syn.n_first else second_start
    version_2 = second_end + 30 * 60.0 + 0.5
    syn_deleted = np.full(n_syn, np.nan)
    false = np.sort(time_rng.choice(n_syn, size=round(FALSE_SYNAPSES * n_syn), replace=False))
    early = false[false < syn.n_first]
    late = false[false >= syn.n_first]
    syn_deleted[early] = workday_times(
        time_rng, epoch + DAY, max(history.end, epoch + 2 * DAY), len(early)
    )
    syn_deleted[late] = workday_times(
        time_rng, second_end + HOUR, max(history.end, second_end + 2 * DAY), len(late)
    )

    say("cell types and proofreading status")
    types = cell_types(world, type_rng, types_at, history)
    proof = proofreading_status(world, proof_rng, history)

    tables = [
        TableContent(
            name="nucleus_detection",
            schema="nucleus_detection",
            description="Nucleus detections: one per cell, at its nucleus inside the soma, plus a "
            "few false detections on orphan fragments that proofreaders later deleted. "
            "volume in µm³; bounding boxes in voxels (end exclusive).",
            columns={
                "volume": nuc.volume,
                "pt_position": nuc.position,
                "bb_start_position": nuc.bb_start,
                "bb_end_position": nuc.bb_end,
            },
            created=nuc_created,
            deleted=nuc_deleted,
            supervoxel_ids={"pt_supervoxel_id": nuc.supervoxel},
        ),
        TableContent(
            name="synapses",
            schema="synapse",
            description="Automatically detected synapses: pre_pt in the presynaptic and post_pt "
            "in the postsynaptic object, ctr_pt at the cleft; size in cleft voxels. A second "
            "detection run added 5% mid-history; ~1% were deleted as false positives.",
            columns={
                "pre_pt_position": syn.pre,
                "post_pt_position": syn.post,
                "ctr_pt_position": syn.ctr,
                "size": syn.size,
            },
            created=syn_created,
            deleted=syn_deleted,
            supervoxel_ids={
                "pre_pt_supervoxel_id": syn.pre_sv,
                "post_pt_supervoxel_id": syn.post_sv,
            },
        ),
        TableContent(
            name="cell_types",
            schema="cell_type_reference",
            description="Coarse cell types of the nucleus detections (AIBS classification "
            "systems, as MICrONS); a few were corrected by curators later.",
            columns={
                "classification_system": types.classification_system,
                "cell_type": types.cell_type,
            },
            created=types.created,
            deleted=types.deleted,
            reference_table="nucleus_detection",
            target_index=types.target_index,
            supersedes_index=types.supersedes_index,
        ),
        TableContent(
            name="proofreading_status",
            schema="compartment_proofread_status_strategy",
            description="Proofreading status of dendrites and axons per cell, recorded when "
            "proofreaders finished it (MICrONS strategies). valid_id holds the cell's index in "
            "the world's cells.json until the inserter replaces it with the root id.",
            columns={
                "pt_position": proof.position,
                "valid_id": proof.cell,
                "status_dendrite": proof.status_dendrite,
                "status_axon": proof.status_axon,
                "strategy_dendrite": proof.strategy_dendrite,
                "strategy_axon": proof.strategy_axon,
            },
            created=proof.created,
            deleted=np.full(len(proof.created), np.nan),
            supervoxel_ids={
                "pt_supervoxel_id": np.array(
                    [int(world.cells[c]["soma_supervoxel"]) for c in proof.cell],
                    dtype=np.uint64,
                ).reshape(-1)
            },
        ),
    ]

    stamps = [history.op_times] + [t.created for t in tables] + [t.deleted for t in tables]
    last = max(float(np.nanmax(s)) for s in stamps if len(s) and np.isfinite(s).any())
    versions: list[float] = []
    for wanted in (version_1, version_2, np.ceil(last / 60) * 60 + HOUR + 0.5):
        t = max(float(wanted), versions[-1] + 1.0) if versions else float(wanted)
        versions.append(distinct_time(t, stamps))
    return DemoAnnotations(tables=tables, version_times=versions)
