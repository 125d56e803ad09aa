"""The canonical skeleton of a root and its stored form.

One skeleton per (datastack, root) is made and kept, holding everything any skeleton version
needs (v4's content); older versions are views of it. ``lvl2_ids`` is co-indexed with
``mesh_to_skel_map`` (entry i: an L2 node and the skeleton vertex it belongs to), as in CAVE's
skeleton service, because a collapsed soma vertex stands on no single L2 node.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .teasar import cable_length, parents

# Bump when the skeletonization changes: stored skeletons of another generator are remade.
GENERATOR = 2


@dataclass
class Skeleton:
    root_id: int
    datastack: str
    vertices: np.ndarray  # (k, 3) nm
    edges: np.ndarray  # (e, 2) child, parent
    root: int
    radius: np.ndarray  # (k,) nm, float32
    compartment: np.ndarray  # (k,) uint8: 1 soma, 2 axon, 3 dendrite
    mesh_to_skel_map: np.ndarray  # (n,) skeleton vertex of each L2 node
    lvl2_ids: np.ndarray  # (n,) uint64, co-indexed with mesh_to_skel_map
    mesh_index: np.ndarray  # (k,) L2 node index of each vertex, -1 for a soma vertex
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_vertices(self) -> int:
        return len(self.vertices)

    @property
    def parent(self) -> np.ndarray:
        return parents(self.n_vertices, self.edges)

    def path_length(self) -> float:
        return cable_length(self.vertices, self.edges)


def to_payload(sk: Skeleton) -> bytes:
    """Compressed npz of the arrays plus the meta JSON (what the ``skeletons`` table stores)."""
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        vertices=sk.vertices.astype(np.float64),
        edges=sk.edges.astype(np.int64),
        root=np.array([sk.root], dtype=np.int64),
        radius=sk.radius.astype(np.float32),
        compartment=sk.compartment.astype(np.uint8),
        mesh_to_skel_map=sk.mesh_to_skel_map.astype(np.int64),
        lvl2_ids=sk.lvl2_ids.astype(np.uint64),
        mesh_index=sk.mesh_index.astype(np.int64),
        meta=np.frombuffer(json.dumps({"root_id": sk.root_id, "datastack": sk.datastack, "meta": sk.meta}).encode(), dtype=np.uint8),
    )
    return buffer.getvalue()


def from_payload(payload: bytes) -> Skeleton:
    with np.load(io.BytesIO(payload), allow_pickle=False) as data:
        head = json.loads(data["meta"].tobytes().decode())
        return Skeleton(
            root_id=int(head["root_id"]),
            datastack=head["datastack"],
            vertices=data["vertices"],
            edges=data["edges"].reshape(-1, 2),
            root=int(data["root"][0]),
            radius=data["radius"],
            compartment=data["compartment"],
            mesh_to_skel_map=data["mesh_to_skel_map"],
            lvl2_ids=data["lvl2_ids"],
            mesh_index=data["mesh_index"],
            meta=head["meta"],
        )
