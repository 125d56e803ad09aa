"""The pass over a lab's segmentation that writes an ingested graph's world files.

Chunks are read and split into supervoxels by worker processes (each reads, relabels and
writes its chunk's watershed file) and consumed in C order of (x, y, z) by this process, which
pairs each chunk's lower faces with the upper faces its neighbours left pending, so only the
chunks in flight and those faces are held at once: memory follows the chunk size, not the
volume. The files are those of a demo world (``world.json``, ``graph.npz``, ``ws/``), so the
chunkedgraph, L2 cache, meshing and lookups read an ingested graph exactly as a synthetic one.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from opencave.services.ingest.agglomeration import Contacts
from opencave.services.ingest.chunks import ChunkSupervoxels, relabel_chunk
from opencave.services.ingest.source import BlockReader, WatershedSource
from opencave.services.segmentation.precomputed import chunk_bounds, chunk_file, segmentation_info, write_info
from opencave.wire.node_ids import NodeIdLayout

WORKERS_FROM_VOXELS = 1 << 25  # smaller volumes are split in this process: starting workers costs more


@dataclass(frozen=True)
class Supervoxels:
    """Every supervoxel of the volume in canonical order (ascending id) and their face contacts."""

    chunk_sv_counts: np.ndarray  # (nx, ny, nz) int64
    sv_ids: np.ndarray  # uint64
    sv_label: np.ndarray  # uint64 original label
    sv_voxels: np.ndarray  # int64
    contacts: Contacts


def chunk_tasks(scale: dict[str, Any], grid: tuple[int, int, int]) -> Iterator[tuple[tuple[int, int, int], np.ndarray, np.ndarray]]:
    """(coords, lo, hi) of every graph chunk, in C order of (x, y, z)."""
    for coords in np.ndindex(*grid):
        lo, hi = chunk_bounds(scale, coords)
        yield tuple(int(c) for c in coords), lo, hi  # type: ignore[misc]


_readers: dict[str, BlockReader] = {}


def split_chunk(url: str, layout: NodeIdLayout, coords: tuple[int, int, int], lo: np.ndarray, hi: np.ndarray, out: Path) -> ChunkSupervoxels:
    """Read, split and store one chunk (in a worker process or this one); the answer carries no voxels."""
    reader = _readers.get(url)
    if reader is None:
        reader = _readers[url] = BlockReader(url)
    result = relabel_chunk(reader.read(lo, hi), coords, layout)
    if result.n:
        out.write_bytes(result.watershed)
    return replace(result, watershed=b"")


def _global(face: np.ndarray, offset: int) -> np.ndarray:
    """Local labels of a face → global supervoxel indices, -1 for background."""
    return np.where(face > 0, face.astype(np.int64) + (offset - 1), -1)


def _face_pairs(high: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global supervoxel index pairs facing each other across a chunk boundary, with areas."""
    both = (high >= 0) & (low >= 0)
    if not both.any():
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    keys, area = np.unique((high[both] << 32) | low[both], return_counts=True)
    return keys >> 32, keys & 0xFFFFFFFF, area.astype(np.int64)


def split_volume(
    source: WatershedSource,
    ws_dir: Path,
    chunk_size: tuple[int, int, int],
    layout: NodeIdLayout,
    progress: bool = True,
    workers: int | None = None,
    label: str = "ingest",
) -> Supervoxels:
    """Write the supervoxel watershed of ``source`` into ``ws_dir`` and gather its graph."""
    info = segmentation_info(source.size, source.resolution, chunk_size, source.voxel_offset)  # type: ignore[arg-type]
    scale = info["scales"][0]
    write_info(ws_dir, info)
    (ws_dir / scale["key"]).mkdir(exist_ok=True)
    grid = tuple(-(-s // c) for s, c in zip(source.size, chunk_size))
    if workers is None:
        workers = (os.cpu_count() or 1) if source.n_voxels >= WORKERS_FROM_VOXELS else 1
    counts = np.zeros(grid, dtype=np.int64)
    labels: list[np.ndarray] = []
    voxels: list[np.ndarray] = []
    a: list[np.ndarray] = []
    b: list[np.ndarray] = []
    area: list[np.ndarray] = []
    pending: dict[tuple[tuple[int, int, int], int], np.ndarray] = {}
    offset = 0
    with tqdm(total=source.n_voxels, desc=label, unit="vx", unit_scale=True, disable=not progress, file=sys.stderr) as bar:
        for result in _results(source.url, layout, scale, grid, ws_dir, workers):
            coords = result.coords
            counts[coords] = result.n
            labels.append(result.labels)
            voxels.append(result.voxels)
            a.append(result.pairs[:, 0] + offset - 1)
            b.append(result.pairs[:, 1] + offset - 1)
            area.append(result.area)
            for axis in range(3):
                if coords[axis] > 0:
                    below = tuple(c - (k == axis) for k, c in enumerate(coords))
                    low = _global(result.low_faces[axis], offset)
                    pa, pb, parea = _face_pairs(pending.pop((below, axis)), low)  # type: ignore[arg-type]
                    a.append(pa)
                    b.append(pb)
                    area.append(parea)
                if coords[axis] < grid[axis] - 1:
                    pending[(coords, axis)] = _global(result.high_faces[axis], offset)
            offset += result.n
            bar.update(_chunk_voxels(scale, coords))
    sv_label = np.concatenate(labels) if labels else np.zeros(0, np.uint64)
    chunk_of = np.repeat(np.arange(counts.size), counts.ravel())
    local = np.arange(sv_label.size) - np.repeat(np.cumsum(counts.ravel()) - counts.ravel(), counts.ravel())
    coords = np.array(np.unravel_index(chunk_of, grid)).reshape(3, -1)
    sv_ids = np.asarray(layout.node_id(1, coords[0], coords[1], coords[2], local + 1), dtype=np.uint64).reshape(-1)
    return Supervoxels(
        chunk_sv_counts=counts,
        sv_ids=sv_ids,
        sv_label=sv_label,
        sv_voxels=np.concatenate(voxels) if voxels else np.zeros(0, np.int64),
        contacts=Contacts(np.concatenate(a), np.concatenate(b), np.concatenate(area)),
    )


def _chunk_voxels(scale: dict[str, Any], coords: tuple[int, int, int]) -> int:
    lo, hi = chunk_bounds(scale, coords)
    return int(np.prod(hi - lo))


def _results(url: str, layout: NodeIdLayout, scale: dict[str, Any], grid: tuple[int, int, int], ws_dir: Path, workers: int) -> Iterator[ChunkSupervoxels]:
    """Every chunk split, in C order; with workers, a few chunks ahead are in flight."""
    tasks = ((coords, lo, hi, ws_dir / chunk_file(scale, coords)) for coords, lo, hi in chunk_tasks(scale, grid))
    if workers <= 1:
        for coords, lo, hi, out in tasks:
            yield split_chunk(url, layout, coords, lo, hi, out)
        return
    context = multiprocessing.get_context("spawn")  # the parent holds threads and connections
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        flight: deque[Future[ChunkSupervoxels]] = deque()
        for coords, lo, hi, out in tasks:
            flight.append(pool.submit(split_chunk, url, layout, coords, lo, hi, out))
            if len(flight) >= 2 * workers:
                yield flight.popleft().result()
        while flight:
            yield flight.popleft().result()
    finally:  # an error or an abandoned pass stops the workers without finishing the queue
        pool.shutdown(wait=True, cancel_futures=True)
