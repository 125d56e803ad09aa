"""A small random supervoxel graph in the world format, for chunkedgraph tests that need no
voxels (the agglomeration only depends on supervoxels, chunks and edges)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from opencave.wire.node_ids import NodeIdLayout, layer_count

CHUNK_SIZE = (64, 64, 16)


def make_tiny_world(directory: Path, seed: int, chunks: tuple[int, int, int] = (4, 2, 2), max_per_chunk: int = 5) -> Path:
    """Random supervoxels per chunk, edges between supervoxels of the same or touching chunks."""
    rng = np.random.default_rng(seed)
    n_layers = layer_count(chunks)
    layout = NodeIdLayout.for_layers(n_layers)
    counts = rng.integers(1, max_per_chunk + 1, size=chunks).astype(np.int32)
    coords, ids = [], []
    for x in range(chunks[0]):
        for y in range(chunks[1]):
            for z in range(chunks[2]):
                for seg in range(1, counts[x, y, z] + 1):
                    coords.append((x, y, z))
                    ids.append(layout.node_id(1, x, y, z, seg))
    coords = np.array(coords)
    ids = np.array(ids, dtype=np.uint64)
    n = ids.size
    i, j = np.triu_indices(n, k=1)
    near = np.abs(coords[i] - coords[j]).max(axis=1) <= 1
    pick = near & (rng.random(i.size) < 0.1)
    a, b = ids[i[pick]], ids[j[pick]]
    edges = np.stack((np.minimum(a, b), np.maximum(a, b)), axis=1)
    order = np.lexsort((edges[:, 1], edges[:, 0]))
    edges = edges[order]
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(
        directory / "graph.npz",
        chunk_sv_counts=counts,
        edges=edges,
        affinity=rng.uniform(0.05, 1.0, edges.shape[0]).astype(np.float32),
        area=rng.integers(1, 50, edges.shape[0]).astype(np.int32),
        initially_active=rng.random(edges.shape[0]) < 0.5,
        sv_ids=ids,
    )
    world = {
        "format": 1,
        "name": directory.name,
        "resolution": [8, 8, 40],
        "voxel_offset": [0, 0, 0],
        "volume_size": [c * s for c, s in zip(chunks, CHUNK_SIZE)],
        "chunk_size": list(CHUNK_SIZE),
        "chunks_per_axis": list(chunks),
        "n_layers": n_layers,
        "spatial_bit_masks": {str(k): v for k, v in layout.bits.items()},
    }
    (directory / "world.json").write_text(json.dumps(world))
    return directory


def chunk_centre(layout: NodeIdLayout, sv_id: int) -> list[int]:
    """A voxel in the middle of a supervoxel's chunk (tiny worlds have no voxels to look at)."""
    from opencave.wire.node_ids import chunk_coordinates

    c = chunk_coordinates(layout, [sv_id])[0]
    return [int(c[k] * CHUNK_SIZE[k] + CHUNK_SIZE[k] // 2) for k in range(3)]
