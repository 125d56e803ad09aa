"""A lab's segmentation layer, read with cloud-volume at its base resolution.

Any URL cloud-volume reads works (``file://``, ``precomputed://``, ``gs://``, ``s3://``,
``https://``), with any chunk size, encoding (raw, compressed_segmentation, compresso, crackle)
and sharding: cloud-volume decodes, so a block is read the same whatever the layout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from opencave.errors import BadRequest

MAX_CHUNK_VOXELS = 1 << 26  # a graph chunk is held a few times in memory while it is split


def normalise_url(url: str) -> str:
    """cloud-volume's form of a layer URL: Neuroglancer's ``precomputed://`` prefix dropped
    where a protocol follows it, a bare path made ``file://``."""
    text = url.strip()
    if text.startswith("precomputed://") and "://" in text[len("precomputed://") :]:
        text = text[len("precomputed://") :]
    if "://" not in text:
        text = "file://" + str(Path(text).expanduser().resolve())
    return text


def open_layer(url: str, what: str) -> Any:
    """A read-only CloudVolume of the layer at ``url``, or a BadRequest saying why not."""
    from cloudvolume import CloudVolume
    from cloudvolume import exceptions as cv_errors

    _reachable(url, what)
    try:
        return CloudVolume(
            normalise_url(url), mip=0, fill_missing=True, progress=False, cache=False, parallel=1, bounded=True
        )
    except (cv_errors.InfoUnavailableError, cv_errors.UnsupportedProtocolError) as error:
        raise BadRequest(f"Could not read the {what} at {url}: {_plain(error)}. Give the URL of a Neuroglancer precomputed layer (its directory, holding an info file).", code="unreadable_layer") from error
    except Exception as error:  # network, credentials, malformed info: all say the same to the user
        raise BadRequest(f"Could not open the {what} at {url}: {type(error).__name__}: {_plain(error)}", code="unreadable_layer") from error


def _reachable(url: str, what: str) -> None:
    """An http(s) layer's info fetched once, quickly: cloud-volume retries a refused connection
    for up to a minute without a word."""
    import requests

    location = normalise_url(url)
    if not location.startswith(("http://", "https://")):
        return
    try:
        answer = requests.get(location.rstrip("/") + "/info", timeout=15)
    except requests.RequestException as error:
        raise BadRequest(f"Could not open the {what} at {url}: {type(error).__name__}: {error}", code="unreadable_layer") from error
    if answer.status_code >= 400:
        raise BadRequest(f"Could not read the {what} at {url}: its info answered HTTP {answer.status_code}.", code="unreadable_layer")


def _plain(error: Exception) -> str:
    """An error's text without the terminal colour codes cloud-volume puts in some."""
    return re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()


@dataclass(frozen=True)
class WatershedSource:
    """Where the segmentation lies (voxels of its base scale) and how to read it."""

    url: str
    resolution: tuple[float, float, float]
    voxel_offset: tuple[int, int, int]
    size: tuple[int, int, int]
    chunk_size: tuple[int, int, int]
    encoding: str
    data_type: str

    @classmethod
    def open(cls, url: str) -> "WatershedSource":
        """Check the layer is a single-channel integer segmentation and describe its base scale."""
        volume = open_layer(url, "watershed")
        layer_type = volume.layer_type
        data_type = str(volume.data_type)
        if layer_type != "segmentation" or not np.issubdtype(np.dtype(data_type), np.integer):
            raise BadRequest(
                f"The layer at {url} is not a segmentation (type {layer_type!r}, data type {data_type}); "
                "--watershed needs a segmentation layer of integer labels.",
                code="not_a_segmentation",
            )
        if int(volume.num_channels) != 1:
            raise BadRequest(f"The segmentation at {url} has {volume.num_channels} channels; one is needed.", code="not_a_segmentation")
        return cls(
            url=normalise_url(url),
            resolution=tuple(_number(v) for v in volume.resolution),  # type: ignore[arg-type]
            voxel_offset=tuple(int(v) for v in volume.voxel_offset),  # type: ignore[arg-type]
            size=tuple(int(v) for v in volume.volume_size),  # type: ignore[arg-type]
            chunk_size=tuple(int(v) for v in volume.chunk_size),  # type: ignore[arg-type]
            encoding=str(volume.encoding),
            data_type=data_type,
        )

    @property
    def n_voxels(self) -> int:
        return int(np.prod(self.size, dtype=np.int64))


class BlockReader:
    """Reads boxes of the segmentation as (x, y, z) uint64 labels; one per process."""

    def __init__(self, url: str) -> None:
        self._volume = open_layer(url, "watershed")

    def read(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        from cloudvolume import Bbox

        cutout = self._volume.download(Bbox(lo, hi), mip=0)
        block = np.asarray(cutout)[..., 0]
        if block.dtype != np.uint64:
            if np.issubdtype(block.dtype, np.signedinteger) and block.size and block.min() < 0:
                raise BadRequest("The segmentation holds negative labels; labels must be 0 (background) or positive.", code="negative_label")
            block = block.astype(np.uint64)
        return block


def _number(value: Any) -> int | float:
    value = float(value)
    return int(value) if value.is_integer() else value
