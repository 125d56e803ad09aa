"""Skeletons of root ids from the chunkedgraph's L2 graph and the L2 cache (CAVE's skeleton service)."""

from .service import SkeletonService
from .store import SkeletonStore

__all__ = ["SkeletonService", "SkeletonStore"]
