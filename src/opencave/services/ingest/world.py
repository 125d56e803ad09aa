"""The pass over a lab's segmentation that writes an ingested graph's world files.

Blocks of the volume (the layer's own chunk when it holds several graph chunks, so each is
decoded once) are read and split into supervoxels by worker processes, which write each graph
chunk's watershed file, and consumed in order by this process, which pairs each graph chunk's
lower faces with the upper faces its neighbours left pending, so only the blocks in flight and
those faces are held at once: memory follows the block size, not the volume. The files are those of a demo world (``world.json``, ``graph.npz``, ``ws/``), so the
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
from opencave.services.ingest.source import MAX_CHUNK_VOXELS, BlockReader, WatershedSource
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


def read_block(graph_chunk: tuple[int, int, int], layer_chunk: tuple[int, int, int]) -> tuple[int, int, int]:
    """The box a worker reads at once: per axis the layer's chunk when it is a multiple of the
    graph's (several graph chunks from one decoded chunk), else the graph chunk; never a box of
    more than ``MAX_CHUNK_VOXELS``."""
    block = tuple(c if c > g and c % g == 0 else g for g, c in zip(graph_chunk, layer_chunk))
    return block if int(np.prod(block)) <= MAX_CHUNK_VOXELS else graph_chunk  # type: ignore[return-value]


_readers: dict[str, BlockReader] = {}


def split_block(url: str, layout: NodeIdLayout, scale: dict[str, Any], chunks: list[tuple[int, int, int]], ws_dir: Path) -> list[ChunkSupervoxels]:
    """Read the box covering ``chunks`` once, split and store each chunk (in a worker process or
    this one); the answers carry no voxels."""
    reader = _readers.get(url)
    if reader is None:
        reader = _readers[url] = BlockReader(url)
    bounds = [chunk_bounds(scale, coords) for coords in chunks]
    lo = np.min([b[0] for b in bounds], axis=0)
    block = reader.read(lo, np.max([b[1] for b in bounds], axis=0))
    results = []
    for coords, (c_lo, c_hi) in zip(chunks, bounds):
        part = np.asfortranarray(block[tuple(slice(int(a), int(b)) for a, b in zip(c_lo - lo, c_hi - lo))])  # strided reads are slow
        result = relabel_chunk(part, coords, layout)
        if result.n:
            (ws_dir / chunk_file(scale, coords)).write_bytes(result.watershed)
        results.append(replace(result, watershed=b""))
    return results


def _face_pairs(high: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local labels facing each other across a chunk boundary (lower chunk's, upper chunk's),
    with the number of voxel faces they share."""
    both = (high != 0) & (low != 0)
    if not both.any():
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    keys, area = np.unique((high[both].astype(np.int64) << 32) | low[both].astype(np.int64), return_counts=True)
    return keys >> 32, keys & 0xFFFFFFFF, area.astype(np.int64)


class _Contacts:
    """Contacts as (chunk, local label) pairs until every chunk's supervoxel count is known."""

    def __init__(self) -> None:
        self.parts: list[tuple[int, np.ndarray, int, np.ndarray, np.ndarray]] = []

    def add(self, chunk_a: int, local_a: np.ndarray, chunk_b: int, local_b: np.ndarray, area: np.ndarray) -> None:
        if area.size:
            self.parts.append((chunk_a, local_a, chunk_b, local_b, area))

    def resolve(self, offsets: np.ndarray) -> Contacts:
        """Global supervoxel indices (``offsets``: first index of each chunk), a < b."""
        if not self.parts:
            empty = np.zeros(0, np.int64)
            return Contacts(empty, empty, empty)
        a = np.concatenate([offsets[ca] + la - 1 for ca, la, _, _, _ in self.parts])
        b = np.concatenate([offsets[cb] + lb - 1 for _, _, cb, lb, _ in self.parts])
        area = np.concatenate([part[4] for part in self.parts])
        return Contacts(np.minimum(a, b), np.maximum(a, b), area)


def split_volume(
    source: WatershedSource,
    ws_dir: Path,
    chunk_size: tuple[int, int, int],
    layout: NodeIdLayout,
    progress: bool = True,
    workers: int | None = None,
    label: str = "ingest",
    on_voxels: Callable[[int, int], None] | None = None,
) -> Supervoxels:
    """Write the supervoxel watershed of ``source`` into ``ws_dir`` and gather its graph; the
    voxels done so far go to a bar on stderr (``progress``) and to ``on_voxels(done, total)``."""
    info = segmentation_info(source.size, source.resolution, chunk_size, source.voxel_offset)  # type: ignore[arg-type]
    scale = info["scales"][0]
    write_info(ws_dir, info)
    (ws_dir / scale["key"]).mkdir(exist_ok=True)
    grid = tuple(-(-s // c) for s, c in zip(source.size, chunk_size))
    if workers is None:
        workers = (os.cpu_count() or 1) if source.n_voxels >= WORKERS_FROM_VOXELS else 1
    counts = np.zeros(int(np.prod(grid)), dtype=np.int64)
    labels: dict[int, np.ndarray] = {}
    voxels: dict[int, np.ndarray] = {}
    contacts = _Contacts()
    pending: dict[tuple[tuple[int, int, int], int], np.ndarray] = {}
    per_block = tuple(r // g for r, g in zip(read_block(chunk_size, source.chunk_size), chunk_size))
    done = 0
    with tqdm(total=source.n_voxels, desc=label, unit="vx", unit_scale=True, disable=not progress, file=sys.stderr) as bar:
        for results in _results(source.url, layout, scale, _blocks(grid, per_block), ws_dir, workers):
            for result in results:
                coords = result.coords
                linear = int(np.ravel_multi_index(coords, grid))
                counts[linear] = result.n
                labels[linear], voxels[linear] = result.labels, result.voxels
                contacts.add(linear, result.pairs[:, 0], linear, result.pairs[:, 1], result.area)
                for axis in range(3):
                    if coords[axis] > 0:
                        below = tuple(c - (k == axis) for k, c in enumerate(coords))
                        la, lb, area = _face_pairs(pending.pop((below, axis)), result.low_faces[axis])  # type: ignore[arg-type]
                        contacts.add(int(np.ravel_multi_index(below, grid)), la, linear, lb, area)
                    if coords[axis] < grid[axis] - 1:
                        pending[(coords, axis)] = result.high_faces[axis]
                chunk_voxels = _chunk_voxels(scale, coords)
                bar.update(chunk_voxels)
                if on_voxels is not None:
                    done += chunk_voxels
                    on_voxels(done, source.n_voxels)
    order = sorted(labels)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sv_label = np.concatenate([labels[k] for k in order]) if order else np.zeros(0, np.uint64)
    chunk_of = np.repeat(np.arange(counts.size), counts)
    local = np.arange(sv_label.size) - np.repeat(offsets, counts)
    xyz = np.array(np.unravel_index(chunk_of, grid)).reshape(3, -1)
    sv_ids = np.asarray(layout.node_id(1, xyz[0], xyz[1], xyz[2], local + 1), dtype=np.uint64).reshape(-1)
    return Supervoxels(
        chunk_sv_counts=counts.reshape(grid),
        sv_ids=sv_ids,
        sv_label=sv_label,
        sv_voxels=np.concatenate([voxels[k] for k in order]) if order else np.zeros(0, np.int64),
        contacts=contacts.resolve(offsets),
    )


def _blocks(grid: tuple[int, ...], per_block: tuple[int, ...]) -> Iterator[list[tuple[int, int, int]]]:
    """The graph chunks of each read block, blocks and the chunks inside them in C order: a
    chunk's lower neighbours always come before it."""
    block_grid = tuple(-(-g // p) for g, p in zip(grid, per_block))
    for block in np.ndindex(*block_grid):
        first = [b * p for b, p in zip(block, per_block)]
        ranges = [range(f, min(f + p, g)) for f, p, g in zip(first, per_block, grid)]
        yield [(x, y, z) for x in ranges[0] for y in ranges[1] for z in ranges[2]]


def _chunk_voxels(scale: dict[str, Any], coords: tuple[int, int, int]) -> int:
    lo, hi = chunk_bounds(scale, coords)
    return int(np.prod(hi - lo))


def _results(
    url: str, layout: NodeIdLayout, scale: dict[str, Any], blocks: Iterator[list[tuple[int, int, int]]], ws_dir: Path, workers: int
) -> Iterator[list[ChunkSupervoxels]]:
    """Every block split, in order; with workers, a few blocks ahead are in flight."""
    if workers <= 1:
        for chunks in blocks:
            yield split_block(url, layout, scale, chunks, ws_dir)
        return
    context = multiprocessing.get_context("spawn")  # the parent holds threads and connections
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        flight: deque[Future[list[ChunkSupervoxels]]] = deque()
        for chunks in blocks:
            flight.append(pool.submit(split_block, url, layout, scale, chunks, ws_dir))
            if len(flight) >= 2 * workers:
                yield flight.popleft().result()
        while flight:
            yield flight.popleft().result()
    finally:  # an error or an abandoned pass stops the workers without finishing the queue
        pool.shutdown(wait=True, cancel_futures=True)
