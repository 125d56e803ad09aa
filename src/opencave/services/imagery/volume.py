"""The EM image volume of a world: built once from its segmentation, stored as JPEG-encoded
Neuroglancer precomputed (several scales, 2× apart in x and y) in the world's ``image``
directory, and read back file by file for HTTP clients.

cloud-volume writes the files, so the layout is exactly what precomputed readers expect. The
build goes into a private sibling directory that is renamed into place when complete, under a
file lock: concurrent processes build it once and an interrupted build leaves nothing behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from opencave.services.imagery.synthesis import Nucleus, render
from opencave.services.segmentation.volume import WatershedVolume

IMAGE_DIR = "image"
CHUNK_SIZE = (128, 128, 16)
TILE = 256  # x/y voxels rendered at once, bounding the build's memory whatever the world's size
HALO = 6  # x/y voxels of context around a tile: membranes are blurred about 4 voxels wide
MIN_SCALE_SIZE = 64  # coarser scales are added while x and y stay at least this large
NUCLEUS_FRACTION = 0.6  # nucleus radius relative to the soma's inscribed radius
_CHUNK_PATH = re.compile(r"^(?P<key>[A-Za-z0-9_.]+)/\d+-\d+_\d+-\d+_\d+-\d+$")
_MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png"}
_locks: dict[Path, threading.Lock] = {}
_opened: dict[Path, ImageVolume] = {}
_registry_lock = threading.Lock()

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ImageFile:
    data: bytes
    media_type: str
    gzipped: bool = False  # served with Content-Encoding: gzip


class ImageVolume:
    """Read access to a built image volume's files, by the names precomputed clients request."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.info_bytes = (self.directory / "info").read_bytes()
        self.info: dict[str, Any] = json.loads(self.info_bytes)
        self._encodings = {scale["key"]: scale.get("encoding", "raw") for scale in self.info["scales"]}
        self._keys = set(self._encodings)

    @staticmethod
    def can_exist(relative_path: str) -> bool:
        """Whether any image volume could have a file of this name (``info`` or a chunk)."""
        return relative_path == "info" or _CHUNK_PATH.match(relative_path) is not None

    def raw_file(self, relative_path: str) -> ImageFile | None:
        """``info`` or a chunk as stored (a gzipped one stays gzipped), else None. Only chunk
        names under one of the scales' keys resolve, so no path reaches outside the volume."""
        if relative_path == "info":
            return ImageFile(self.info_bytes, "application/json")
        match = _CHUNK_PATH.match(relative_path)
        if match is None or match["key"] not in self._keys:
            return None
        media = _MEDIA_TYPES.get(self._encodings[match["key"]], "application/octet-stream")
        path = self.directory / relative_path
        if path.is_file():
            return ImageFile(path.read_bytes(), media)
        packed = path.with_name(path.name + ".gz")
        return ImageFile(packed.read_bytes(), media, gzipped=True) if packed.is_file() else None


def image_volume(world_dir: Path, progress: Progress | None = None) -> ImageVolume:
    """The world's image volume, built first if it does not exist yet (once, however many
    threads and processes ask at the same time)."""
    world_dir = Path(world_dir).resolve()
    given = _ingested_image(world_dir)
    target = given or world_dir / IMAGE_DIR
    with _registry_lock:
        if target in _opened:
            return _opened[target]
        if given is not None:
            volume = _opened[target] = ImageVolume(given)
            return volume
        lock = _locks.setdefault(target, threading.Lock())
    with lock:
        if target not in _opened:
            if not (target / "info").is_file():
                with open(world_dir / f"{IMAGE_DIR}.lock", "w") as handle:
                    fcntl.flock(handle, fcntl.LOCK_EX)
                    if not (target / "info").is_file():
                        _build_in_place(world_dir, target, progress)
            _opened[target] = ImageVolume(target)
        return _opened[target]


def _ingested_image(world_dir: Path) -> Path | None:
    """The image directory an ingested segmentation was given (served in place, never built);
    an ingested world without a local one has no image here."""
    world = json.loads((world_dir / "world.json").read_text())
    if world.get("kind") != "ingested":
        return None
    directory = (world.get("image") or {}).get("directory")
    if not directory:
        raise FileNotFoundError(f"{world_dir.name} has no image served by this server")
    return Path(directory)


def _build_in_place(world_dir: Path, target: Path, progress: Progress | None) -> None:
    staging = target.with_name(f"{IMAGE_DIR}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        build_image(world_dir, staging, progress)
        shutil.rmtree(target, ignore_errors=True)  # a directory without info is an old leftover
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class _Objects:
    """Object ids by voxel: the world's neuron where a supervoxel belongs to one, else the
    supervoxel itself (fragments of cells outside the volume), 0 where there is none."""

    def __init__(self, world_dir: Path) -> None:
        self.ws = WatershedVolume(world_dir / "ws")
        with np.load(world_dir / "graph.npz") as graph:
            self.sv_ids = graph["sv_ids"]
            self.sv_neuron = graph["sv_neuron"].astype(np.uint64)

    def cutout(self, lo: Any, hi: Any) -> np.ndarray:
        labels = self.ws.cutout(lo, hi)
        index = np.minimum(np.searchsorted(self.sv_ids, labels), len(self.sv_ids) - 1)
        neuron = np.where(self.sv_ids[index] == labels, self.sv_neuron[index], 0)
        return np.where(neuron > 0, neuron, labels)


def _nuclei(world_dir: Path, objects: _Objects, resolution: tuple[int, int, int]) -> list[Nucleus]:
    """Each cell's nucleus, sized from how far its centre lies from the cell's surface within its
    own section (one small 2-D distance transform per cell)."""
    cells_file = world_dir / "cells.json"
    if not cells_file.is_file():
        return []
    reach = np.array([40, 40, 0])
    offset, size = np.array(objects.ws.voxel_offset), np.array(objects.ws.size)
    found = []
    for cell in json.loads(cells_file.read_text()):
        centre = np.array(cell["nucleus_position"], dtype=np.int64)
        lo = np.maximum(centre - reach, offset)
        hi = np.minimum(centre + reach + 1, offset + size)
        own = objects.cutout(lo, hi)[:, :, 0] == np.uint64(cell["neuron_id"])
        at = tuple(centre[:2] - lo[:2])
        if not own[at]:
            continue
        depth = ndimage.distance_transform_edt(own, sampling=resolution[:2])[at]
        found.append(Nucleus(int(cell["neuron_id"]), tuple(int(v) for v in centre), float(NUCLEUS_FRACTION * depth)))  # type: ignore[arg-type]
    return found


def scale_count(size: tuple[int, int, int]) -> int:
    """How many scales a volume of this size gets: halving x/y while both stay ≥ MIN_SCALE_SIZE."""
    count = 1
    while min(size[0], size[1]) >> count >= MIN_SCALE_SIZE:
        count += 1
    return count


def build_image(world_dir: Path, out_dir: Path, progress: Progress | None = None) -> None:
    """Render the world's EM image into ``out_dir`` as precomputed, section slab by slab."""
    from cloudvolume import CloudVolume

    world_dir = Path(world_dir)
    world = json.loads((world_dir / "world.json").read_text())
    seed = int(world["seed"])
    objects = _Objects(world_dir)
    ws = objects.ws
    resolution, offset, size = ws.resolution, np.array(ws.voxel_offset), np.array(ws.size)
    scales = scale_count(ws.size)
    out_dir.mkdir(parents=True)
    url = "file://" + str(out_dir)
    info = CloudVolume.create_new_info(
        num_channels=1,
        layer_type="image",
        data_type="uint8",
        encoding="jpeg",
        resolution=list(resolution),
        voxel_offset=[int(v) for v in offset],
        volume_size=[int(v) for v in size],
        chunk_size=list(CHUNK_SIZE),
    )
    writer = CloudVolume(url, info=info, progress=False)
    for mip in range(1, scales):
        writer.add_scale((2**mip, 2**mip, 1), chunk_size=list(CHUNK_SIZE))
    writer.commit_info()
    writers = [CloudVolume(url, mip=mip, progress=False) for mip in range(scales)]
    nuclei = _nuclei(world_dir, objects, resolution)
    centres = np.array([n.centre for n in nuclei], dtype=np.int64).reshape(-1, 3)
    reaches = np.array([[n.radius_nm / r + 2 for r in resolution] for n in nuclei]).reshape(-1, 3)
    slab_depth = CHUNK_SIZE[2]
    for z0 in range(0, int(size[2]), slab_depth):
        z1 = min(z0 + slab_depth, int(size[2]))
        slab = np.zeros((int(size[0]), int(size[1]), z1 - z0), dtype=np.uint8)
        for x0 in range(0, int(size[0]), TILE):
            for y0 in range(0, int(size[1]), TILE):
                inner_lo = offset + (x0, y0, z0)
                inner_hi = np.minimum(offset + (x0 + TILE, y0 + TILE, z1), offset + size)
                lo = np.maximum(inner_lo - (HALO, HALO, 0), offset)
                hi = np.minimum(inner_hi + (HALO, HALO, 0), offset + size)
                near = np.flatnonzero(np.all((centres + reaches >= lo) & (centres - reaches < hi), axis=1))
                here = [nuclei[i] for i in near]
                pixels = render(objects.cutout(lo, hi), tuple(int(v) for v in lo), seed, resolution, here)  # type: ignore[arg-type]
                a, b = inner_lo - lo, inner_hi - lo
                slab[x0 : x0 + b[0] - a[0], y0 : y0 + b[1] - a[1], :] = pixels[a[0] : b[0], a[1] : b[1], :]
        for mip, cv in enumerate(writers):
            if mip:
                sx, sy = slab.shape[0] // 2, slab.shape[1] // 2
                slab = np.rint(slab[: 2 * sx, : 2 * sy].reshape(sx, 2, sy, 2, -1).mean(axis=(1, 3))).astype(np.uint8)
            lo_m = cv.bounds.minpt
            cv[lo_m.x : lo_m.x + slab.shape[0], lo_m.y : lo_m.y + slab.shape[1], z0 + int(offset[2]) : z1 + int(offset[2])] = slab
        if progress:
            progress(f"EM image: {z1} of {int(size[2])} sections")
