"""Skeleton wire formats shared by the skeleton service and the client.

CAVE's skeleton service speaks several encodings and caveclient decodes them in fixed ways:

* "compressed" bodies are gzip of UTF-8 text; a dict is JSON without spaces, then gzipped
  (caveclient's ``compressStringToBytes`` / ``compressDictToBytes``);
* the *flat dict*: ``meta`` (with ``skeleton_version``), ``vertices``, ``edges``, ``root``,
  ``mesh_to_skel_map`` and the vertex properties (``radius``, ``compartment``, ``lvl2_ids``) at
  the top level;
* SWC rows ``id type x y z radius parent`` separated by single spaces, no header;
* the Neuroglancer precomputed skeleton binary;
* bulk answers ``{"<root id>": "<hex>"}`` where a flat dict's hex is its gzip JSON and an SWC's
  hex is the plain SWC text; a few sentinel strings stand for "not returned";
* the HDF5 skeleton file of CAVE's skeleton bucket (the service's ``h5`` format).

Only numpy and pandas are imported at load time (h5py only when an HDF5 file is read or
written), so the client can use this module cheaply.
"""

from __future__ import annotations

import gzip
import io
import json
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from opencave.wire import json_encoding
from opencave.wire.json_encoding import CaveJSONEncoder

# -- versions ------------------------------------------------------------------------------------
SKELETON_SERVER_VERSION = "0.24.0"  # >= 0.23.9 enables every caveclient 8.2.1 code path
SKELETON_VERSIONS = [-1, 0, 1, 2, 3, 4]
LATEST_SKELETON_VERSION = 4
NEUROGLANCER_SKELETON_VERSION = 2
SKELETON_VERSION_ALIASES = {-1: LATEST_SKELETON_VERSION, 0: NEUROGLANCER_SKELETON_VERSION}
SK_DICT_STRUCTURE_VERSION = 4  # the flat dict layout this module writes

# -- output formats ------------------------------------------------------------------------------
OUTPUT_FORMATS = (
    "precomputed",
    "json",
    "jsoncompressed",
    "flatdict",
    "arrays",
    "arrayscompressed",
    "swc",
    "swccompressed",
    "h5",
    "none",
    "meshwork",
)
BULK_FORMATS = ("flatdict", "json", "jsoncompressed", "swc", "swccompressed")

# -- bulk answers --------------------------------------------------------------------------------
BULK_ASYNC = "async"  # being generated in the background; ask again later
BULK_INVALID_RID = "invalid_rid"  # not a root id of this datastack
BULK_INVALID_LAYER_RID = "invalid_layer_rid"  # a node of another layer (e.g. a supervoxel)
BULK_SENTINELS = (BULK_ASYNC, BULK_INVALID_RID, BULK_INVALID_LAYER_RID)

SWC_COLUMNS = ["id", "type", "x", "y", "z", "radius", "parent"]
SWC_SCALE_NM = 1000.0  # SWC coordinates and radii are in µm; skeletons are in nm
COMPARTMENT_SOMA, COMPARTMENT_AXON, COMPARTMENT_DENDRITE = 1, 2, 3

PRECOMPUTED_TRANSFORM = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]


def resolve_skeleton_version(version: int) -> int:
    """The concrete version an alias stands for (−1 latest, 0 Neuroglancer); raises ValueError."""
    if version not in SKELETON_VERSIONS:
        raise ValueError(f"Unknown skeleton version: {version}. Valid options: {SKELETON_VERSIONS}")
    return SKELETON_VERSION_ALIASES.get(version, version)


def vertex_attribute_info(version: int) -> list[dict[str, Any]]:
    """The Neuroglancer ``vertex_attributes`` of a skeleton version, in binary order."""
    version = resolve_skeleton_version(version)
    if version == 1:
        return []
    compartment_type = "float32" if version == 2 else "uint8"
    return [
        {"id": "radius", "data_type": "float32", "num_components": 1},
        {"id": "compartment", "data_type": compartment_type, "num_components": 1},
    ]


def precomputed_skeleton_info(version: int) -> dict[str, Any]:
    """The ``neuroglancer_skeletons`` info document of a skeleton version."""
    return {
        "@type": "neuroglancer_skeletons",
        "transform": list(PRECOMPUTED_TRANSFORM),
        "vertex_attributes": vertex_attribute_info(version),
    }


# -- gzip text and JSON ----------------------------------------------------------------------------
def compress_text(text: str) -> bytes:
    """gzip of UTF-8 text (caveclient's ``compressStringToBytes``), with a zero timestamp so
    equal inputs give equal bytes."""
    return gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)


def decompress_text(data: bytes) -> str:
    """Inverse of ``compress_text`` (caveclient's ``decompressBytesToString``)."""
    return gzip.decompress(data).decode("utf-8")


def dumps_compact(value: Any) -> str:
    """JSON without spaces between tokens (numpy arrays and scalars as lists and numbers).

    caveclient removes every space from ``json.dumps`` output; compact separators give the same
    text for documents whose strings hold no spaces, and keep spaces inside strings intact.
    """
    return json.dumps(value, separators=(",", ":"), cls=CaveJSONEncoder)


def compress_dict(value: Mapping[str, Any]) -> bytes:
    """gzip of compact JSON (caveclient's ``compressDictToBytes``)."""
    return compress_text(dumps_compact(value))


def decompress_dict(data: bytes) -> dict[str, Any]:
    """Inverse of ``compress_dict`` (caveclient's ``decompressBytesToDict``)."""
    return json.loads(decompress_text(data))


# -- SWC ---------------------------------------------------------------------------------------------
def swc_rows(
    vertices_nm: np.ndarray,
    edges: np.ndarray,
    root: int,
    radius_nm: np.ndarray | None = None,
    compartment: np.ndarray | None = None,
) -> pd.DataFrame:
    """SWC rows of a skeleton given as vertices (nm) and child→parent edges.

    Rows are numbered from 0 in depth-first order from the root (parents before children),
    coordinates and radii are in µm, the type is the compartment (0 when unknown) and a root's
    parent is −1. Every connected component becomes its own tree.
    """
    n = len(vertices_nm)
    parent = np.full(n, -1, dtype=np.int64)
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    parent[edges[:, 0]] = edges[:, 1]
    order = parents_first(parent, root)
    new_id = np.empty(n, dtype=np.int64)
    new_id[order] = np.arange(n)
    old_parent = parent[order]
    radius = np.zeros(n) if radius_nm is None else np.asarray(radius_nm, dtype=float)
    types = np.zeros(n, dtype=np.int64) if compartment is None else np.asarray(compartment).astype(np.int64)
    xyz = np.asarray(vertices_nm, dtype=float)[order] / SWC_SCALE_NM
    return pd.DataFrame(
        {
            "id": np.arange(n, dtype=np.int64),
            "type": types[order],
            "x": xyz[:, 0] if n else np.zeros(0),
            "y": xyz[:, 1] if n else np.zeros(0),
            "z": xyz[:, 2] if n else np.zeros(0),
            "radius": radius[order] / SWC_SCALE_NM,
            "parent": np.where(old_parent >= 0, new_id[np.maximum(old_parent, 0)], -1),
        },
        columns=SWC_COLUMNS,
    )


def parents_first(parent: np.ndarray, root: int) -> np.ndarray:
    """Vertex order with every parent before its children, the given root's tree first."""
    n = len(parent)
    children: list[list[int]] = [[] for _ in range(n)]
    for child, par in enumerate(parent.tolist()):
        if par >= 0:
            children[par].append(child)
    roots = [v for v in range(n) if parent[v] < 0]
    if 0 <= root < n and parent[root] < 0:
        roots.remove(root)
        roots.insert(0, root)
    order: list[int] = []
    for start in roots:
        stack = [start]
        while stack:
            v = stack.pop()
            order.append(v)
            stack.extend(reversed(children[v]))
    if len(order) != n:
        raise ValueError("the edges do not form a forest (a cycle or a vertex with two parents)")
    return np.asarray(order, dtype=np.int64)


def swc_text(rows: pd.DataFrame) -> str:
    """SWC text of rows: ``id type x y z radius parent``, space-separated, no header."""
    lines = [
        f"{i} {t} {x:.3f} {y:.3f} {z:.3f} {r:.3f} {p}"
        for i, t, x, y, z, r, p in zip(
            rows["id"].astype(np.int64).tolist(),
            rows["type"].astype(np.int64).tolist(),
            rows["x"].tolist(),
            rows["y"].tolist(),
            rows["z"].tolist(),
            rows["radius"].tolist(),
            rows["parent"].astype(np.int64).tolist(),
        )
    ]
    return "\n".join(lines) + ("\n" if lines else "")


def swc_frame(text: str) -> pd.DataFrame:
    """SWC text → DataFrame with columns id, type, x, y, z, radius, parent, read exactly as
    caveclient reads it (the SWC the service sends has no header lines)."""
    return pd.read_csv(io.StringIO(text), sep=" ", names=SWC_COLUMNS)


# -- flat dict -------------------------------------------------------------------------------------
FLATDICT_ARRAY_KEYS = ("vertices", "edges", "mesh_to_skel_map", "radius", "compartment", "lvl2_ids")


def encode_flatdict(flat: Mapping[str, Any]) -> bytes:
    """gzip JSON of a flat skeleton dict (numpy arrays become lists)."""
    return compress_dict(flat)


def decode_flatdict(data: bytes, as_numpy: bool = True) -> dict[str, Any]:
    """A flat dict from its gzip JSON; array keys become numpy arrays unless ``as_numpy`` is False."""
    flat = decompress_dict(data)
    return flat_arrays(flat) if as_numpy else flat


def flat_arrays(flat: dict[str, Any]) -> dict[str, Any]:
    """The flat dict with its array keys as numpy arrays (as caveclient's ``get_skeleton``)."""
    out = dict(flat)
    for key in FLATDICT_ARRAY_KEYS:
        if key in out:
            out[key] = np.array(out[key])
    return out


# -- Neuroglancer precomputed skeleton ---------------------------------------------------------------
def encode_precomputed(
    vertices: np.ndarray, edges: np.ndarray, attributes: Iterable[tuple[np.ndarray, str]] = ()
) -> bytes:
    """Neuroglancer's skeleton binary: counts, float32 xyz, uint32 edges, then each attribute.

    ``attributes`` are (values, data_type) pairs in the order of the info's
    ``vertex_attributes``; all numbers little-endian.
    """
    vertices = np.asarray(vertices, dtype="<f4").reshape(-1, 3)
    edges = np.asarray(edges, dtype="<u4").reshape(-1, 2)
    parts = [np.array([len(vertices), len(edges)], dtype="<u4").tobytes(), vertices.tobytes(), edges.tobytes()]
    for values, data_type in attributes:
        values = np.asarray(values).astype(np.dtype(data_type).newbyteorder("<"))
        if len(values) != len(vertices):
            raise ValueError("a vertex attribute needs one value per vertex")
        parts.append(values.tobytes())
    return b"".join(parts)


def decode_precomputed(data: bytes, vertex_attributes: Iterable[Mapping[str, Any]] = ()) -> dict[str, np.ndarray]:
    """Inverse of ``encode_precomputed``: ``vertices``, ``edges`` and one array per attribute."""
    if len(data) < 8:
        raise ValueError("a precomputed skeleton starts with two uint32 counts")
    n_vertices, n_edges = (int(v) for v in np.frombuffer(data, dtype="<u4", count=2))
    offset = 8
    out: dict[str, np.ndarray] = {}
    out["vertices"] = np.frombuffer(data, dtype="<f4", count=3 * n_vertices, offset=offset).reshape(-1, 3)
    offset += 12 * n_vertices
    out["edges"] = np.frombuffer(data, dtype="<u4", count=2 * n_edges, offset=offset).reshape(-1, 2)
    offset += 8 * n_edges
    for attribute in vertex_attributes:
        dtype = np.dtype(attribute["data_type"]).newbyteorder("<")
        count = n_vertices * int(attribute.get("num_components", 1))
        values = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        offset += dtype.itemsize * count
        out[attribute["id"]] = values if count == n_vertices else values.reshape(n_vertices, -1)
    if offset != len(data):
        raise ValueError(f"precomputed skeleton has {len(data) - offset} unexpected trailing bytes")
    return out


# -- HDF5 ------------------------------------------------------------------------------------------
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
H5_ARRAY_KEYS = ("mesh_to_skel_map", "lvl2_ids")  # optional top-level datasets besides vertices, edges


def encode_h5(flat: Mapping[str, Any], vertex_properties: Iterable[str] = ("radius", "compartment")) -> bytes:
    """An HDF5 skeleton file laid out as CAVE's cached skeletons, from a flat dict.

    Arrays are gzip-compressed datasets; ``root`` a scalar; each vertex property a JSON text in
    the ``vertex_properties`` group; ``meta`` a JSON text as opaque bytes.
    """
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        for key in ("vertices", "edges", *H5_ARRAY_KEYS):
            if key in flat:
                f.create_dataset(key, data=np.asarray(flat[key]), compression="gzip")
        f.create_dataset("root", data=int(flat["root"]))
        group = f.create_group("vertex_properties")
        for key in vertex_properties:
            if key in flat:
                group.create_dataset(key, data=json.dumps(np.asarray(flat[key]).tolist()))
        f.create_dataset("meta", data=np.void(json_encoding.dumps(flat.get("meta", {})).encode()))
    return buffer.getvalue()


def decode_h5(data: bytes) -> dict[str, Any]:
    """A skeleton H5 file (optionally gzipped, as in CAVE's bucket) as a flat dict of arrays,
    read as caveclient's ``_parse_h5gz_to_dict`` reads it; ``ValueError`` if it is no HDF5 file."""
    import h5py

    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if data[:8] != HDF5_MAGIC:
        raise ValueError(f"Content is not a valid HDF5 file. Expected HDF5 magic number, got: {data[:8]}")
    with h5py.File(io.BytesIO(data), "r") as f:
        skeleton: dict[str, Any] = {"vertices": np.array(f["vertices"][()]), "edges": np.array(f["edges"][()])}
        for name in H5_ARRAY_KEYS:
            if name in f:
                skeleton[name] = np.array(f[name][()])
        if "vertex_properties" in f:
            for name in f["vertex_properties"].keys():
                skeleton[name] = np.array(json.loads(f["vertex_properties"][name][()]))
        if "meta" in f:
            skeleton["meta"] = json.loads(f["meta"][()].tobytes())
    return skeleton


# -- bulk answers ------------------------------------------------------------------------------------
def bulk_entry(payload: bytes) -> str:
    """The hex of one bulk answer.

    ``payload`` is the gzip JSON for flatdict/jsoncompressed and the plain (not gzipped) SWC
    text bytes for swc/swccompressed: that is what caveclient un-hexes and decodes.
    """
    return payload.hex()


def decode_bulk_entry(output_format: str, value: str) -> dict[str, Any] | pd.DataFrame | None:
    """One bulk answer decoded as caveclient does: None for a sentinel, a dict or an SWC frame."""
    if value in BULK_SENTINELS:
        return None
    raw = bytes.fromhex(value)
    if output_format in ("swc", "swccompressed"):
        return swc_frame(raw.decode("utf-8"))
    return decompress_dict(raw)


# -- refusal list ----------------------------------------------------------------------------------
def encode_refusal_list(rows: Iterable[tuple[str, int]]) -> bytes:
    """gzip of CSV lines ``datastack,root_id`` (no header), as caveclient reads it."""
    return compress_text("".join(f"{ds},{int(rid)}\n" for ds, rid in rows))


def decode_refusal_list(data: bytes) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(decompress_text(data)), sep=",", names=["DATASTACK_NAME", "ROOT_ID"])
