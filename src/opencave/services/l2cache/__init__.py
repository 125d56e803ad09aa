"""The L2 cache: per-L2-node shape attributes computed from segmentation chunks."""

from opencave.services.l2cache.attributes import (
    ATTRIBUTE_METADATA,
    ATTRIBUTE_NAMES,
    compute_chunk_attributes,
    relabel_to_l2,
)

__all__ = [
    "ATTRIBUTE_METADATA",
    "ATTRIBUTE_NAMES",
    "compute_chunk_attributes",
    "relabel_to_l2",
]
