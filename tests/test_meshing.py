"""Meshes of the chunkedgraph over HTTP, as cloud-volume's graphene source and Neuroglancer read
them: manifests, Draco fragments, meshes kept current by edits, remesh requests, bad input."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import requests
from scipy import ndimage
from sqlalchemy import create_engine, select

from opencave.services.jobs import JobQueue
from opencave.services.meshing.service import REMESH_JOB
from opencave.storage.tables import l2_meshes
from opencave.wire.node_ids import chunk_coordinates
from tests.support.demo import _neuron_pairs, demo_world
from tests.support.volumes import graphene_volume

TABLE = "opencave_demo"
T = f"/segmentation/api/v1/table/{TABLE}"
M = f"/meshing/api/v1/table/{TABLE}"


@pytest.fixture(scope="module")
def world(server):
    return demo_world(server)


@pytest.fixture(scope="module")
def http(server, admin_token):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {admin_token}"

    def call(method: str, path: str, **kwargs) -> requests.Response:
        return session.request(method, server.url + path, **kwargs)

    return call


@pytest.fixture(scope="module")
def info(http) -> dict:
    r = http("GET", f"/segmentation/table/{TABLE}/info")
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def store(server):
    """The server's own database, to look at queued requests and stored meshes."""
    url = server.database or f"sqlite:///{server.data_dir / 'opencave.db'}"
    engine = create_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def all_voxels(world) -> np.ndarray:
    volume = world.volume
    return volume.cutout(volume.voxel_offset, np.add(volume.voxel_offset, volume.size))


def _graphene(server, token):
    return graphene_volume(server.url, TABLE, token)


def _error(response: requests.Response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == status and body["message"]
    for word in words:
        assert word.lower() in body["message"].lower(), body["message"]
    return body


def _root(http, sv: int) -> int:
    r = http("POST", T + "/roots_binary", data=np.array([sv], dtype="<u8").tobytes())
    assert r.status_code == 200, r.text
    return int(np.frombuffer(r.content, dtype="<u8")[0])


def _leaves(http, node: int, stop_layer: int = 1) -> np.ndarray:
    r = http("GET", f"{T}/node/{node}/leaves", params={"stop_layer": stop_layer})
    assert r.status_code == 200, r.text
    return np.array(r.json()["leaf_ids"], dtype=np.uint64)


def _manifest(http, node: int, body: dict | None = None, **params) -> dict:
    r = http("GET", f"{M}/manifest/{node}:0", params=params, data=json.dumps(body) if body is not None else None)
    assert r.status_code == 200, r.text
    return r.json()


def _mesh(server, token, root: int):
    """cloud-volume's mesh of a root, duplicate vertices (chunk boundaries) merged."""
    return _graphene(server, token).mesh.get(root, remove_duplicate_vertices=True)[root]


def _voxel_box_nm(world, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The box (nm) around a voxel mask, out to the half-voxel where a surface can lie."""
    resolution = np.array(world.volume.resolution, dtype=float)
    where = np.argwhere(mask) + np.array(world.volume.voxel_offset)
    return (where.min(axis=0) - 0.5) * resolution, (where.max(axis=0) + 0.5) * resolution


def _open_inner_edges(mesh, world) -> tuple[int, int]:
    """Edges used by one triangle only, away from the volume's faces; and all edges."""
    vertices, inverse = np.unique(mesh.vertices, axis=0, return_inverse=True)
    faces = inverse.ravel()[mesh.faces]
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    resolution = np.array(world.volume.resolution, dtype=float)
    low = np.array(world.volume.voxel_offset) * resolution
    high = (np.array(world.volume.voxel_offset) + np.array(world.volume.size) - 1) * resolution
    ends = vertices[unique[counts == 1]]
    on_edge = (np.isclose(ends, low) | np.isclose(ends, high)).all(axis=1).any(axis=1)
    return int((~on_edge).sum()), len(unique)


def _fresh_pair(http, world, skip: int, same_chunk: bool = False) -> tuple[int, int]:
    """Touching supervoxels of two neurons whose objects are currently different (optionally
    of one chunk, so that merging them makes a new L2 node)."""
    layout = world.spec.layout
    for a, b in _neuron_pairs(world, 200, skip=skip):
        if same_chunk and not (chunk_coordinates(layout, [a]) == chunk_coordinates(layout, [b])).all():
            continue
        if _root(http, a) != _root(http, b):
            return a, b
    raise AssertionError("no touching pair of different objects left")


# -- info and the graphene source ----------------------------------------------------------
def test_info_describes_unsharded_draco_meshes(info, world):
    assert info["mesh"] == "graphene_meshes"
    meta = info["mesh_metadata"]
    assert meta["max_meshed_layer"] == 2 and "sharding" not in meta
    grid = meta["uniform_draco_grid_size"]
    boundaries = np.array(world.spec.chunk_size) * np.array(world.volume.resolution)
    assert grid > 0 and np.allclose(boundaries / grid, np.round(boundaries / grid))


def test_cloudvolume_downloads_a_root_mesh(server, admin_token, http, world, info, all_voxels):
    sv = int(world.soma_supervoxels[2])
    root = _root(http, sv)
    mesh = _mesh(server, admin_token, root)
    assert len(mesh.vertices) > 100 and len(mesh.faces) > 100
    mask = np.isin(all_voxels, _leaves(http, root))
    low, high = _voxel_box_nm(world, mask)
    tolerance = float(min(world.volume.resolution))
    assert (mesh.vertices >= low - tolerance).all() and (mesh.vertices <= high + tolerance).all()
    # one mesh: the chunks' copies of boundary vertices coincide exactly (grid-aligned Draco), so
    # merging them joins the fragments; the surface is closed but for a few cells on chunk edges
    raw = _graphene(server, admin_token).mesh.get(root, deduplicate_chunk_boundaries=False)[root]
    assert len(mesh.faces) >= 0.99 * len(raw.faces) and len(mesh.vertices) < 0.9 * len(raw.vertices)
    open_edges, edges = _open_inner_edges(mesh, world)
    assert open_edges <= 0.02 * edges, (open_edges, edges)
    surface_voxels = int((mask & ~ndimage.binary_erosion(mask)).sum())
    assert 0.03 * surface_voxels <= len(mesh.vertices) <= 1.5 * surface_voxels, (len(mesh.vertices), surface_voxels)
    # L2 ids download too (cloud-volume's level-2 path, with its Draco deduplication)
    l2_ids = _manifest(http, root, verify=1, return_seg_ids=1)["seg_ids"]
    parts = _graphene(server, admin_token).mesh.get(l2_ids[:5])
    assert all(len(p.vertices) for p in parts.values())


def test_neuroglancer_style_manifest_and_fragment_urls(http, info, world, admin_token):
    root = _root(http, int(world.soma_supervoxels[3]))
    manifest = _manifest(http, root, verify=1, prepend_seg_ids=1)
    assert manifest["fragments"]
    for entry in manifest["fragments"][:5]:
        assert entry.startswith("~")
        key, _, name = entry[1:].partition(":")
        assert name.startswith(key + ":0:")
        r = requests.get(f"{info['data_dir']}/{info['mesh']}/{name}", auth=("token", admin_token))
        assert r.status_code == 200 and r.content


def test_fragments_are_grid_quantized_draco(http, info, world):
    import DracoPy

    root = _root(http, int(world.soma_supervoxels[4]))
    l2_ids = _manifest(http, root, verify=1, return_seg_ids=1)["seg_ids"]
    grid = info["mesh_metadata"]["uniform_draco_grid_size"]
    resolution = np.array(world.volume.resolution, dtype=float)
    chunk = np.array(world.spec.chunk_size)
    for l2 in l2_ids[:8]:
        name = _manifest(http, l2, verify=1)["fragments"][0]
        box = np.array([[int(v) for v in axis.split("-")] for axis in name.split(":")[2].split("_")])
        r = http("GET", f"/volumes/{TABLE}/ws/graphene_meshes/{name}")
        assert r.status_code == 200
        decoded = DracoPy.decode(r.content)
        vertices = np.asarray(decoded.points, dtype=float)
        assert len(vertices) and len(np.asarray(decoded.faces))
        assert np.allclose(vertices / grid, np.round(vertices / grid))
        # within the chunk, its one-voxel overlap above and the one-voxel slab below (give or
        # take what simplification may move a vertex: two voxels of the finest axis)
        start = box[:, 0] + np.array(world.volume.voxel_offset)
        slack = 2 * resolution.min()
        low = (start - 1) * resolution - slack
        high = (start + chunk + 1) * resolution + slack
        assert (vertices >= low).all() and (vertices <= high).all(), name


# -- manifest variants -------------------------------------------------------------------------
def test_manifest_variants(http, world):
    root = _root(http, int(world.soma_supervoxels[5]))
    l2_ids = sorted(int(i) for i in _leaves(http, root, stop_layer=2))
    speculative = _manifest(http, root, return_seg_ids=1)
    assert speculative["seg_ids"] == l2_ids
    assert [f.split(":")[0] for f in speculative["fragments"]] == [str(i) for i in l2_ids]
    verified = _manifest(http, root, verify="True", return_seg_ids="true")
    assert verified["seg_ids"] and set(verified["seg_ids"]) <= set(l2_ids)
    assert "seg_ids" not in _manifest(http, root, verify="true")
    prepended = _manifest(http, root, verify=1, prepend_seg_ids=1, return_seg_ids=1)
    assert prepended["fragments"] == [f"~{i}:{f}" for i, f in zip(prepended["seg_ids"], verified["fragments"])]
    # the body cloud-volume sends, and the other body options
    assert _manifest(http, root, body={"start_layer": 2}, verify=1) == {"fragments": verified["fragments"]}
    extra = _manifest(http, root, body={"return_seg_ids": True, "return_seg_id_layers": True, "return_seg_chunk_coordinates": True}, verify=1)
    assert extra["seg_ids"] == verified["seg_ids"] and extra["seg_id_layers"] == [2] * len(verified["seg_ids"])
    assert len(extra["seg_chunk_coordinates"]) == len(verified["seg_ids"])
    # bounds keep the nodes whose chunk meets the box
    coords = np.array(extra["seg_chunk_coordinates"])
    chunk = np.array(world.spec.chunk_size)
    first = coords[0]
    bounds = "_".join(f"{c * s}-{c * s + 1}" for c, s in zip(first, chunk))
    boxed = _manifest(http, root, verify=1, return_seg_ids=1, bounds=bounds)
    expected = [i for i, c in zip(verified["seg_ids"], coords.tolist()) if c == first.tolist()]
    assert boxed["seg_ids"] == expected
    # an L2 node's manifest is its own fragment; a node in between lists its L2 descendants
    assert _manifest(http, l2_ids[0], return_seg_ids=1)["seg_ids"] == [l2_ids[0]]
    children = http("GET", f"{T}/node/{root}/children").json()["children_ids"]
    middle = max(children, key=lambda c: int(c) >> 56)
    assert _manifest(http, middle, return_seg_ids=1)["seg_ids"] == sorted(int(i) for i in _leaves(http, middle, stop_layer=2))


# -- edits -------------------------------------------------------------------------------------
def test_meshes_follow_merge_and_split(server, admin_token, http, world):
    a, b = _fresh_pair(http, world, skip=10)
    root_a, root_b = _root(http, a), _root(http, b)
    before_a = _manifest(http, root_a, verify=1, return_seg_ids=1)
    before_b = _manifest(http, root_b, verify=1, return_seg_ids=1)
    mesh_a, mesh_b = _mesh(server, admin_token, root_a), _mesh(server, admin_token, root_b)

    r = http("POST", T + "/merge", json=[[a, 0, 0, 0], [b, 0, 0, 0]])
    assert r.status_code == 200, r.text
    merge_op, (merged,) = r.json()["operation_id"], r.json()["new_root_ids"]
    after = _manifest(http, merged, verify=1, return_seg_ids=1)
    assert set(after["seg_ids"]) <= set(int(i) for i in _leaves(http, merged, stop_layer=2))
    mesh = _mesh(server, admin_token, merged)
    merged_vertices = {tuple(v) for v in mesh.vertices.tolist()}
    for part in (mesh_a, mesh_b):
        kept = sum(tuple(v) in merged_vertices for v in part.vertices.tolist())
        assert kept >= 0.9 * len(part.vertices), (kept, len(part.vertices))
    # the old roots answer as of their time
    assert _manifest(http, root_a, verify=1, return_seg_ids=1) == before_a
    assert _manifest(http, root_b, verify=1, return_seg_ids=1) == before_b

    r = http("POST", T + "/split", json={"sources": [[a, *world.nm_point(a)]], "sinks": [[b, *world.nm_point(b)]]})
    assert r.status_code == 200, r.text
    split_op, halves = r.json()["operation_id"], r.json()["new_root_ids"]
    assert len(halves) == 2 and merged not in halves
    manifests = [_manifest(http, h, verify=1, return_seg_ids=1) for h in halves]
    first, second = (set(m["seg_ids"]) for m in manifests)
    assert first and second and not first & second
    assert set(manifests[0]["fragments"]).isdisjoint(manifests[1]["fragments"])
    for half, manifest in zip(halves, manifests):
        assert set(manifest["seg_ids"]) <= set(int(i) for i in _leaves(http, half, stop_layer=2))
        half_mesh = _mesh(server, admin_token, half)
        assert len(half_mesh.vertices) > 0
    assert _manifest(http, merged, verify=1, return_seg_ids=1) == after
    for op in (split_op, merge_op):  # leave the objects as they were
        assert http("POST", T + "/undo", json={"operation_id": op}).status_code == 200


def test_new_l2_nodes_of_an_edit_are_meshed_without_a_request(http, world, store):
    a, b = _fresh_pair(http, world, skip=0, same_chunk=True)
    old = {int(i) for r in (_root(http, a), _root(http, b)) for i in _leaves(http, r, stop_layer=2)}
    r = http("POST", T + "/merge", json=[[a, 0, 0, 0], [b, 0, 0, 0]])
    assert r.status_code == 200, r.text
    op, merged = r.json()["operation_id"], r.json()["new_root_ids"][0]
    created = sorted({int(i) for i in _leaves(http, merged, stop_layer=2)} - old)
    assert created, "a merge inside one chunk makes a new L2 node"
    deadline = time.time() + 30
    while time.time() < deadline:
        with store.connect() as conn:
            stored = conn.execute(
                select(l2_meshes.c.l2_id).where(l2_meshes.c.table_id == TABLE, l2_meshes.c.l2_id.in_(created))
            ).scalars().all()
        if len(stored) == len(created):
            break
        time.sleep(0.1)
    assert sorted(stored) == created
    assert http("POST", T + "/undo", json={"operation_id": op}).status_code == 200


def test_remesh_requests_are_consumed(server, admin_token, http, world, store):
    """A remesh request is a queued job; the server's job thread takes it and meshes the nodes."""
    from caveclient import CAVEclient

    root = _root(http, int(world.soma_supervoxels[6]))
    l2_ids = [int(i) for i in _leaves(http, root, stop_layer=2)][:6]
    with store.begin() as conn:  # make the request do work: forget these meshes
        conn.execute(l2_meshes.delete().where(l2_meshes.c.table_id == TABLE, l2_meshes.c.l2_id.in_(l2_ids)))
    queue = JobQueue(store)
    before = {job.id for job in queue.list(kind=REMESH_JOB, limit=1000)}
    client = CAVEclient(TABLE, server_address=server.url, auth_token=admin_token)
    client.chunkedgraph.remesh_level2_chunks(l2_ids)
    [job] = [job for job in queue.list(kind=REMESH_JOB, limit=1000) if job.id not in before]
    assert job.payload == {"table_id": TABLE, "l2_ids": sorted(l2_ids)}
    deadline = time.time() + 30
    while time.time() < deadline and not (job := queue.get(job.id)).done:
        time.sleep(0.2)
    with store.connect() as conn:
        meshed = conn.execute(select(l2_meshes.c.l2_id).where(l2_meshes.c.table_id == TABLE, l2_meshes.c.l2_id.in_(l2_ids))).all()
    assert job.status == "done" and job.result == {"meshed": len(l2_ids)}, job
    assert len(meshed) == len(l2_ids)


# -- bad input ---------------------------------------------------------------------------------
def test_bad_input_gets_clear_errors(server, http, world, info):
    sv = int(world.soma_supervoxels[0])
    root = _root(http, sv)
    unknown = (root >> 56 << 56) | ((1 << 40) - 3)
    _error(http("GET", f"{M}/manifest/{sv}:0"), 400, "supervoxel")
    _error(http("GET", f"{M}/manifest/{unknown}:0"), 404, str(unknown), "does not exist")
    _error(http("GET", f"{M}/manifest/abc:0"), 400, "decimal")
    _error(http("GET", f"{M}/manifest/{root}:x"), 400, "lod")
    _error(http("GET", f"{M}/manifest/{root}:0", params={"bounds": "0-10_9-1_0-4"}), 400, "bounds")
    _error(http("GET", f"{M}/manifest/{root}:0", params={"bounds": "nonsense"}), 400, "bounds")
    _error(http("GET", f"{M}/manifest/{root}:0", data="{not json"), 400, "json")
    _error(http("GET", f"{M}/manifest/{root}:0", data=json.dumps({"start_layer": 1})), 400, "start_layer")
    _error(http("GET", f"{M}/manifest/{root}:0", data=json.dumps({"start_layer": "two"})), 400, "start_layer")
    _error(http("GET", f"/meshing/api/v1/table/no_such_graph/manifest/{root}:0"), 404, "no_such_graph")
    fragments = f"/volumes/{TABLE}/ws/{info['mesh']}"
    _error(http("GET", f"{fragments}/{unknown}:0:0-64_0-64_0-16"), 404, "fragment")
    _error(http("GET", f"{fragments}/123:0:0-64_0-64_0-16"), 404, "fragment")
    _error(http("GET", f"{fragments}/not-a-fragment"), 404, "fragment")
    l2 = int(_leaves(http, root, stop_layer=2)[0])
    _error(http("GET", f"{fragments}/{l2}:0:1-2_3-4_5-6"), 404, "box")
    assert requests.get(server.url + f"{fragments}/{l2}:0:0-64_0-64_0-16").status_code == 401
    assert requests.get(server.url + f"{M}/manifest/{root}:0").status_code == 401
    assert requests.get(server.url + "/meshing/api/version").json()


def test_files_that_never_exist_are_404_without_a_token(server, http, info, world):
    """cloud-volume reads ``provenance`` and the mesh directory's ``info`` without credentials
    (the genuine ``segmentation_cloudvolume()`` does): they answer 404, not 401, or for the mesh
    info the unsharded legacy format cloud-volume assumes without one (Neuroglancer needs it);
    real chunks and fragments still need a token."""
    for path in ("provenance", "graphene_meshes/dynamic/info"):
        _error(requests.get(f"{server.url}/volumes/{TABLE}/ws/{path}"), 404)
    mesh_info = requests.get(f"{server.url}/volumes/{TABLE}/ws/graphene_meshes/info")
    assert mesh_info.json() == {"@type": "neuroglancer_legacy_mesh", "spatial_index": None}
    fragment = _manifest(http, _root(http, int(world.graph.sv_ids[world.graph.sv_neuron > 0][0])), verify=1)["fragments"][0]
    for path in ("info", f"graphene_meshes/{fragment}"):
        assert requests.get(f"{server.url}/volumes/{TABLE}/ws/{path}").status_code == 401
        assert http("GET", f"/volumes/{TABLE}/ws/{path}").status_code == 200


def _l2_attributes(http, ids) -> dict[int, dict]:
    r = http("POST", "/l2cache/api/v1/table/opencave_demo/attributes", json={"l2_ids": [int(i) for i in ids]})
    assert r.status_code == 200, r.text
    return {int(k): v for k, v in r.json().items()}


def test_l2_cache_answers_follow_merge_and_split(http, world):
    """The L2 cache of a merged object's new L2 node holds the union of the two joined nodes
    (sizes add up); a split gives them back; the replaced nodes keep answering as before."""
    a, b = _fresh_pair(http, world, skip=3, same_chunk=True)
    old_nodes = {int(i) for r in (_root(http, a), _root(http, b)) for i in _leaves(http, r, stop_layer=2)}
    old = _l2_attributes(http, old_nodes)
    r = http("POST", T + "/merge", json=[[a, 0, 0, 0], [b, 0, 0, 0]])
    assert r.status_code == 200, r.text
    merge_op, merged = r.json()["operation_id"], r.json()["new_root_ids"][0]
    merged_nodes = {int(i) for i in _leaves(http, merged, stop_layer=2)}
    created, gone = merged_nodes - old_nodes, old_nodes - merged_nodes
    assert len(created) == 1 and len(gone) == 2, (created, gone)
    new = _l2_attributes(http, created)[created.pop()]
    assert new["size_nm3"] == sum(old[g]["size_nm3"] for g in gone)
    lo = np.min([old[g]["rep_coord_nm"] for g in gone], axis=0) - 1000
    hi = np.max([old[g]["rep_coord_nm"] for g in gone], axis=0) + 1000
    assert (lo <= new["rep_coord_nm"]).all() and (np.asarray(new["rep_coord_nm"]) <= hi).all()
    assert _l2_attributes(http, old_nodes) == old  # the replaced nodes answer as of their time

    r = http("POST", T + "/split", json={"sources": [[a, *world.nm_point(a)]], "sinks": [[b, *world.nm_point(b)]]})
    assert r.status_code == 200, r.text
    split_op, halves = r.json()["operation_id"], r.json()["new_root_ids"]
    split_nodes = {int(i) for h in halves for i in _leaves(http, h, stop_layer=2)}
    after = _l2_attributes(http, split_nodes - merged_nodes)
    assert sorted(v["size_nm3"] for v in after.values()) == sorted(old[g]["size_nm3"] for g in gone)
    for op in (split_op, merge_op):
        assert http("POST", T + "/undo", json={"operation_id": op}).status_code == 200
