"""Build a demo world on disk: neurons, watershed volume, supervoxel graph, cells and history.

Everything follows from (size, seed): no clock, no unordered iteration, fixed compression
timestamps. The world is assembled in a sibling ``<name>.partial`` directory and renamed into
place, so an interrupted build never leaves a half world behind. One builder per directory.
"""

from __future__ import annotations

import shutil
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from opencave.demo.world.agglomeration import plan_proofreading
from opencave.demo.world.neurons import grow_neurons, grow_strays
from opencave.demo.world.sizes import (
    CHUNK_SIZE,
    RESOLUTION,
    VOXEL_OFFSET,
    WORLD_SIZES,
    WorldSize,
)
from opencave.demo.world.spec import (
    EPOCH,
    FORMAT,
    WorldSpec,
    load_world,
    save_graph,
    write_json,
)
from opencave.demo.world.watershed import (
    Capsules,
    SeedGrid,
    affinities,
    assign_neurons,
    oversegment,
)
from opencave.services.segmentation.precomputed import (
    chunk_file,
    encode_chunk,
    segmentation_info,
    write_info,
)
from opencave.wire.node_ids import NodeIdLayout, layer_count


def build_world(
    out_dir: Path, size: str = "small", seed: int = 0, progress: bool = True
) -> WorldSpec:
    """Build (or rebuild) the world ``size`` with ``seed`` into ``out_dir``."""
    if size not in WORLD_SIZES:
        raise ValueError(f"unknown world size {size!r}; choose one of {', '.join(WORLD_SIZES)}")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        _build_into(staging, out_dir.name, WORLD_SIZES[size], seed, progress)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    retired = out_dir.with_name(out_dir.name + ".old")
    shutil.rmtree(retired, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(retired)
    staging.rename(out_dir)
    shutil.rmtree(retired, ignore_errors=True)
    return load_world(out_dir)


def _build_into(directory: Path, name: str, size: WorldSize, seed: int, progress: bool) -> None:
    morphology, seeding, affinity, proofreading = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )
    grid = size.chunks_per_axis
    layout = NodeIdLayout.for_layers(layer_count(grid))
    with tqdm(
        total=int(np.prod(grid)),
        desc=f"{size.name} world",
        unit="chunk",
        disable=not progress,
        file=sys.stderr,
    ) as bar:
        bar.set_postfix_str("growing neurons")
        neurons = grow_neurons(morphology, size)
        strays = grow_strays(morphology, size, neurons)
        caps = Capsules.from_neurons(neurons, size.volume_size, strays)
        seeds = SeedGrid(seeding, size.volume_size)
        pieces_per_neuron = [len(neuron.pieces) for neuron in neurons]
        piece_neuron = np.concatenate(
            [[0], np.repeat(np.arange(1, len(neurons) + 1), pieces_per_neuron), [0] * len(strays)]
        ).astype(np.int64)
        piece_start = 1 + np.concatenate([[0], np.cumsum(pieces_per_neuron)[:-1]])

        info = segmentation_info(size.volume_size, RESOLUTION, CHUNK_SIZE, VOXEL_OFFSET)
        scale = info["scales"][0]
        ws_dir = directory / "ws"
        write_info(ws_dir, info)
        (ws_dir / scale["key"]).mkdir()
        nuclei = np.array([neuron.nucleus for neuron in neurons])
        soma_ids = np.zeros(len(neurons), dtype=np.uint64)

        def emit(coords: tuple[int, int, int], origin: np.ndarray, ids: np.ndarray) -> None:
            (ws_dir / chunk_file(scale, coords)).write_bytes(encode_chunk(ids))
            local = nuclei - origin
            here = np.all((local >= 0) & (local < ids.shape), axis=1)
            soma_ids[here] = ids[tuple(local[here].T)]

        bar.set_postfix_str("watershed")
        seg = oversegment(size, layout, caps, seeds, emit, bar.update)
        bar.set_postfix_str("agglomeration")
        soma_sv = np.searchsorted(seg.sv_ids, soma_ids)
        if not np.array_equal(seg.sv_piece[soma_sv], piece_start):
            raise RuntimeError("a nucleus lies outside its own soma")
        sv_neuron = assign_neurons(seg, piece_neuron, soma_sv)
        plan = plan_proofreading(
            proofreading, seg, sv_neuron, neurons, piece_start, datetime.fromisoformat(EPOCH)
        )
        save_graph(
            directory / "graph.npz",
            {
                "chunk_sv_counts": seg.chunk_sv_counts,
                "edges": seg.sv_ids[seg.edges],
                "affinity": affinities(affinity, seg, sv_neuron),
                "area": seg.area,
                "initially_active": plan.initially_active,
                "sv_ids": seg.sv_ids,
                "sv_neuron": sv_neuron,
                "sv_voxels": seg.sv_voxels,
            },
        )
        counts = np.bincount(sv_neuron, minlength=len(neurons) + 1)
        cells = [
            {
                "neuron_id": neuron.neuron_id,
                "cell_class": neuron.cell_class,
                "cell_type": neuron.cell_type,
                "nucleus_position": list(neuron.nucleus),
                "soma_supervoxel": int(soma_ids[index]),
                "n_supervoxels": int(counts[neuron.neuron_id]),
            }
            for index, neuron in enumerate(neurons)
        ]
        write_json(directory / "cells.json", cells)
        write_json(directory / "history.json", plan.history)
        spec = WorldSpec(
            path=directory,
            name=name,
            size=size.name,
            seed=seed,
            resolution=list(RESOLUTION),
            voxel_offset=list(VOXEL_OFFSET),
            volume_size=list(size.volume_size),
            chunk_size=list(CHUNK_SIZE),
            chunks_per_axis=list(grid),
            n_layers=layout.n_layers,
            spatial_bit_masks={str(k): v for k, v in layout.bits.items()},
            epoch=EPOCH,
            n_supervoxels=len(seg.sv_ids),
            n_edges=len(seg.edges),
            n_neurons=len(neurons),
            format=FORMAT,
        )
        write_json(directory / "world.json", spec.to_json())
        bar.set_postfix_str("done")
