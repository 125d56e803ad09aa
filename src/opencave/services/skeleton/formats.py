"""Encodings of a canonical skeleton for every skeleton version and output format.

v1: vertices and edges only; v2: + ``radius`` and ``compartment`` as float32 (Neuroglancer);
v3: ``compartment`` as uint8; v4: v3 + ``lvl2_ids``. Aliases (−1, 0) are resolved by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from opencave.errors import BadRequest
from opencave.wire import skeletons as wire

from .model import Skeleton

BINARY = "application/octet-stream"
JSON = "application/json"
SWC_DEFAULT_RADIUS_NM = 1000.0  # meshparty's SWC radius when a skeleton has none (1 µm)


@dataclass
class Encoded:
    body: bytes
    media_type: str
    filename: str | None = None  # set: sent as an attachment


def _vertex_properties(sk: Skeleton, version: int) -> dict[str, np.ndarray]:
    if version == 1:
        return {}
    compartment = sk.compartment.astype(np.float32) if version == 2 else sk.compartment.astype(np.uint8)
    return {"radius": sk.radius.astype(np.float32), "compartment": compartment}


def _meta(sk: Skeleton, version: int) -> dict[str, Any]:
    meta = dict(sk.meta)
    meta["skeleton_version"] = version
    return meta


def flatdict(sk: Skeleton, version: int) -> dict[str, Any]:
    """The flat dict: meta, vertices, edges, root, mesh_to_skel_map, vertex properties, lvl2_ids."""
    out: dict[str, Any] = {
        "meta": _meta(sk, version),
        "edges": sk.edges,
        "mesh_to_skel_map": sk.mesh_to_skel_map,
        "root": int(sk.root),
        "vertices": sk.vertices,
    }
    out.update(_vertex_properties(sk, version))
    if version >= 4:
        out["lvl2_ids"] = sk.lvl2_ids
    return out


def _topology(sk: Skeleton) -> dict[str, np.ndarray]:
    """End and branch points, hops and distance to the root (for the full JSON answer)."""
    n = sk.n_vertices
    parent = sk.parent
    n_children = np.bincount(sk.edges[:, 1], minlength=n) if len(sk.edges) else np.zeros(n, dtype=np.int64)
    parents_first = wire.parents_first(parent, sk.root)
    hops = np.zeros(n, dtype=np.int64)
    dist = np.zeros(n)
    for v in parents_first.tolist():
        p = parent[v]
        if p >= 0:
            hops[v] = hops[p] + 1
            dist[v] = dist[p] + float(np.linalg.norm(sk.vertices[v] - sk.vertices[p]))
    return {
        "branch_points": np.flatnonzero(n_children >= 2),
        "end_points": np.flatnonzero(n_children == 0),
        "hops_to_root": hops,
        "distance_to_root": dist,
    }


def full_json(sk: Skeleton, version: int) -> dict[str, Any]:
    """The full JSON skeleton (``json``/``jsoncompressed``), vertex properties nested."""
    props = _vertex_properties(sk, version)
    out: dict[str, Any] = {"jsonification_version": "1.0"}
    out.update(_topology(sk))
    out.update(
        {
            "edges": sk.edges,
            "mesh_index": sk.mesh_index,
            "mesh_to_skel_map": sk.mesh_to_skel_map,
            "meta": _meta(sk, version),
            "node_mask": np.ones(sk.n_vertices, dtype=bool),
            "root": int(sk.root),
            "root_position": sk.vertices[sk.root],
            "unmasked_size": sk.n_vertices,
            "vertex_properties": props,
            "vertices": sk.vertices,
        }
    )
    if "radius" in props:
        out["radius"] = props["radius"]
    if version >= 4:
        out["lvl2_ids"] = sk.lvl2_ids
    return out


def arrays(sk: Skeleton, version: int) -> dict[str, Any]:
    return {"vertices": sk.vertices, "vertex_properties": _vertex_properties(sk, version), "edges": sk.edges}


def precomputed(sk: Skeleton, version: int) -> bytes:
    props = _vertex_properties(sk, version)
    attributes = [(props[a["id"]], a["data_type"]) for a in wire.vertex_attribute_info(version)]
    return wire.encode_precomputed(sk.vertices, sk.edges, attributes)


def swc(sk: Skeleton, version: int) -> str:
    if version == 1:
        radius = np.full(sk.n_vertices, SWC_DEFAULT_RADIUS_NM)
        labels = np.zeros(sk.n_vertices, dtype=np.int64)
    else:
        radius, labels = sk.radius, sk.compartment
    return wire.swc_text(wire.swc_rows(sk.vertices, sk.edges, sk.root, radius, labels))


def h5(sk: Skeleton, version: int) -> bytes:
    """An HDF5 skeleton file laid out as CAVE's cached skeletons (vertex properties as JSON)."""
    return wire.encode_h5(flatdict(sk, version))


def filename(sk: Skeleton, version: int, fmt: str) -> str:
    return f"skeleton__v{version}__rid-{sk.root_id}__ds-{sk.datastack}.{fmt}"


def encode(sk: Skeleton, version: int, fmt: str) -> Encoded:
    """One skeleton in one (concrete) version and output format."""
    if fmt == "precomputed":
        return Encoded(precomputed(sk, version), BINARY)
    if fmt == "flatdict":
        return Encoded(wire.encode_flatdict(flatdict(sk, version)), BINARY)
    if fmt == "json":
        return Encoded(wire.dumps_compact(full_json(sk, version)).encode(), JSON)
    if fmt == "jsoncompressed":
        return Encoded(wire.compress_dict(full_json(sk, version)), BINARY)
    if fmt == "arrays":
        return Encoded(wire.dumps_compact(arrays(sk, version)).encode(), JSON)
    if fmt == "arrayscompressed":
        return Encoded(wire.compress_dict(arrays(sk, version)), BINARY)
    if fmt == "swc":
        return Encoded(swc(sk, version).encode(), BINARY, filename(sk, version, "swc"))
    if fmt == "swccompressed":
        return Encoded(wire.compress_text(swc(sk, version)), BINARY)
    if fmt == "h5":
        return Encoded(h5(sk, version), BINARY, filename(sk, version, "h5"))
    raise BadRequest(f"Unknown output format {fmt!r}; use one of {list(wire.OUTPUT_FORMATS)}.", code="bad_format")


def bulk_payload(sk: Skeleton, version: int, fmt: str) -> bytes:
    """The bytes whose hex a bulk answer carries: gzip JSON, or plain SWC text for SWC formats."""
    if fmt in ("swc", "swccompressed"):
        return swc(sk, version).encode()
    if fmt == "flatdict":
        return wire.encode_flatdict(flatdict(sk, version))
    if fmt in ("json", "jsoncompressed"):
        return wire.compress_dict(full_json(sk, version))
    raise BadRequest(f"Bulk answers come as {list(wire.BULK_FORMATS)}; got {fmt!r}.", code="bad_format")
