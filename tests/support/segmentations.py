"""Small segmentations written with cloud-volume into ``file://`` precomputed layers, the
agglomeration files that go with them, and checks of what an ingest made of them in the store.
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.spatial import cKDTree

RESOLUTION = (4, 4, 40)


# -- volumes ----------------------------------------------------------------------------------------
def voronoi(shape: tuple[int, int, int], labels: np.ndarray, seed: int) -> np.ndarray:
    """``labels`` as convex (so connected) Voronoi cells filling a volume of ``shape``."""
    rng = np.random.default_rng(seed)
    seeds = rng.uniform(0.05, 0.95, size=(len(labels), 3)) * np.array(shape)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3) + 0.5
    return np.asarray(labels)[cKDTree(seeds).query(grid)[1]].reshape(shape)


def flat_segmentation(shape: tuple[int, int, int], labels: np.ndarray, seed: int, split_label: int | None = None) -> np.ndarray:
    """A finished segmentation: Voronoi objects, background in a slab ``x < 4``, and (if given)
    ``split_label`` as two boxes in that slab that touch nowhere."""
    volume = voronoi(shape, labels, seed)
    volume[:4] = 0
    if split_label is not None:
        volume[0:3, 0:4, 0:4] = split_label
        volume[0:3, -4:, -4:] = split_label
    return volume


def over_segment(volume: np.ndarray, cell: tuple[int, int, int], first: int) -> tuple[np.ndarray, dict[int, int]]:
    """Each object of ``volume`` cut by a grid of ``cell`` boxes into fragments numbered from
    ``first``; returns the fragments and the object of each fragment."""
    index = np.indices(volume.shape)
    boxes = tuple(-(-s // c) for s, c in zip(volume.shape, cell))
    box = np.ravel_multi_index(tuple(index[axis] // cell[axis] for axis in range(3)), boxes)
    key = np.stack([volume.ravel(), box.ravel().astype(np.uint64)], axis=1)
    pairs, inverse = np.unique(key, axis=0, return_inverse=True)
    fragment_of_pair = np.where(pairs[:, 0] > 0, np.arange(len(pairs), dtype=np.uint64) + np.uint64(first), 0)
    fragments = fragment_of_pair[inverse.ravel()].reshape(volume.shape).astype(np.uint64)
    objects = {int(f): int(o) for f, o in zip(fragment_of_pair, pairs[:, 0]) if f}
    return fragments, objects


def write_layer(
    path: Path,
    volume: np.ndarray,
    *,
    offset: tuple[int, int, int] = (0, 0, 0),
    chunk_size: tuple[int, int, int] = (16, 16, 8),
    encoding: str = "raw",
    data_type: str | None = None,
    layer_type: str = "segmentation",
    sharded: bool = False,
    extra_scale: bool = False,
) -> str:
    """``volume`` (x, y, z) as a precomputed layer at ``path``; returns its ``file://`` URL.

    ``sharded`` writes it as neuroglancer_uint64_sharded_v1 shards (several shard files, each
    written whole, as cloud-volume requires); ``extra_scale`` adds a downsampled scale to the
    info (left unwritten: an ingest reads the base scale only)."""
    from cloudvolume import CloudVolume

    data_type = data_type or str(volume.dtype)
    info = CloudVolume.create_new_info(
        1, layer_type, data_type, encoding, list(RESOLUTION), list(offset), list(volume.shape), chunk_size=list(chunk_size)
    )
    url = "file://" + str(path)
    layer = CloudVolume(url, info=info, progress=False, compress=False)
    if extra_scale:
        layer.add_scale((2, 2, 1))
    if sharded:
        # 2 bits each of preshift, minishard and shard: 4 shard files of 16 chunks cover any
        # grid of at most 4×4×4 chunks (6 bits of compressed Morton code)
        grid = [-(-s // c) for s, c in zip(volume.shape, chunk_size)]
        assert max(grid) <= 4, "the sharding spec below covers grids of up to 4×4×4 chunks"
        layer.scale["sharding"] = {
            "@type": "neuroglancer_uint64_sharded_v1",
            "hash": "identity",
            "preshift_bits": 2,
            "minishard_bits": 2,
            "shard_bits": 2,
            "minishard_index_encoding": "gzip",
            "data_encoding": "gzip",
        }
    layer.commit_info()
    values = volume.astype(data_type)
    if sharded:
        shard = np.array(layer.image.shard_shape(), dtype=np.int64)
        for coords in np.ndindex(*[-(-s // c) for s, c in zip(volume.shape, shard)]):
            lo = np.array(coords) * shard
            hi = np.minimum(lo + shard, volume.shape)
            box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
            layer[tuple(slice(int(a + o), int(b + o)) for a, b, o in zip(lo, hi, offset))] = values[box][..., None]
    else:
        layer[tuple(slice(o, o + s) for o, s in zip(offset, volume.shape))] = values
    return url


def read_layer(url: str, offset: tuple[int, int, int], shape: tuple[int, int, int]) -> np.ndarray:
    from cloudvolume import CloudVolume

    return np.asarray(CloudVolume(url, progress=False, cache=False)[tuple(slice(o, o + s) for o, s in zip(offset, shape))])[..., 0]


# -- agglomeration files ------------------------------------------------------------------------------
def write_table(path: Path, columns: dict[str, Any]) -> str:
    """``columns`` as a Parquet, CSV, gzipped CSV or ``.npz`` file, chosen by ``path``'s name."""
    name = path.name
    if name.endswith(".npz"):
        np.savez(path, **{k: np.asarray(v) for k, v in columns.items()})
    elif name.endswith(".parquet"):
        pq.write_table(pa.table({k: np.asarray(v) for k, v in columns.items()}), path)
    elif name.endswith(".csv.gz"):
        with gzip.open(path, "wt") as handle:
            pd.DataFrame(columns).to_csv(handle, index=False)
    elif name.endswith(".csv"):
        pd.DataFrame(columns).to_csv(path, index=False)
    else:
        raise ValueError(path)
    return str(path)


# -- what an ingest made --------------------------------------------------------------------------------
def ingested(runtime: Any, name: str, offset: tuple[int, int, int], shape: tuple[int, int, int]) -> tuple[Any, np.ndarray, np.ndarray]:
    """(graph handle, supervoxel ids, root ids) of the ingested volume, voxel by voxel."""
    from opencave.services.materialize.roots import roots_of

    handle = runtime.graphs.graph(name)
    supervoxels = handle.volume.cutout(offset, tuple(o + s for o, s in zip(offset, shape)))
    roots = roots_of(handle.index, supervoxels.ravel(), time.time()).reshape(supervoxels.shape)
    return handle, supervoxels, roots


def assert_same_partition(objects: np.ndarray, roots: np.ndarray) -> dict[int, int]:
    """Root of each object; the map is one-to-one, and zero exactly where the objects are zero."""
    assert objects.shape == roots.shape
    assert np.array_equal(objects == 0, roots == 0), "background and roots disagree"
    inside = objects > 0
    pairs = np.unique(np.stack([objects[inside].astype(np.uint64), roots[inside].astype(np.uint64)], axis=1), axis=0)
    assert np.unique(pairs[:, 0]).size == len(pairs), "an object lies in more than one root"
    assert np.unique(pairs[:, 1]).size == len(pairs), "a root holds more than one object"
    return {int(a): int(b) for a, b in pairs}


def assert_supervoxels_refine(labels: np.ndarray, supervoxels: np.ndarray) -> None:
    """Every supervoxel lies in one label (and only background is 0)."""
    assert np.array_equal(labels == 0, supervoxels == 0)
    inside = labels > 0
    pairs = np.unique(np.stack([supervoxels[inside], labels[inside].astype(np.uint64)], axis=1), axis=0)
    assert np.unique(pairs[:, 0]).size == len(pairs), "a supervoxel spans two labels"


def assert_label_roots(handle: Any, labels: np.ndarray, root_of: dict[int, int]) -> None:
    """Each original label answers the root it lies in, with its voxel count."""
    found, counts = np.unique(labels[labels > 0], return_counts=True)
    for label, count in zip(found.tolist(), counts.tolist()):
        where = handle.labels.roots(handle.index, int(label), handle.index.seq)
        assert where.root_ids.tolist() == [root_of[int(label)]], label
        assert where.voxels.tolist() == [count], label


def registered(runtime: Any, data_dir: Path, name: str) -> dict[str, bool]:
    """Which parts of a datastack ``name`` exist in the store and in ``<data>/worlds``."""
    worlds = Path(data_dir) / "worlds"
    return {
        "datastack": name in runtime.info.datastack_names(),
        "aligned_volume": name in runtime.info.aligned_volume_names(),
        "chunkedgraph": runtime.graphs.exists(name),
        "dataset": name in [d["name"] for d in runtime.access.list_datasets()],
        "world": (worlds / name).exists(),
        "partial": (worlds / f"{name}.partial").exists(),
        "lock": (worlds / f"{name}.ingest.lock").exists(),
    }


def assert_nothing_registered(runtime: Any, data_dir: Path, name: str) -> None:
    left = {part for part, there in registered(runtime, data_dir, name).items() if there}
    assert not left, f"{name}: {sorted(left)} left behind"
