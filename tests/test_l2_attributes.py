"""L2 cache attributes of one atomic chunk: known shapes, an independent per-label oracle, timing."""

from __future__ import annotations

import json
import time

import edt
import numpy as np
import pytest

from opencave.services.l2cache import (
    ATTRIBUTE_METADATA,
    ATTRIBUTE_NAMES,
    compute_chunk_attributes,
    relabel_to_l2,
)

RES = (8, 8, 40)
CHUNK = (64, 64, 16)


def _box(lo, hi, shape=CHUNK, label=7):
    labels = np.zeros(shape, dtype=np.uint64)
    labels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = label
    return labels


def _box_dt(dims, res):
    """Exact EDT of a box inside background: the nearest outside voxel lies along an axis."""
    grids = np.meshgrid(*[np.arange(n) for n in dims], indexing="ij")
    per_axis = [np.minimum(g + 1, n - g) * r for g, n, r in zip(grids, dims, res)]
    return np.floor(np.minimum.reduce(per_axis))


def _oracle(labels, sv_to_l2, origin, res, chunk_size):
    """One label at a time, written after the reference worker's loop (all points in the PCA)."""
    res = np.asarray(res, dtype=float)
    vol = np.zeros(chunk_size, dtype=np.uint64)
    vol[tuple(slice(0, n) for n in labels.shape)] = labels
    l2vol = np.zeros_like(vol)
    for sv, l2 in sv_to_l2.items():
        l2vol[vol == sv] = l2
    out = {}
    for l2 in np.unique(l2vol[l2vol != 0]).tolist():
        mask = l2vol == l2
        dts = np.floor(edt.edt(mask, anisotropy=tuple(res), black_border=False)[mask])
        coords = np.argwhere(mask)
        dists = np.sqrt(np.sum(((coords - coords.mean(axis=0)) * res) ** 2, axis=1))
        weight = 1 - dists / dists.max() if dists.max() > 0 else np.ones_like(dists)
        rep = coords[np.argmax(dts * weight)]
        area = 0.0
        for axis in range(3):
            a = np.moveaxis(l2vol, axis, 0)
            faces = np.sum((a[1:] != a[:-1]) & ((a[1:] == l2) | (a[:-1] == l2)))
            area += faces * np.prod(res) / res[axis]
        attrs = {
            "size_nm3": len(coords) * np.prod(res),
            "area_nm2": int(area),
            "max_dt_nm": int(dts.max()),
            "mean_dt_nm": float(np.float16(dts.mean())),
            "rep_coord_nm": ((rep + origin) * res).tolist(),
            "chunk_intersect_count": [
                np.sum(coords == 0, axis=0).tolist(),
                np.sum(coords == np.array(chunk_size) - 1, axis=0).tolist(),
            ],
        }
        if len(coords) * np.prod(res) / 1e9 >= 0.01:
            pts = coords * res
            _, s, vt = np.linalg.svd(pts - pts.mean(axis=0), full_matrices=False)
            vt *= np.sign(vt[np.arange(3), np.abs(vt).argmax(axis=1)])[:, None]
            if len(coords) > 10_000:  # the reference fits a 10,000-point sample
                s *= np.sqrt((10_000 - 1) / (len(coords) - 1))
            attrs["pca"], attrs["pca_val"] = vt, s
        out[l2] = attrs
    return out


def _assert_matches_oracle(got, expected):
    assert set(got) == set(expected)
    for l2, exp in expected.items():
        attrs = got[l2]
        assert set(attrs) == set(exp), l2
        for key in (
            "size_nm3",
            "area_nm2",
            "max_dt_nm",
            "mean_dt_nm",
            "rep_coord_nm",
            "chunk_intersect_count",
        ):
            assert attrs[key] == exp[key], (l2, key)
        if "pca" in exp:
            np.testing.assert_allclose(attrs["pca_val"], exp["pca_val"], rtol=1e-5)
            np.testing.assert_allclose(attrs["pca"], exp["pca"], atol=2e-3)


def test_metadata_is_the_cache_schema():
    assert ATTRIBUTE_METADATA == {
        "size_nm3": "uint32",
        "area_nm2": "uint32",
        "max_dt_nm": "uint16",
        "mean_dt_nm": "float16",
        "rep_coord_nm": "uint16",
        "chunk_intersect_count": "uint16",
        "pca": "float16",
        "pca_val": "float32",
    }
    assert ATTRIBUTE_NAMES == tuple(ATTRIBUTE_METADATA)


def test_box_size_area_dt_and_representative_point():
    labels = _box((10, 20, 2), (30, 40, 10))  # 20 x 20 x 8 voxels
    attrs = compute_chunk_attributes(labels, {7: 99}, (0, 0, 0), RES, CHUNK)[99]

    assert attrs["size_nm3"] == 20 * 20 * 8 * 8 * 8 * 40
    # two faces per axis: x faces are 8 x 40 nm, y faces 8 x 40 nm, z faces 8 x 8 nm
    assert attrs["area_nm2"] == 2 * 20 * 8 * 320 + 2 * 20 * 8 * 320 + 2 * 20 * 20 * 64
    dt = _box_dt((20, 20, 8), RES)
    assert attrs["max_dt_nm"] == dt.max() == 80
    assert attrs["mean_dt_nm"] == float(np.float16(dt.mean()))
    # the deepest, most central voxel: the first of the central ones
    assert attrs["rep_coord_nm"] == [19 * 8, 29 * 8, 5 * 40]
    assert attrs["chunk_intersect_count"] == [[0, 0, 0], [0, 0, 0]]
    assert "pca" not in attrs and "pca_val" not in attrs  # 0.0082 um^3 < 0.01
    assert isinstance(attrs["size_nm3"], int) and isinstance(attrs["mean_dt_nm"], float)
    assert all(isinstance(v, int) for v in attrs["rep_coord_nm"])


def test_box_touching_chunk_faces():
    # whole x range and the lower y face; the chunk faces bound neither the EDT nor the area
    labels = _box((0, 0, 3), (64, 10, 7))
    attrs = compute_chunk_attributes(labels, {7: 5}, (0, 0, 0), RES, CHUNK)[5]
    assert attrs["chunk_intersect_count"] == [[10 * 4, 64 * 4, 0], [10 * 4, 0, 0]]
    # only the inner y face and the two z faces are surface
    assert attrs["area_nm2"] == 64 * 4 * 320 + 2 * 64 * 10 * 64
    # nearest boundary: inner y face (10 voxels deep from y=0 -> 80 nm) or z (2 voxels -> 80 nm)
    assert attrs["max_dt_nm"] == 80

    # filling the chunk: no boundary anywhere, so distances saturate and the centre represents it
    full = compute_chunk_attributes(
        np.full(CHUNK, 3, np.uint64), {3: 1}, (0, 0, 0), RES, CHUNK
    )[1]
    assert full["area_nm2"] == 0
    assert full["chunk_intersect_count"] == [[64 * 16, 64 * 16, 64 * 64]] * 2
    assert full["max_dt_nm"] == 65504 and full["mean_dt_nm"] == 65504.0
    assert full["rep_coord_nm"] == [31 * 8, 31 * 8, 7 * 40]


def test_rod_along_x_has_x_as_first_principal_axis():
    res = (16, 16, 40)
    labels = _box((2, 30, 6), (62, 35, 10))  # 60 x 5 x 4 voxels = 960 x 80 x 160 nm
    attrs = compute_chunk_attributes(labels, {7: 11}, (0, 0, 0), res, CHUNK)[11]
    pca = np.array(attrs["pca"])
    assert pca.shape == (3, 3) and len(attrs["pca_val"]) == 3
    assert abs(pca[0, 0]) > 0.999
    assert abs(pca[1, 2]) > 0.999  # z (160 nm) before y (80 nm)
    np.testing.assert_allclose(pca @ pca.T, np.eye(3), atol=2e-3)
    assert attrs["pca_val"][0] > attrs["pca_val"][1] > attrs["pca_val"][2] > 0
    # singular value of a uniform 1-d grid: sqrt(count_elsewhere * sum((x - mean)^2)) in nm
    x = np.arange(60) * 16.0
    assert attrs["pca_val"][0] == pytest.approx(
        np.sqrt(5 * 4 * np.sum((x - x.mean()) ** 2)), rel=1e-6
    )
    assert attrs["rep_coord_nm"][0] in (31 * 16, 32 * 16)


def test_two_l2s_share_a_chunk_and_unmapped_svs_are_ignored():
    labels = np.zeros(CHUNK, dtype=np.uint64)
    labels[0:20, 0:30, :] = 1
    labels[20:30, 0:30, :] = 2  # same L2 as sv 1
    labels[30:50, 10:40, 2:12] = 3
    labels[50:60, :, :] = 4  # not in the mapping
    mapping = {1: 1000, 2: 1000, 3: 2000, 9: 3000}  # sv 9 is not in the chunk
    got = compute_chunk_attributes(labels, mapping, (0, 0, 0), RES, CHUNK)
    assert set(got) == {1000, 2000}
    assert got[1000]["size_nm3"] == 30 * 30 * 16 * 2560
    assert got[2000]["size_nm3"] == 20 * 30 * 10 * 2560
    _assert_matches_oracle(got, _oracle(labels, mapping, np.zeros(3), RES, CHUNK))

    arrays = (
        np.array(list(mapping), np.uint64),
        np.array(list(mapping.values()), np.uint64),
    )
    assert compute_chunk_attributes(labels, arrays, (0, 0, 0), RES, CHUNK) == got
    # an unmapped neighbour bounds a component exactly like background does
    without_4 = np.where(labels == 4, 0, labels)
    assert compute_chunk_attributes(without_4, mapping, (0, 0, 0), RES, CHUNK) == got


def test_anisotropy_weights_faces_and_distances():
    labels = _box((10, 10, 3), (20, 20, 13))  # 10 x 10 x 10 voxels = 80 x 80 x 400 nm
    attrs = compute_chunk_attributes(labels, {7: 1}, (0, 0, 0), RES, CHUNK)[1]
    assert attrs["area_nm2"] == 4 * 10 * 10 * (8 * 40) + 2 * 10 * 10 * (8 * 8)
    assert attrs["max_dt_nm"] == 40  # 5 voxels of 8 nm in x/y; z would be 200 nm
    assert attrs["mean_dt_nm"] == float(np.float16(_box_dt((10, 10, 10), RES).mean()))
    # every central column is 40 nm deep, so centrality picks the first central voxel
    assert attrs["rep_coord_nm"] == [14 * 8, 14 * 8, 7 * 40]
    iso = compute_chunk_attributes(labels, {7: 1}, (0, 0, 0), (8, 8, 8), CHUNK)[1]
    assert iso["area_nm2"] == 6 * 100 * 64
    assert iso["max_dt_nm"] == 40
    assert iso["mean_dt_nm"] == float(np.float16(_box_dt((10,) * 3, (8,) * 3).mean()))
    assert iso["mean_dt_nm"] < attrs["mean_dt_nm"]  # z no longer adds depth
    assert iso["rep_coord_nm"] == [14 * 8, 14 * 8, 7 * 8]


def test_tiny_components_have_no_pca():
    labels = _box((5, 5, 5), (7, 7, 7))
    labels[40, 40, 8] = 8
    got = compute_chunk_attributes(labels, {7: 1, 8: 2}, (0, 0, 0), RES, CHUNK)
    assert set(got[1]) == set(got[2]) == set(ATTRIBUTE_NAMES) - {"pca", "pca_val"}
    assert got[2] == {
        "size_nm3": 2560,
        "area_nm2": 2 * (320 + 320 + 64),
        "max_dt_nm": 8,
        "mean_dt_nm": 8.0,
        "rep_coord_nm": [320, 320, 320],
        "chunk_intersect_count": [[0, 0, 0], [0, 0, 0]],
    }


def test_fewer_than_three_points_are_tripled_for_the_pca():
    # at 200 nm voxels two voxels already exceed 0.01 um^3; the reference fits them three times
    labels = _box((3, 3, 3), (5, 4, 4))
    attrs = compute_chunk_attributes(labels, {7: 1}, (0, 0, 0), (200,) * 3, CHUNK)[1]
    assert attrs["pca"][0] == [1.0, 0.0, 0.0]
    assert attrs["pca_val"][0] == pytest.approx(np.sqrt(6 * 100.0**2))


def test_global_coordinates_use_the_chunk_origin():
    labels = _box((10, 20, 2), (30, 40, 10))
    origin = (64 + 1000, 128 + 2000, 32 + 50)  # chunk (1, 2, 2) plus a voxel offset
    attrs = compute_chunk_attributes(labels, {7: 3}, origin, RES, CHUNK)[3]
    assert attrs["rep_coord_nm"] == [
        (19 + origin[0]) * 8,
        (29 + origin[1]) * 8,
        (5 + origin[2]) * 40,
    ]


def test_clipped_chunk_at_the_volume_edge():
    # the volume ends 40 voxels into this chunk along x: the edge is background, not a chunk face
    labels = _box((20, 0, 0), (40, 64, 16), shape=(40, 64, 16))
    attrs = compute_chunk_attributes(labels, {7: 4}, (64, 0, 0), RES, CHUNK)[4]
    padded = np.zeros(CHUNK, np.uint64)
    padded[:40] = labels
    assert compute_chunk_attributes(padded, {7: 4}, (64, 0, 0), RES, CHUNK) == {
        4: attrs
    }
    assert attrs["chunk_intersect_count"] == [
        [0, 20 * 16, 20 * 64],
        [0, 20 * 16, 20 * 64],
    ]
    # both x faces count, the volume edge included
    assert attrs["area_nm2"] == 2 * 64 * 16 * 320
    assert attrs["max_dt_nm"] == 80

    # the same slab ending at an interior chunk face instead
    inner = compute_chunk_attributes(
        _box((44, 0, 0), (64, 64, 16)), {7: 4}, (0, 0, 0), RES, CHUNK
    )[4]
    assert inner["chunk_intersect_count"][1][0] == 64 * 16
    assert inner["area_nm2"] == 64 * 16 * 320
    assert inner["max_dt_nm"] == 160  # 20 voxels deep from its one x face

    with pytest.raises(ValueError):
        compute_chunk_attributes(
            np.zeros((65, 64, 16), np.uint64), {}, (0, 0, 0), RES, CHUNK
        )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_chunks_match_a_per_label_oracle(seed):
    rng = np.random.default_rng(seed)
    shape = (32, 24, 12)
    # blocky supervoxels with ragged edges, so components have holes, touches and odd shapes
    labels = (
        rng.integers(0, 12, (8, 6, 4))
        .repeat(4, 0)
        .repeat(4, 1)
        .repeat(3, 2)
        .astype(np.uint64)
    )
    noise = rng.random(shape) < 0.1
    labels[noise] = rng.integers(0, 12, noise.sum())
    mapping = {sv: 500 + sv % 5 for sv in range(1, 11)}  # svs 11 unmapped
    origin = np.array([32, 48, 24])
    res = (16, 12, 40)
    got = compute_chunk_attributes(labels, mapping, origin, res, shape)
    _assert_matches_oracle(got, _oracle(labels, mapping, origin, res, shape))
    assert any("pca" in a for a in got.values())
    assert json.loads(json.dumps(got, allow_nan=False)) == {
        str(k): v for k, v in got.items()
    }


def test_large_component_pca_is_deterministic_and_scaled_to_the_sample_size():
    labels = np.zeros(CHUNK, np.uint64)
    labels[:, :40, :] = 1
    labels[10:50, 5:30, 2:14] = 2  # inside sv 1's region, 12,000 voxels
    labels[:, 40:, :] = 3  # 24 * 64 * 16 = 24,576 voxels
    got = compute_chunk_attributes(labels, {1: 10, 2: 20, 3: 30}, (0, 0, 0), RES, CHUNK)
    assert got == compute_chunk_attributes(
        labels, {1: 10, 2: 20, 3: 30}, (0, 0, 0), RES, CHUNK
    )
    for l2, sv in ((20, 2), (30, 3)):
        pts = np.argwhere(labels == sv) * np.array(RES, float)
        _, s, vt = np.linalg.svd(pts - pts.mean(axis=0), full_matrices=False)
        np.testing.assert_allclose(np.abs(got[l2]["pca"]), np.abs(vt), atol=2e-3)
        scale = np.sqrt((10_000 - 1) / (len(pts) - 1))
        np.testing.assert_allclose(got[l2]["pca_val"], s * scale, rtol=1e-5)


def test_relabel_to_l2():
    labels = np.array([[[0, 1, 2, 3]]], dtype=np.uint64)
    out = relabel_to_l2(labels, {1: 2**60 + 5, 2: 2**60 + 5, 3: 0})
    assert out.dtype == np.uint64
    assert out.tolist() == [[[0, 2**60 + 5, 2**60 + 5, 0]]]


def test_timing_many_l2s_in_a_64x64x16_chunk():
    rng = np.random.default_rng(7)
    labels = (
        rng.integers(1, 400, (16, 16, 4))
        .repeat(4, 0)
        .repeat(4, 1)
        .repeat(4, 2)
        .astype(np.uint64)
    )
    svs = np.unique(labels)
    mapping = (svs, 10**15 + svs % 50)  # ~50 L2s, several supervoxels each
    compute_chunk_attributes(labels, mapping, (0, 0, 0), RES, CHUNK)
    runs = []
    for _ in range(20):
        start = time.perf_counter()
        got = compute_chunk_attributes(labels, mapping, (0, 0, 0), RES, CHUNK)
        runs.append(time.perf_counter() - start)
    median, best = np.median(runs) * 1e3, min(runs) * 1e3
    print(
        f"\n64x64x16 chunk, {len(got)} L2s: median {median:.2f} ms, best {best:.2f} ms"
    )
    assert len(got) == 50
    assert np.median(runs) < 0.25  # generous: a regression guard, not a benchmark
