"""Reading the demo world's watershed volume: lookups, cutouts, raw files, and cloud-volume compatibility."""

from __future__ import annotations

import gzip
import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from opencave.demo.world import build_world
from opencave.services.segmentation import WatershedVolume
from opencave.services.segmentation.precomputed import chunk_file, decode_chunk


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("worlds") / "small", "small", seed=0, progress=False)


@pytest.fixture(scope="module")
def volume(world) -> WatershedVolume:
    return WatershedVolume(world.ws_dir)


@pytest.fixture(scope="module")
def full(world, volume) -> np.ndarray:
    """The whole label volume, decoded chunk file by chunk file."""
    out = np.zeros(world.volume_size, dtype=np.uint64)
    for coords in np.ndindex(*world.chunks_per_axis):
        lo = np.array(coords) * np.array(world.chunk_size)
        hi = np.minimum(lo + np.array(world.chunk_size), world.volume_size)
        data = (world.ws_dir / chunk_file(volume.info["scales"][0], coords)).read_bytes()
        out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = decode_chunk(data, tuple(hi - lo))
    return out


def test_geometry(volume):
    assert volume.resolution == (8, 8, 40)
    assert volume.size == (256, 256, 64)
    assert volume.voxel_offset == (0, 0, 0)
    assert volume.chunk_size == (64, 64, 16)
    assert volume.info["data_type"] == "uint64" and volume.info["type"] == "segmentation"


def test_nucleus_lies_in_soma_supervoxel(world, volume):
    nuclei = np.array([cell["nucleus_position"] for cell in world.cells])
    somas = np.array([cell["soma_supervoxel"] for cell in world.cells], dtype=np.uint64)
    assert np.array_equal(volume.supervoxels_at(nuclei), somas)
    assert np.array_equal(volume.supervoxels_at(nuclei + 0.5), somas)
    outside = np.array([[-1, 0, 0], [0, 256, 0], [10, 10, 64]])
    assert np.array_equal(volume.supervoxels_at(outside), np.zeros(3, np.uint64))


def test_cutouts_match_the_assembled_volume(volume, full):
    rng = np.random.default_rng(7)
    for _ in range(20):
        lo = rng.integers(0, [250, 250, 60])
        hi = lo + rng.integers(1, [130, 130, 40])
        expected = full[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        got = volume.cutout(lo, hi)
        assert got.shape == tuple(hi - lo)
        assert np.array_equal(
            got[: expected.shape[0], : expected.shape[1], : expected.shape[2]], expected
        )
        assert not got[expected.shape[0] :].any() and not got[:, expected.shape[1] :].any()
    padded = volume.cutout((-5, -5, -5), (300, 300, 70))
    assert np.array_equal(padded[5:261, 5:261, 5:69], full)
    assert padded.sum(dtype=np.uint64) == full.sum(dtype=np.uint64)
    assert volume.cutout((300, 0, 0), (310, 10, 10)).shape == (10, 10, 10)


def test_supervoxels_near(world, volume, full):
    cell = world.cells[0]
    near = volume.supervoxels_near(cell["nucleus_position"], (4, 4, 1))
    assert cell["soma_supervoxel"] in near.tolist() and np.all(near > 0)
    x, y, z = cell["nucleus_position"]
    box = full[x - 4 : x + 5, y - 4 : y + 5, z - 1 : z + 2]
    assert np.array_equal(near, np.unique(box[box > 0]))
    assert volume.supervoxels_near((-100, -100, -100), (3, 3, 1)).size == 0


def test_raw_files(world, volume):
    info = volume.raw_file("info")
    assert json.loads(gzip.decompress(info)) == volume.info
    name = chunk_file(volume.info["scales"][0], (1, 2, 3)).removesuffix(".gz")
    raw = volume.raw_file(name)
    assert raw[:2] == b"\x1f\x8b"
    assert np.array_equal(decode_chunk(raw, (64, 64, 16)), volume.read_chunk(1, 2, 3))
    for bad in (
        "../world.json",
        "8_8_40/../../world.json",
        "/etc/passwd",
        "8_8_40/0-64_0-64_0-16.gz",
        "x/0-64_0-64_0-16",
        "",
    ):
        assert volume.raw_file(bad) is None


def test_omitted_chunks_read_as_zeros(world, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(world.ws_dir, ws)
    scale = WatershedVolume(ws).info["scales"][0]
    (ws / chunk_file(scale, (1, 1, 1))).unlink()
    sparse = WatershedVolume(ws)
    assert sparse.read_chunk(1, 1, 1).shape == (64, 64, 16) and not sparse.read_chunk(1, 1, 1).any()
    empty = sparse.raw_file(chunk_file(scale, (1, 1, 1)).removesuffix(".gz"))
    assert not decode_chunk(empty, (64, 64, 16)).any()  # served as background
    assert sparse.raw_file("8_8_40/1-65_0-64_0-16") is None
    assert sparse.raw_file("8_8_40/256-320_0-64_0-16") is None
    assert sparse.read_chunk(0, 0, 0).any()
    with pytest.raises(IndexError):
        sparse.read_chunk(4, 0, 0)


def test_small_cache_and_threads(world, full):
    volume = WatershedVolume(world.ws_dir, cache_chunks=3)
    points = np.random.default_rng(1).integers(0, world.volume_size, size=(64, 3))
    expected = full[tuple(points.T)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(volume.supervoxels_at, [points] * 32))
    assert all(np.array_equal(r, expected) for r in results)
    with pytest.raises(ValueError):
        volume.read_chunk(0, 0, 0)[0, 0, 0] = 1


def test_cloudvolume_reads_the_directory(world, volume):
    from cloudvolume import CloudVolume

    cv = CloudVolume("precomputed://file://" + str(world.ws_dir), mip=0, progress=False)
    for lo, hi in (((0, 0, 0), (100, 100, 20)), ((60, 120, 10), (200, 256, 64))):
        got = np.asarray(cv[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])[..., 0]
        assert np.array_equal(got, volume.cutout(lo, hi))
    assert np.asarray(cv[0:100, 0:100, 0:20]).any()
