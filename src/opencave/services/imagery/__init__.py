"""Synthetic electron-microscopy image volumes of demo worlds, served as Neuroglancer precomputed."""

from opencave.services.imagery.volume import ImageVolume, build_image, image_volume

__all__ = ["ImageVolume", "build_image", "image_volume"]
