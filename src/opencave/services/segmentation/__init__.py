"""The segmentation service: watershed supervoxel volumes stored as Neuroglancer precomputed."""

from opencave.services.segmentation.volume import WatershedVolume

__all__ = ["WatershedVolume"]
