"""PyChunkedGraph's 64-bit node-id layout, shared by the chunkedgraph service and the client.

An id packs ``layer | chunk x | chunk y | chunk z | segment`` from the high bits down. The
layer takes 8 bits; each layer has its own number of spatial bits per axis (``bits[layer]``);
the segment takes what is left. Everything here is vectorised over numpy arrays and also works
on plain ints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

LAYER_ID_BITS = 8
SPATIAL_BITS = 10


def spatial_bit_masks(n_layers: int, spatial_bits: int = SPATIAL_BITS) -> dict[int, int]:
    """Spatial bits per axis for each layer, as PyChunkedGraph computes them."""
    if spatial_bits < n_layers - 2:
        raise ValueError(f"spatial_bits {spatial_bits} is smaller than n_layers - 2")
    masks = {layer: max(1, n_layers - layer) for layer in range(n_layers, 2, -1)}
    masks[2] = max(spatial_bits, n_layers - 2)
    masks[1] = masks[2]
    return dict(sorted(masks.items()))


def layer_count(chunks_per_axis: tuple[int, int, int], fanout: int = 2) -> int:
    """Number of layers for a grid of layer-2 chunks: a root layer above an octree."""
    widest = max(chunks_per_axis)
    return (math.ceil(math.log(widest, fanout)) if widest > 1 else 0) + 2


@dataclass(frozen=True)
class NodeIdLayout:
    """Encodes and decodes node ids of one graph."""

    n_layers: int
    bits: dict[int, int]

    @classmethod
    def for_layers(cls, n_layers: int, spatial_bits: int = SPATIAL_BITS) -> NodeIdLayout:
        return cls(n_layers, spatial_bit_masks(n_layers, spatial_bits))

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> NodeIdLayout:
        """From a segmentation info JSON (``graph.n_layers`` and ``graph.spatial_bit_masks``)."""
        graph = info["graph"]
        masks = graph.get("spatial_bit_masks")
        if masks:
            return cls(int(graph["n_layers"]), {int(k): int(v) for k, v in masks.items()})
        return cls.for_layers(int(graph["n_layers"]))

    def segment_bits(self, layer: int) -> int:
        return 64 - LAYER_ID_BITS - 3 * self.bits[layer]

    def node_id(self, layer: int, x: Any, y: Any, z: Any, segment: Any) -> Any:
        """The id of ``segment`` in chunk (x, y, z) of ``layer``; arrays broadcast."""
        b = self.bits[layer]
        shift = 64 - LAYER_ID_BITS
        values = (
            (np.uint64(layer) << np.uint64(shift))
            | (np.asarray(x, dtype=np.uint64) << np.uint64(shift - b))
            | (np.asarray(y, dtype=np.uint64) << np.uint64(shift - 2 * b))
            | (np.asarray(z, dtype=np.uint64) << np.uint64(shift - 3 * b))
            | np.asarray(segment, dtype=np.uint64)
        )
        return int(values) if np.ndim(values) == 0 else values

    def chunk_id(self, layer: int, x: Any, y: Any, z: Any) -> Any:
        return self.node_id(layer, x, y, z, 0)


def _as_uint64(ids: Any) -> np.ndarray:
    return np.asarray(ids, dtype=np.uint64)


def _unwrap(values: np.ndarray, scalar: bool) -> Any:
    return int(values) if scalar else values


def get_layer(ids: Any) -> Any:
    """Layer of each id (``id >> 56``)."""
    scalar = np.ndim(ids) == 0
    return _unwrap((_as_uint64(ids) >> np.uint64(64 - LAYER_ID_BITS)).astype(np.int64), scalar)


def chunk_coordinates(layout: NodeIdLayout, ids: Any) -> np.ndarray:
    """(n, 3) chunk coordinates of ids, each decoded with its own layer's bit width."""
    values = np.atleast_1d(_as_uint64(ids))
    layers = get_layer(values)
    coords = np.zeros((values.size, 3), dtype=np.int64)
    for layer in np.unique(layers):
        if int(layer) not in layout.bits:
            raise ValueError(f"layer {int(layer)} is not a layer of this graph")
        b = layout.bits[int(layer)]
        mask = np.uint64((1 << b) - 1)
        shift = 64 - LAYER_ID_BITS
        sel = layers == layer
        v = values[sel]
        coords[sel, 0] = (v >> np.uint64(shift - b)) & mask
        coords[sel, 1] = (v >> np.uint64(shift - 2 * b)) & mask
        coords[sel, 2] = (v >> np.uint64(shift - 3 * b)) & mask
    return coords


def segment_ids(layout: NodeIdLayout, ids: Any) -> Any:
    """The segment part of each id."""
    scalar = np.ndim(ids) == 0
    values = np.atleast_1d(_as_uint64(ids))
    layers = get_layer(values)
    out = np.zeros(values.size, dtype=np.uint64)
    for layer in np.unique(layers):
        sel = layers == layer
        out[sel] = values[sel] & np.uint64((1 << layout.segment_bits(int(layer))) - 1)
    return _unwrap(out[0] if scalar else out, scalar)


def chunk_ids(layout: NodeIdLayout, ids: Any) -> Any:
    """Each id with its segment bits cleared."""
    scalar = np.ndim(ids) == 0
    values = np.atleast_1d(_as_uint64(ids))
    out = values - _as_uint64(segment_ids(layout, values))
    return _unwrap(out[0] if scalar else out, scalar)
