"""What tests need to know about the demo datastack's world: somata, history times, points."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from opencave.services.segmentation.volume import WatershedVolume
from opencave.demo.world import WorldSpec, load_world
from opencave.demo.world.spec import WorldGraph
from opencave.wire.node_ids import chunk_coordinates

WORLD_CACHE_ENV = "OPENCAVE_WORLD_CACHE"


def _parse(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class DemoWorld:
    directory: Path

    @cached_property
    def spec(self) -> WorldSpec:
        return load_world(self.directory)

    @property
    def cells(self) -> list[dict]:
        return self.spec.cells

    @property
    def history(self) -> list[dict]:
        return self.spec.history

    @property
    def graph(self) -> WorldGraph:
        return self.spec.graph

    @cached_property
    def volume(self) -> WatershedVolume:
        return WatershedVolume(self.spec.ws_dir)

    @property
    def epoch(self) -> dt.datetime:
        return _parse(self.spec.epoch)

    @property
    def op_times(self) -> list[dt.datetime]:
        return [_parse(op["timestamp"]) for op in self.history]

    @property
    def soma_supervoxels(self) -> np.ndarray:
        return np.array([c["soma_supervoxel"] for c in self.cells], dtype=np.uint64)

    def bounds_around(self, cell: int, half: tuple[int, int, int] = (48, 48, 8)) -> np.ndarray:
        centre = np.array(self.cells[cell]["nucleus_position"])
        return np.stack((centre - half, centre + half), axis=1)

    def voxel_of(self, sv: int) -> np.ndarray:
        """A voxel inside a supervoxel."""
        cx, cy, cz = chunk_coordinates(self.spec.layout, [sv])[0]
        labels = self.volume.read_chunk(int(cx), int(cy), int(cz))
        local = np.argwhere(labels == np.uint64(sv))
        inner = local[len(local) // 2]
        return inner + np.array([cx, cy, cz]) * np.array(self.spec.chunk_size)

    def viewer_point(self, sv: int) -> list[float]:
        """The supervoxel's voxel in viewer units (4, 4, 40 nm)."""
        voxel = self.voxel_of(sv)
        return [float(voxel[0] * 2), float(voxel[1] * 2), float(voxel[2])]

    def nm_point(self, sv: int) -> list[float]:
        """The supervoxel's voxel in nm."""
        return (self.voxel_of(sv) * np.array(self.spec.resolution)).astype(float).tolist()

    def two_points_on(self, client, root: int) -> tuple[np.ndarray, np.ndarray]:
        """Two points (nm) on an object, on two of its supervoxels far apart."""
        leaves = client.chunkedgraph.get_leaves(root)
        first, last = int(leaves[0]), int(leaves[-1])
        resolution = np.array(self.spec.resolution)
        return self.voxel_of(first) * resolution, self.voxel_of(last) * resolution

    def merge_candidates_raw(self, count: int) -> list[tuple[int, int]]:
        """Touching supervoxels of different neurons, one pair per pair of neurons (by contact
        size, skipping the first few, which other tests edit)."""
        return _neuron_pairs(self, count, skip=4)

    def merge_candidates(self, client, count: int) -> list[tuple[tuple[int, list[float]], tuple[int, list[float]]]]:
        """Pairs of touching supervoxels of different current objects, from distinct objects."""
        used: set[int] = set()
        found = []
        for a, b in _neuron_pairs(self, len(self.graph.edges)):
            roots = client.chunkedgraph.get_roots([a, b])
            if roots[0] == roots[1] or used & set(roots.tolist()):
                continue
            used |= set(roots.tolist())
            found.append(((a, self.viewer_point(a)), (b, self.viewer_point(b))))
            if len(found) == count:
                break
        return found


def _neuron_pairs(world: DemoWorld, count: int, skip: int = 0) -> list[tuple[int, int]]:
    graph = world.graph
    neuron = dict(zip(graph.sv_ids.tolist(), graph.sv_neuron.tolist()))
    used: set[tuple[int, int]] = set()
    found = []
    for a, b in graph.edges[np.argsort(-graph.area, kind="stable")].tolist():
        na, nb = neuron[a], neuron[b]
        if na == nb or 0 in (na, nb) or (min(na, nb), max(na, nb)) in used:
            continue
        used.add((min(na, nb), max(na, nb)))
        found.append((a, b))
    return found[skip : skip + count]


def demo_world(server) -> DemoWorld:
    cache = os.environ.get(WORLD_CACHE_ENV)
    if cache:
        return DemoWorld(Path(cache) / "small-0")
    return DemoWorld(server.data_dir / "worlds" / "opencave_demo")
