"""Per-cell tables: nucleus detections, cell-type labels and proofreading status.

Nuclei sit at the world's nucleus positions, which lie in each cell's soma supervoxel; their
size comes from the soma as the watershed shows it, so bounding box and volume agree with the
volume a viewer displays. False detections sit on orphan fragments (glia-like blobs), as a
nucleus detector's false positives do, and are deleted later by a proofreader.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opencave.demo.annotations.timeline import DAY, History, workday_times
from opencave.demo.world.neurons import EXCITATORY_TYPES, INHIBITORY_TYPES
from opencave.demo.world.spec import WorldSpec
from opencave.services.segmentation.volume import WatershedVolume
from opencave.wire.node_ids import chunk_coordinates

FALSE_NUCLEI = 0.03
NUCLEUS_SHARE = 0.65  # nucleus radius / soma radius
SOMA_BOX = np.array([24, 24, 8])  # voxels searched around a nucleus for the soma's extent
RECLASSIFIED = 0.05
PROOFREAD = 0.85
DENDRITE_STRATEGIES = (
    ("dendrite_clean", 0.6),
    ("dendrite_extended", 0.35),
    ("none", 0.05),
)
AXON_STRATEGIES = (
    ("none", 0.5),
    ("axon_partially_extended", 0.3),
    ("axon_fully_extended", 0.2),
)
TYPES = {"excitatory": EXCITATORY_TYPES, "inhibitory": INHIBITORY_TYPES}


@dataclass(frozen=True)
class Nuclei:
    """One row per cell (in ``world.cells`` order), then the false detections.

    Bounding boxes are half-open voxel boxes; volumes are µm³.
    """

    position: np.ndarray  # (m, 3) int32
    bb_start: np.ndarray  # (m, 3) int32
    bb_end: np.ndarray  # (m, 3) int32
    volume: np.ndarray  # (m,) float64
    supervoxel: np.ndarray  # (m,) uint64
    n_true: int


def _run(line: np.ndarray) -> int:
    """Leading True values of a boolean line."""
    return len(line) if line.all() else int(np.argmin(line))


def _soma_radii(
    world: WorldSpec, volume: WatershedVolume, cell: int, centre: np.ndarray
) -> np.ndarray:
    """The soma's half extent per axis (voxels): the shorter of the two runs of the cell's own
    voxels from the nucleus, since a neurite leaving the soma lengthens only one of them."""
    graph = world.graph
    labels = volume.cutout(centre - SOMA_BOX, centre + SOMA_BOX + 1)
    index = np.searchsorted(graph.sv_ids, labels)
    own = np.zeros(labels.shape, dtype=bool)
    nonzero = labels != 0
    own[nonzero] = graph.sv_neuron[index[nonzero]] == world.cells[cell]["neuron_id"]
    c = SOMA_BOX
    lines = [
        (own[c[0] + 1 :, c[1], c[2]], own[c[0] - 1 :: -1, c[1], c[2]]),
        (own[c[0], c[1] + 1 :, c[2]], own[c[0], c[1] - 1 :: -1, c[2]]),
        (own[c[0], c[1], c[2] + 1 :], own[c[0], c[1], c[2] - 1 :: -1]),
    ]
    return np.array([min(_run(up), _run(down)) + 0.5 for up, down in lines])


def _inner_voxel(
    world: WorldSpec, volume: WatershedVolume, sv: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(voxel nearest the centroid, bbox start, half-open bbox end) of a supervoxel."""
    coords = chunk_coordinates(world.layout, [sv])[0]
    labels = volume.read_chunk(*(int(c) for c in coords))
    local = np.argwhere(labels == np.uint64(sv))
    resolution = np.array(world.resolution, dtype=np.float64)
    d2 = (((local - local.mean(axis=0)) * resolution) ** 2).sum(axis=1)
    origin = coords * np.array(world.chunk_size) + np.array(world.voxel_offset)
    return (
        local[np.argmin(d2)] + origin,
        local.min(axis=0) + origin,
        local.max(axis=0) + 1 + origin,
    )


def nuclei(world: WorldSpec, rng: np.random.Generator) -> Nuclei:
    """A nucleus per cell plus ~3% false detections on the largest orphan fragments."""
    volume = WatershedVolume(world.ws_dir)
    graph = world.graph
    voxel_um3 = float(np.prod(world.resolution)) / 1e9
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, float, int]] = []
    for cell, info in enumerate(world.cells):
        centre = np.array(info["nucleus_position"], dtype=np.int64)
        radii = NUCLEUS_SHARE * _soma_radii(world, volume, cell, centre)
        start = np.floor(centre + 0.5 - radii).astype(np.int64)
        end = np.ceil(centre + 0.5 + radii).astype(np.int64)
        vol = 4 / 3 * np.pi * float(np.prod(radii)) * voxel_um3
        rows.append((centre, start, end, vol, int(info["soma_supervoxel"])))

    n_false = max(1, round(FALSE_NUCLEI * world.n_neurons))
    somas = np.isin(graph.sv_ids, [int(c["soma_supervoxel"]) for c in world.cells])
    # orphans first (largest first), then non-soma fragments of cells if orphans run out
    order = np.lexsort((-graph.sv_voxels, graph.sv_neuron != 0))
    pool = order[~somas[order]][: 3 * n_false]
    for sv_index in np.sort(rng.choice(pool, size=min(n_false, len(pool)), replace=False)):
        sv = int(graph.sv_ids[sv_index])
        point, start, end = _inner_voxel(world, volume, sv)
        rows.append((point, start, end, float(graph.sv_voxels[sv_index]) * voxel_um3, sv))

    def stack(k: int, dtype: type) -> np.ndarray:
        return np.array([row[k] for row in rows], dtype=dtype)

    return Nuclei(
        position=stack(0, np.int32).reshape(-1, 3),
        bb_start=stack(1, np.int32).reshape(-1, 3),
        bb_end=stack(2, np.int32).reshape(-1, 3),
        volume=stack(3, np.float64),
        supervoxel=stack(4, np.uint64),
        n_true=world.n_neurons,
    )


@dataclass(frozen=True)
class CellTypes:
    target_index: np.ndarray  # (r,) int64 index into the nucleus rows
    classification_system: np.ndarray  # (r,) str
    cell_type: np.ndarray  # (r,) str
    created: np.ndarray
    deleted: np.ndarray
    supersedes_index: np.ndarray  # (r,) int64, -1 for original rows


def cell_types(
    world: WorldSpec, rng: np.random.Generator, created: float, history: History
) -> CellTypes:
    """MICrONS-style coarse types per cell; a few first get a wrong label that a curator fixes
    later (old row deleted and the corrected one created at the same moment)."""
    n = world.n_neurons
    classes = [c["cell_class"] for c in world.cells]
    truth = [c["cell_type"] for c in world.cells]
    first_class, first_type = list(classes), list(truth)
    fixed = np.sort(rng.choice(n, size=min(n, max(1, round(RECLASSIFIED * n))), replace=False))
    for cell in fixed.tolist():
        wrong_class = classes[cell]
        if rng.random() < 0.25:
            wrong_class = "inhibitory" if wrong_class == "excitatory" else "excitatory"
        options = [t for t in TYPES[wrong_class] if t != truth[cell]]
        first_class[cell], first_type[cell] = wrong_class, str(rng.choice(options))
    when = np.sort(
        workday_times(rng, created + DAY, max(history.end, created + 2 * DAY), len(fixed))
    )
    target = np.concatenate([np.arange(n), fixed]).astype(np.int64)
    system = [f"aibs_coarse_{c}" for c in first_class] + [
        f"aibs_coarse_{classes[c]}" for c in fixed
    ]
    kind = first_type + [truth[c] for c in fixed]
    deleted = np.full(n + len(fixed), np.nan)
    deleted[fixed] = when
    return CellTypes(
        target_index=target,
        classification_system=np.array(system, dtype=str),
        cell_type=np.array(kind, dtype=str),
        created=np.concatenate([np.full(n, created), when]),
        deleted=deleted,
        supersedes_index=np.concatenate([np.full(n, -1), fixed]).astype(np.int64),
    )


@dataclass(frozen=True)
class ProofreadingStatus:
    cell: np.ndarray  # (r,) int64 index into world.cells
    position: np.ndarray  # (r, 3) int32, the nucleus (in the soma supervoxel)
    status_dendrite: np.ndarray
    status_axon: np.ndarray
    strategy_dendrite: np.ndarray
    strategy_axon: np.ndarray
    created: np.ndarray


def proofreading_status(
    world: WorldSpec, rng: np.random.Generator, history: History
) -> ProofreadingStatus:
    """Most cells get a status, recorded after the last edit that touched them (a proofreader
    marks a cell done when finished); untouched cells are reviewed some time during the history."""
    n = world.n_neurons
    cells = np.sort(rng.choice(n, size=max(1, round(PROOFREAD * n)), replace=False))
    created = np.empty(len(cells))
    for row, cell in enumerate(cells.tolist()):
        last = history.last_edit[cell]
        if np.isfinite(last):
            created[row] = workday_times(rng, last + 600, last + 3 * DAY, 1)[0]
        else:
            created[row] = workday_times(rng, history.epoch + DAY, history.end, 1)[0]
    names, weights = zip(*DENDRITE_STRATEGIES)
    dendrite = rng.choice(names, size=len(cells), p=weights)
    names, weights = zip(*AXON_STRATEGIES)
    axon = rng.choice(names, size=len(cells), p=weights)
    order = np.argsort(created, kind="stable")
    cells, created, dendrite, axon = (
        cells[order],
        created[order],
        dendrite[order],
        axon[order],
    )
    position = np.array([world.cells[c]["nucleus_position"] for c in cells], dtype=np.int32)
    return ProofreadingStatus(
        cell=cells.astype(np.int64),
        position=position.reshape(-1, 3),
        status_dendrite=dendrite != "none",
        status_axon=axon != "none",
        strategy_dendrite=dendrite.astype(str),
        strategy_axon=axon.astype(str),
        created=created,
    )
