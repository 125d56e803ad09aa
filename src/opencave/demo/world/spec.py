"""A built world on disk: ``world.json`` as a dataclass, with its other files loaded on demand."""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from opencave.wire.node_ids import NodeIdLayout

FORMAT = 1
EPOCH = "2025-01-06T09:00:00Z"
GRAPH_ARRAYS = (
    "chunk_sv_counts",
    "edges",
    "affinity",
    "area",
    "initially_active",
    "sv_ids",
    "sv_neuron",
    "sv_voxels",
)


@dataclass(frozen=True)
class WorldGraph:
    """Supervoxels in canonical order and their contacts (``graph.npz``).

    Canonical order is ascending id (chunks in C order of (x, y, z), then segment), so
    ``sv_index`` is a binary search. Edge endpoints are ids with ``edges[:, 0] < edges[:, 1]``.
    """

    chunk_sv_counts: np.ndarray
    edges: np.ndarray
    affinity: np.ndarray
    area: np.ndarray
    initially_active: np.ndarray
    sv_ids: np.ndarray
    sv_neuron: np.ndarray
    sv_voxels: np.ndarray

    def sv_index(self, ids: Any) -> np.ndarray:
        """Index of each id in the sv arrays; -1 for ids that are not supervoxels."""
        ids = np.atleast_1d(np.asarray(ids, dtype=np.uint64))
        index = np.minimum(np.searchsorted(self.sv_ids, ids), len(self.sv_ids) - 1)
        return np.where(self.sv_ids[index] == ids, index, -1)


@dataclass(frozen=True)
class WorldSpec:
    path: Path
    name: str
    size: str
    seed: int
    resolution: list[int]
    voxel_offset: list[int]
    volume_size: list[int]
    chunk_size: list[int]
    chunks_per_axis: list[int]
    n_layers: int
    spatial_bit_masks: dict[str, int]
    epoch: str
    n_supervoxels: int
    n_edges: int
    n_neurons: int
    format: int = FORMAT

    @property
    def ws_dir(self) -> Path:
        """The precomputed watershed volume."""
        return self.path / "ws"

    @property
    def layout(self) -> NodeIdLayout:
        return NodeIdLayout(
            self.n_layers, {int(k): int(v) for k, v in self.spatial_bit_masks.items()}
        )

    @cached_property
    def graph(self) -> WorldGraph:
        with np.load(self.path / "graph.npz") as data:
            return WorldGraph(**{name: data[name] for name in GRAPH_ARRAYS})

    @cached_property
    def cells(self) -> list[dict[str, Any]]:
        return json.loads((self.path / "cells.json").read_text())

    @cached_property
    def history(self) -> list[dict[str, Any]]:
        return json.loads((self.path / "history.json").read_text())

    def to_json(self) -> dict[str, Any]:
        data = {"format": self.format, **asdict(self)}
        del data["path"]
        return data


def load_world(directory: Path) -> WorldSpec:
    directory = Path(directory)
    data = json.loads((directory / "world.json").read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{directory} holds world format {data.get('format')}, expected {FORMAT}")
    known = {f.name for f in fields(WorldSpec)} - {"path"}
    return WorldSpec(path=directory, **{k: v for k, v in data.items() if k in known})


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n")


def save_graph(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed``, but with fixed zip timestamps so equal arrays give equal bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in GRAPH_ARRAYS:
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(entry, "w", force_zip64=True) as handle:
                np.lib.format.write_array(
                    handle, np.ascontiguousarray(arrays[name]), allow_pickle=False
                )
