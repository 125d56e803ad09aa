"""Bring your own segmentation: a segmentation written here with cloud-volume (compresso, chunks
unlike the demo's, objects crossing many graph chunks, large labels, a voxel offset) ingests
through `opencave ingest segmentation` into the running server, and the genuine caveclient
8.2.1 and cloud-volume then work on it as on any CAVE datastack: one root per object whose
voxels are exactly the object's (checked voxel by voxel through the graphene cut-out), merges,
splits, undo, lineage, the L2 cache, meshes, skeletons, annotations bound to the objects, and
versions. An over-segmentation with an edge file ingests to the components of the edges above
the threshold; with a mapping, to the mapped segments.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from caveclient import CAVEclient
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from opencave import CAVEclient as OurClient
from tests.support.volumes import graphene_volume

RESOLUTION = (8, 8, 40)
OFFSET = (24, 16, 8)
SHAPE = (96, 80, 32)
INPUT_CHUNKS = (24, 24, 8)  # the demo's watershed has 64×64×16 chunks
GRAPH_CHUNKS = ("32", "32", "16")
LABELS = np.array([2**40 + 1000 * k + 7 for k in range(8)] + [2**63 + 5], dtype=np.uint64)
FLAT = "lab_flat"


# -- the lab's segmentation -----------------------------------------------------------------------
def _nearest(seeds_nm: np.ndarray) -> np.ndarray:
    """Index of the nearest seed (nm) of every voxel of the volume, (x, y, z) array."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), axis=-1).reshape(-1, 3)
    points = (grid + np.array(OFFSET) + 0.5) * np.array(RESOLUTION)
    return cKDTree(seeds_nm).query(points)[1].reshape(SHAPE)


def flat_labels() -> np.ndarray:
    """Nine objects (Voronoi cells: convex, so connected), background in a slab and a ball."""
    rng = np.random.default_rng(15)
    size_nm = np.array(SHAPE) * np.array(RESOLUTION)
    seeds = np.array(OFFSET) * np.array(RESOLUTION) + rng.uniform(0.1, 0.9, size=(LABELS.size, 3)) * size_nm
    labels = LABELS[_nearest(seeds)]
    labels[:6] = 0
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), axis=-1)
    labels[(((grid - (70, 20, 16)) * (1, 1, 5)) ** 2).sum(axis=-1) < 12**2] = 0
    return labels


def fragments_of(labels: np.ndarray) -> np.ndarray:
    """An over-segmentation: each object cut by a finer Voronoi tessellation into convex fragments."""
    rng = np.random.default_rng(16)
    size_nm = np.array(SHAPE) * np.array(RESOLUTION)
    seeds = np.array(OFFSET) * np.array(RESOLUTION) + rng.uniform(0, 1, size=(60, 3)) * size_nm
    cell = _nearest(seeds).astype(np.uint64)
    key = np.where(labels > 0, np.searchsorted(LABELS, labels).astype(np.uint64) * 1000 + cell + 1, 0)
    _, inverse = np.unique(key, return_inverse=True)
    fragments = inverse.reshape(SHAPE).astype(np.uint64)  # 0 stays 0: it sorts first
    return np.where(fragments > 0, fragments + 5000, 0).astype(np.uint64)


def face_contacts(labels: np.ndarray) -> pd.DataFrame:
    """Pairs of labels sharing voxel faces, lo < hi, with their face counts."""
    pairs = []
    for axis in range(3):
        a = np.moveaxis(labels, axis, 0)[:-1].ravel()
        b = np.moveaxis(labels, axis, 0)[1:].ravel()
        keep = (a != b) & (a > 0) & (b > 0)
        pairs.append(np.stack([np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])], axis=1))
    frame = pd.DataFrame(np.concatenate(pairs), columns=["sv1", "sv2"])
    return frame.value_counts().rename("area").reset_index()


def write_layer(path: Path, labels: np.ndarray, encoding: str = "compresso") -> str:
    from cloudvolume import CloudVolume

    info = CloudVolume.create_new_info(1, "segmentation", "uint64", encoding, list(RESOLUTION), list(OFFSET), list(SHAPE), chunk_size=list(INPUT_CHUNKS))
    url = "file://" + str(path)
    volume = CloudVolume(url, info=info, progress=False, compress=False)
    volume.commit_info()
    volume[OFFSET[0] : OFFSET[0] + SHAPE[0], OFFSET[1] : OFFSET[1] + SHAPE[1], OFFSET[2] : OFFSET[2] + SHAPE[2]] = labels
    return url


# -- reading it back through the server --------------------------------------------------------------
def graphene(server, token: str, name: str, agglomerate: bool):
    return graphene_volume(server.url, name, token, agglomerate=agglomerate)


def whole(volume) -> np.ndarray:
    box = tuple(slice(o, o + s) for o, s in zip(OFFSET, SHAPE))
    return np.asarray(volume[box])[..., 0]


def assert_same_partition(labels: np.ndarray, roots: np.ndarray) -> dict[int, int]:
    """Root of each label, the map being one-to-one and zero exactly where the labels are zero."""
    assert np.array_equal(labels == 0, roots == 0)
    pairs = np.unique(np.stack([labels[labels > 0].astype(np.uint64), roots[labels > 0].astype(np.uint64)], axis=1), axis=0)
    assert np.unique(pairs[:, 0]).size == pairs.shape[0], "a label lies in more than one root"
    assert np.unique(pairs[:, 1]).size == pairs.shape[0], "a root holds more than one label"
    return {int(a): int(b) for a, b in pairs}


def nm(voxel) -> list[float]:
    return [(v + 0.5) * r for v, r in zip(voxel, RESOLUTION)]


def write_image(path: Path) -> str:
    """A JPEG image layer over the same voxels (a local one: the server serves it)."""
    from cloudvolume import CloudVolume

    info = CloudVolume.create_new_info(1, "image", "uint8", "jpeg", list(RESOLUTION), list(OFFSET), list(SHAPE), chunk_size=[32, 32, 8])
    volume = CloudVolume("file://" + str(path), info=info, progress=False)
    volume.commit_info()
    grid = np.indices(SHAPE).sum(axis=0)
    volume[OFFSET[0] : OFFSET[0] + SHAPE[0], OFFSET[1] : OFFSET[1] + SHAPE[1], OFFSET[2] : OFFSET[2] + SHAPE[2]] = (grid * 3 % 251).astype(np.uint8)
    return "precomputed://file://" + str(path)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    return write_image(tmp_path_factory.mktemp("image") / "image")


@pytest.fixture(scope="module")
def lab(server, admin_token, image, tmp_path_factory):
    """The flat segmentation ingested into the shared server with its image, everyone allowed to edit."""
    labels = flat_labels()
    url = write_layer(tmp_path_factory.mktemp("lab") / "seg", labels)
    result = server.cli("ingest", "segmentation", FLAT, "--watershed", url, "--image", image, "--chunk-size", *GRAPH_CHUNKS, "--grant", "default")
    assert f"ingested datastack {FLAT}: {LABELS.size} objects" in result.stdout, result.stdout + result.stderr
    client = CAVEclient(FLAT, server_address=server.url, auth_token=admin_token)
    ours = OurClient(FLAT, server_address=server.url, auth_token=admin_token)
    return labels, client, ours


@pytest.fixture(scope="module")
def supervoxels(lab, server, admin_token) -> np.ndarray:
    return whole(graphene(server, admin_token, FLAT, agglomerate=False))


def contact(labels: np.ndarray, a: int, b: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Neighbouring voxels (absolute) of labels a and b along x."""
    at = np.argwhere((labels[:-1] == a) & (labels[1:] == b))
    assert at.size, f"labels {a} and {b} do not touch along x"
    first = at[len(at) // 2]
    return tuple(int(v) for v in first + OFFSET), tuple(int(v) for v in first + (1, 0, 0) + OFFSET)


def touching_pair(labels: np.ndarray) -> tuple[int, int]:
    a = labels[:-1].ravel()
    b = labels[1:].ravel()
    keep = (a != b) & (a > 0) & (b > 0)
    pairs = np.unique(np.stack([a[keep], b[keep]], axis=1), axis=0)
    return int(pairs[0, 0]), int(pairs[0, 1])


# -- the acceptance -----------------------------------------------------------------------------------
def test_one_root_per_object_voxel_by_voxel(lab, server, admin_token, supervoxels):
    labels, client, ours = lab
    roots = whole(graphene(server, admin_token, FLAT, agglomerate=True))
    root_of = assert_same_partition(labels, roots)
    assert len(root_of) == LABELS.size
    for label, root in root_of.items():
        leaves = client.chunkedgraph.get_leaves(root)
        # the root's supervoxels cover exactly the object's voxels
        assert np.array_equal(np.isin(supervoxels, leaves), labels == label)
        assert set(ours.chunkedgraph.get_label_supervoxels(label).tolist()) == set(leaves.tolist())
        found, voxels = ours.chunkedgraph.get_label_roots(label, return_voxels=True)
        assert found.tolist() == [root] and voxels.tolist() == [int((labels == label).sum())]
    # supervoxels are cut at graph chunk boundaries, so objects cross many of them
    assert max(len(client.chunkedgraph.get_leaves(r)) for r in root_of.values()) >= 6
    assert client.chunkedgraph.get_roots(np.unique(supervoxels[supervoxels > 0])).size > 0


def test_positions_and_original_labels(lab, server, admin_token, supervoxels):
    labels, client, ours = lab
    label = int(LABELS[3])
    voxel = tuple(int(v) for v in np.argwhere(labels == label)[0] + OFFSET)
    sv = int(supervoxels[tuple(np.subtract(voxel, OFFSET))])
    root = int(client.chunkedgraph.get_root_id(sv))
    assert ours.chunkedgraph.get_label_roots(label).tolist() == [root]
    with pytest.raises(Exception, match="not in the segmentation"):
        ours.chunkedgraph.get_label_roots(12345)


def test_merge_split_undo_and_lineage(lab, server, admin_token, supervoxels):
    labels, client, ours = lab
    a, b = touching_pair(labels)
    va, vb = contact(labels, a, b)
    sva, svb = (int(supervoxels[tuple(np.subtract(v, OFFSET))]) for v in (va, vb))
    root_a, root_b = (int(r) for r in client.chunkedgraph.get_roots([sva, svb]))
    leaves_a, leaves_b = (set(client.chunkedgraph.get_leaves(r).tolist()) for r in (root_a, root_b))

    client.chunkedgraph.do_merge([sva, svb], [nm(va), nm(vb)], resolution=(1, 1, 1))
    merged = int(client.chunkedgraph.get_root_id(sva))
    assert merged == int(client.chunkedgraph.get_root_id(svb)) and merged not in (root_a, root_b)
    assert set(client.chunkedgraph.get_leaves(merged).tolist()) == leaves_a | leaves_b
    assert sorted(ours.chunkedgraph.get_label_roots(a).tolist()) == [merged]

    operation, new_roots = client.chunkedgraph.execute_split([nm(va)], [nm(vb)], merged, [sva], [svb])
    assert len(new_roots) == 2
    after = {frozenset(client.chunkedgraph.get_leaves(r).tolist()) for r in new_roots}
    assert after == {frozenset(leaves_a), frozenset(leaves_b)}

    client.chunkedgraph.undo_operation(operation)
    assert int(client.chunkedgraph.get_root_id(sva)) == int(client.chunkedgraph.get_root_id(svb))
    lineage = client.chunkedgraph.get_lineage_graph(merged)
    nodes = {int(n["id"]) for n in lineage["nodes"]}
    assert {root_a, root_b, merged} <= nodes and set(int(r) for r in new_roots) <= nodes
    assert client.chunkedgraph.is_latest_roots([merged]).tolist() == [False]


def test_split_inside_one_object(lab, server, admin_token, supervoxels):
    """A flat object is cut along the graph chunk boundaries its supervoxels follow."""
    labels, client, ours = lab
    label = int(LABELS[5])
    where = np.argwhere(labels == label)
    low, high = where[np.argmin(where[:, 0])], where[np.argmax(where[:, 0])]
    sv_low, sv_high = (int(supervoxels[tuple(v)]) for v in (low, high))
    root = int(client.chunkedgraph.get_root_id(sv_low))
    before = dt.datetime.now(dt.timezone.utc)
    time.sleep(0.05)
    _, new_roots = client.chunkedgraph.execute_split([nm(low + OFFSET)], [nm(high + OFFSET)], root, [sv_low], [sv_high])
    assert len(new_roots) >= 2
    assert ours.chunkedgraph.get_label_roots(label, timestamp=before).tolist() == [root]
    found, voxels = ours.chunkedgraph.get_label_roots(label, return_voxels=True)
    assert sorted(found.tolist()) == sorted(int(r) for r in new_roots)
    assert voxels.sum() == (labels == label).sum()
    roots = whole(graphene(server, admin_token, FLAT, agglomerate=True))
    assert set(np.unique(roots[labels == label]).tolist()) == set(int(r) for r in new_roots)


def test_l2_cache_meshes_and_skeletons(lab, server, admin_token, supervoxels):
    labels, client, ours = lab
    label = int(LABELS[1])
    root = int(ours.chunkedgraph.get_label_roots(label)[0])
    l2_ids = client.chunkedgraph.get_leaves(root, stop_layer=2)
    data = client.l2cache.get_l2data(l2_ids.tolist(), attributes=["size_nm3", "rep_coord_nm"])
    voxel_nm3 = float(np.prod(RESOLUTION))
    assert sum(v["size_nm3"] for v in data.values()) == pytest.approx((labels == label).sum() * voxel_nm3)
    where = np.argwhere(labels == label) + OFFSET
    lo_nm, hi_nm = where.min(axis=0) * RESOLUTION, (where.max(axis=0) + 1) * np.array(RESOLUTION)
    for value in data.values():
        assert np.all(np.array(value["rep_coord_nm"]) >= lo_nm) and np.all(np.array(value["rep_coord_nm"]) <= hi_nm)

    mesh = graphene(server, admin_token, FLAT, agglomerate=True).mesh.get(root, remove_duplicate_vertices=True)[root]
    assert len(mesh.vertices) > 100
    assert np.all(mesh.vertices >= lo_nm - np.array(RESOLUTION)) and np.all(mesh.vertices <= hi_nm + np.array(RESOLUTION))

    skeleton = client.skeleton.get_skeleton(root, output_format="dict")
    vertices = np.array(skeleton["vertices"])
    assert len(vertices) >= 2
    assert np.all(vertices >= lo_nm - np.array(RESOLUTION)) and np.all(vertices <= hi_nm + np.array(RESOLUTION))


def test_annotations_bind_to_the_objects(lab, server, admin_token, tmp_path):
    labels, client, ours = lab
    targets = [int(LABELS[k]) for k in (0, 2, 4)]
    voxels = [np.argwhere(labels == label)[7] + OFFSET for label in targets]
    roots = [int(ours.chunkedgraph.get_label_roots(label)[0]) for label in targets]

    client.annotation.create_table("somas", "nucleus_detection", "Somas of the ingested lab segmentation.", voxel_resolution=list(RESOLUTION))
    client.annotation.post_annotation("somas", [{"pt": {"position": [int(v) for v in voxel]}, "volume": 1.0} for voxel in voxels])
    live = client.materialize.live_live_query("somas", dt.datetime.now(dt.timezone.utc))
    assert sorted(live["pt_root_id"].tolist()) == sorted(roots)

    csv = tmp_path / "somas.csv"
    pd.DataFrame(
        {"pt_position_x": [v[0] for v in voxels], "pt_position_y": [v[1] for v in voxels], "pt_position_z": [v[2] for v in voxels], "volume": [2.0] * 3}
    ).to_csv(csv, index=False)
    server.cli("import", "table", FLAT, "imported_somas", str(csv), "--schema", "nucleus_detection", "--description", "Imported somas.", "--voxel-resolution", *map(str, RESOLUTION))
    live = client.materialize.live_live_query("imported_somas", dt.datetime.now(dt.timezone.utc))
    assert sorted(live["pt_root_id"].tolist()) == sorted(roots)

    server.cli("materialize", "create", FLAT)
    version = max(client.materialize.get_versions())
    frozen = client.materialize.query_table("imported_somas", materialization_version=version)
    assert sorted(frozen["pt_root_id"].tolist()) == sorted(roots)


def test_watershed_is_served_for_cloudvolume(lab, server, admin_token, supervoxels):
    from cloudvolume import CloudVolume

    labels, client, ours = lab
    volume = CloudVolume(f"precomputed://{server.url}/volumes/{FLAT}/ws", mip=0, progress=False, secrets={"user": "token", "password": admin_token})
    assert np.array_equal(whole(volume), supervoxels)
    assert tuple(volume.voxel_offset) == OFFSET and tuple(volume.resolution) == RESOLUTION


def test_a_local_image_is_served_with_it(lab, server, admin_token, image):
    from cloudvolume import CloudVolume

    labels, client, ours = lab
    source = client.info.image_source()
    assert source == f"precomputed://{server.url}/volumes/{FLAT}/image"
    served = whole(CloudVolume(source, mip=0, progress=False, secrets={"user": "token", "password": admin_token}))
    assert np.array_equal(served, whole(CloudVolume(image, mip=0, progress=False))) and served.std() > 10


# -- over-segmentations ---------------------------------------------------------------------------
def test_edges_with_a_threshold_ingest_to_their_components(server, admin_token, tmp_path):
    fragments = fragments_of(flat_labels())
    contacts = face_contacts(fragments)
    objects = flat_labels()
    owner = pd.Series(objects[fragments > 0], index=fragments[fragments > 0]).groupby(level=0).first()
    same = owner.loc[contacts["sv1"]].to_numpy() == owner.loc[contacts["sv2"]].to_numpy()
    rng = np.random.default_rng(17)
    affinity = np.where(same, rng.uniform(0.6, 1.0, same.size), rng.uniform(0.0, 0.4, same.size))
    flips = rng.choice(np.flatnonzero(~same), 2, replace=False)
    affinity[flips] = 0.8  # false merges
    cuts = rng.choice(np.flatnonzero(same), same.sum() // 4, replace=False)
    affinity[cuts] = 0.2  # false splits where these were the only links
    edges = contacts.assign(affinity=affinity)
    apart = owner.index.to_numpy()[[0, -1]]  # a listed pair that touches nowhere
    edges = pd.concat([edges, pd.DataFrame({"sv1": [apart[0]], "sv2": [apart[1]], "area": [0], "affinity": [0.95]})])
    path = tmp_path / "edges.parquet"
    edges.astype({"sv1": "uint64", "sv2": "uint64"}).to_parquet(path)
    url = write_layer(tmp_path / "fragments", fragments, encoding="compressed_segmentation")
    server.cli("ingest", "segmentation", "lab_edges", "--watershed", url, "--edges", str(path), "--threshold", "0.5", "--chunk-size", *GRAPH_CHUNKS)

    labels = np.unique(fragments[fragments > 0])
    above = edges[edges["affinity"] > 0.5]
    a, b = np.searchsorted(labels, above["sv1"].to_numpy()), np.searchsorted(labels, above["sv2"].to_numpy())
    _, component = connected_components(coo_matrix((np.ones(a.size), (a, b)), shape=(labels.size, labels.size)), directed=False)
    oracle = np.zeros(fragments.shape, np.int64)
    oracle[fragments > 0] = component[np.searchsorted(labels, fragments[fragments > 0])] + 1
    roots = whole(graphene(server, admin_token, "lab_edges", agglomerate=True))
    assert_same_partition(oracle, roots)
    assert np.unique(component).size != np.unique(objects[objects > 0]).size  # the cuts and merges mattered


def test_a_mapping_ingests_to_its_segments(server, admin_token, tmp_path):
    objects = flat_labels()
    fragments = fragments_of(objects)
    mapping = pd.DataFrame({"supervoxel": fragments[fragments > 0], "segment": objects[fragments > 0]}).drop_duplicates()
    path = tmp_path / "mapping.csv"
    mapping.to_csv(path, index=False)
    url = write_layer(tmp_path / "fragments", fragments, encoding="raw")
    server.cli("ingest", "segmentation", "lab_mapped", "--watershed", url, "--agglomeration", str(path), "--chunk-size", *GRAPH_CHUNKS)
    roots = whole(graphene(server, admin_token, "lab_mapped", agglomerate=True))
    assert_same_partition(objects, roots)
    # one original label (a fragment) is still found, in its segment's root
    fragment = int(mapping["supervoxel"].iloc[0])
    ours = OurClient("lab_mapped", server_address=server.url, auth_token=admin_token)
    segment_root = roots[fragments == fragment][0]
    assert ours.chunkedgraph.get_label_roots(fragment).tolist() == [int(segment_root)]
