"""The skeleton service over HTTP, on both storage engines.

Every format and version decodes and agrees; skeletons are trees over the root's own L2 nodes,
rooted at the soma-table soma; pcg_skel (driven by the genuine caveclient against this server)
builds skeletons of the same cable length; navis reads the SWC; edits give new roots new
skeletons while old roots keep theirs; bulk, async, exists, cache queries and the refusal list
work; bad input gets 4xx JSON.
"""

from __future__ import annotations

import gzip
import time
import warnings

import numpy as np
import pytest
import requests
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from opencave.wire import skeletons as wire
from tests.support.demo import _neuron_pairs, demo_world

DS = "opencave_demo"
S = "/skeletoncache/api"
S1 = f"{S}/v1/{DS}"
T = f"/segmentation/api/v1/table/{DS}"
FORMATS = ["precomputed", "json", "jsoncompressed", "flatdict", "arrays", "arrayscompressed", "swc", "swccompressed", "h5"]


@pytest.fixture(scope="module")
def world(server):
    return demo_world(server)


@pytest.fixture(scope="module")
def http(server, admin_token):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {admin_token}"

    def call(method: str, path: str, **kwargs) -> requests.Response:
        return session.request(method, server.url + path, timeout=120, **kwargs)

    return call


@pytest.fixture(scope="module")
def genuine(server, admin_token, tmp_path_factory, monkeypatch_module):
    import caveclient

    monkeypatch_module.setenv("HOME", str(tmp_path_factory.mktemp("cc-home")))
    return caveclient.CAVEclient(DS, server_address=server.url, auth_token=admin_token)


@pytest.fixture(scope="module")
def monkeypatch_module():
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


@pytest.fixture(scope="module")
def soma_roots(genuine) -> dict[int, np.ndarray]:
    """Roots with exactly one soma-table row now → the soma position in nm."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = genuine.materialize.live_query("nucleus_detection", timestamp=_now())
    resolution = np.array(frame.attrs["dataframe_resolution"], dtype=float)
    counts = frame["pt_root_id"].value_counts()
    single = frame[frame["pt_root_id"].map(counts) == 1]
    single = single[single["pt_root_id"] != 0]
    return {int(r): np.array(p, dtype=float) * resolution for r, p in zip(single["pt_root_id"], single["pt_position"])}


@pytest.fixture(scope="module")
def merged_roots(http, world) -> list[int]:
    """Objects of two neurons each (merged here): two somas, so no soma root and no collapse,
    and big enough for branched skeletons in the small demo world."""
    made: list[int] = []
    used: set[int] = set()
    for a, b in _neuron_pairs(world, 400, skip=6):
        ra, rb = _roots(http, [a, b])
        if ra == rb or {ra, rb} & used:
            continue
        r = http("POST", f"{T}/merge", json=[[a, 0, 0, 0], [b, 0, 0, 0]])
        assert r.status_code == 200, r.text
        used |= {ra, rb}
        made.append(int(r.json()["new_root_ids"][0]))
        if len(made) == 3:
            return made
    raise AssertionError("the demo world has too few touching neuron pairs")


def _now():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


def _error(response: requests.Response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == status and body["message"]
    for word in words:
        assert word.lower() in body["message"].lower(), body["message"]
    return body


def _l2_ids(http, root: int) -> set[int]:
    r = http("GET", f"{T}/node/{root}/leaves", params={"stop_layer": 2})
    assert r.status_code == 200, r.text
    return {int(v) for v in r.json()["leaf_ids"]}


def _leaves(http, root: int) -> set[int]:
    r = http("GET", f"{T}/node/{root}/leaves")
    assert r.status_code == 200, r.text
    return {int(v) for v in r.json()["leaf_ids"]}


def _roots(http, svs) -> list[int]:
    r = http("POST", f"{T}/roots_binary", data=np.asarray(svs, dtype="<u8").tobytes())
    assert r.status_code == 200, r.text
    return np.frombuffer(r.content, dtype="<u8").astype(np.int64).tolist()


def _flat(http, root: int, version: int = 4) -> dict:
    r = http("GET", f"{S1}/async/get_skeleton/{version}/{root}/flatdict")
    assert r.status_code == 200, r.text
    return wire.decode_flatdict(r.content)


def _assert_forest(n: int, edges: np.ndarray, root: int) -> None:
    """Edges are (child, parent): one parent per child, no cycles, the root has no parent."""
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    assert len(np.unique(edges[:, 0])) == len(edges), "a vertex with two parents"
    assert root not in set(edges[:, 0].tolist())
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    n_comp, _ = connected_components(graph, directed=False)
    assert len(edges) == n - n_comp, "the edges have a cycle"


def _check_skeleton(flat: dict, l2_ids: set[int]) -> None:
    vertices, edges = np.asarray(flat["vertices"]), np.asarray(flat["edges"])
    n = len(vertices)
    assert n >= 1 and vertices.shape == (n, 3)
    _assert_forest(n, edges, int(flat["root"]))
    assert len(flat["radius"]) == n and (np.asarray(flat["radius"]) > 0).all()
    assert len(flat["compartment"]) == n
    assert set(np.asarray(flat["lvl2_ids"]).tolist()) == l2_ids
    m2s = np.asarray(flat["mesh_to_skel_map"])
    assert len(m2s) == len(flat["lvl2_ids"]) and m2s.min() >= 0 and m2s.max() < n


def _cable(vertices: np.ndarray, edges: np.ndarray) -> float:
    edges = np.asarray(edges).reshape(-1, 2)
    return float(np.linalg.norm(vertices[edges[:, 0]] - vertices[edges[:, 1]], axis=1).sum()) if len(edges) else 0.0


# -- versions, formats, consistency --------------------------------------------------------------------
def test_service_versions(http):
    assert http("GET", f"{S}/version").json() == wire.SKELETON_SERVER_VERSION
    assert http("GET", f"{S}/versions").json() == [-1, 0, 1, 2, 3, 4]
    info = http("GET", f"{S1}/precomputed/skeleton/info").json()
    assert info == wire.precomputed_skeleton_info(2)
    assert http("GET", f"{S1}/precomputed/skeleton/1/info").json()["vertex_attributes"] == []
    v3 = http("GET", f"{S1}/precomputed/skeleton/3/info").json()["vertex_attributes"]
    assert [a["data_type"] for a in v3] == ["float32", "uint8"]
    seg = http("GET", f"{S1}/precomputed/info").json()
    assert seg["skeletons"] == "skeleton" and seg["graph"]["n_layers"] >= 3


def test_every_format_and_version_decodes(http, merged_roots):
    from caveclient.skeletonservice import SkeletonClient

    root = max(merged_roots, key=lambda r: len(_l2_ids(http, r)))
    l2 = _l2_ids(http, root)
    base = _flat(http, root)
    _check_skeleton(base, l2)
    n = len(base["vertices"])
    assert n > 2 and len(base["edges"]) > 1 and base["meta"]["soma_pt_x"] is None
    for version in wire.SKELETON_VERSIONS:
        concrete = wire.resolve_skeleton_version(version)
        attributes = wire.vertex_attribute_info(concrete)
        got = {}
        for fmt in FORMATS:
            r = http("GET", f"{S1}/precomputed/skeleton/{version}/{root}/{fmt}")
            assert r.status_code == 200, (version, fmt, r.text)
            got[fmt] = r
        pre = wire.decode_precomputed(got["precomputed"].content, attributes)
        assert len(pre["vertices"]) == n and np.allclose(pre["vertices"], base["vertices"], atol=1e-2)
        flat = wire.decode_flatdict(got["flatdict"].content)
        assert flat["meta"]["skeleton_version"] == concrete and flat["meta"]["root_id"] == root
        assert ("lvl2_ids" in flat) == (concrete == 4)
        assert ("radius" in flat) == (concrete >= 2)
        full = got["json"].json()
        assert full == wire.decompress_dict(got["jsoncompressed"].content)
        assert len(full["vertices"]) == n and full["root"] == base["root"]
        arrays = got["arrays"].json()
        assert arrays == wire.decompress_dict(got["arrayscompressed"].content)
        swc = got["swc"].content.decode()
        assert "attachment" in got["swc"].headers["content-disposition"]
        assert swc == wire.decompress_text(got["swccompressed"].content)
        frame = wire.swc_frame(swc)
        assert len(frame) == n and (frame["parent"] == -1).sum() >= 1
        h5 = SkeletonClient._parse_h5gz_to_dict(got["h5"].content)  # caveclient's own decoder
        assert len(h5["vertices"]) == n and h5["meta"]["skeleton_version"] == concrete
        if concrete >= 2:
            assert (pre["radius"] > 0).all() and np.allclose(pre["radius"], base["radius"], rtol=1e-5)
            assert pre["compartment"].dtype == (np.float32 if concrete == 2 else np.uint8)
            assert np.array_equal(pre["compartment"].astype(int), np.asarray(base["compartment"]))
            assert np.allclose(np.sort(frame["radius"].to_numpy() * 1000), np.sort(base["radius"]), atol=1)
            assert set(frame["type"]) <= {1, 2, 3}
            assert np.allclose(h5["radius"], base["radius"], rtol=1e-5)
        else:
            assert set(pre) == {"vertices", "edges"} and "radius" not in h5
        assert abs(_cable(frame[["x", "y", "z"]].to_numpy() * 1000, _swc_edges(frame)) - _cable(np.asarray(base["vertices"]), base["edges"])) < 1 + 1e-3 * n
    none = http("GET", f"{S1}/precomputed/skeleton/4/{root}/none")
    assert none.status_code == 200 and none.json() is None
    _error(http("GET", f"{S1}/precomputed/skeleton/4/{root}/meshwork"), 501, "meshwork")
    # the versionless Neuroglancer URLs answer v2 precomputed
    for path in (f"{S1}/precomputed/skeleton/{root}", f"{S1}/precomputed/skeleton/0/{root}", f"{S1}/async/get_skeleton/0/{root}"):
        r = http("GET", path)
        assert r.status_code == 200 and len(wire.decode_precomputed(r.content, wire.vertex_attribute_info(2))["vertices"]) == n


def _swc_edges(frame) -> np.ndarray:
    child = frame.index[frame["parent"] >= 0].to_numpy()
    return np.stack((child, frame["parent"].to_numpy()[child]), axis=1)


def test_soma_is_the_root(http, soma_roots):
    checked = 0
    for root, soma in list(soma_roots.items())[:4]:
        flat = _flat(http, root)
        _check_skeleton(flat, _l2_ids(http, root))
        r = int(flat["root"])
        assert np.allclose(np.asarray(flat["vertices"])[r], soma, atol=1e-3)
        assert flat["compartment"][r] == wire.COMPARTMENT_SOMA
        assert np.allclose([flat["meta"]["soma_pt_x"], flat["meta"]["soma_pt_y"], flat["meta"]["soma_pt_z"]], soma)
        assert set(np.asarray(flat["compartment"])[np.arange(len(flat["vertices"])) != r].tolist()) <= {wire.COMPARTMENT_DENDRITE}
        checked += 1
    assert checked >= 2


def test_pcg_skel_agrees(http, genuine, soma_roots, merged_roots):
    """pcg_skel, through the genuine caveclient against this server, gives the same cable length
    (with the soma collapse for soma roots, from a far tip for the two-soma objects)."""
    import pcg_skel

    compared = 0
    for root in list(merged_roots) + sorted(soma_roots, key=lambda r: -len(_l2_ids(http, r)))[:6]:
        flat = _flat(http, root)
        distance = flat["meta"]["invalidation_d"]
        soma = soma_roots.get(root)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = pcg_skel.pcg_skeleton(
                root,
                genuine,
                invalidation_d=distance,
                root_point=soma,
                root_point_resolution=[1, 1, 1] if soma is not None else None,
                collapse_soma=soma is not None,
                collapse_radius=flat["meta"]["soma_radius"],
            )
        ours = _cable(np.asarray(flat["vertices"]), flat["edges"])
        theirs = float(reference.path_length())
        assert abs(ours - theirs) <= 0.05 * theirs + 1e-6, (root, ours, theirs)
        if soma is not None:
            assert np.allclose(reference.vertices[reference.root], np.asarray(flat["vertices"])[flat["root"]], atol=1e-3)
        compared += theirs > 0
    assert compared >= 3, "too few skeletons with a cable to compare"


def test_navis_reads_the_swc(http, merged_roots, tmp_path):
    import navis

    root = merged_roots[0]
    flat = _flat(http, root)
    path = tmp_path / "neuron.swc"
    path.write_bytes(http("GET", f"{S1}/precomputed/skeleton/4/{root}/swc").content)
    neuron = navis.read_swc(str(path))
    assert neuron.n_nodes == len(flat["vertices"])
    ours_um = _cable(np.asarray(flat["vertices"]), flat["edges"]) / 1000
    assert abs(float(neuron.cable_length) - ours_um) <= 0.01 * ours_um + 0.01


# -- edits ------------------------------------------------------------------------------------------------
def test_edits_make_new_skeletons_and_old_roots_keep_theirs(http, world):
    pairs = [p for p in _neuron_pairs(world, 400) if len(set(_roots(http, p))) == 2]
    a, b = pairs[-1]
    root_a, root_b = _roots(http, [a, b])
    l2_a, l2_b = _l2_ids(http, root_a), _l2_ids(http, root_b)
    before_b = _flat(http, root_b)  # made before the edit; root_a's is made only after it
    merge = http("POST", f"{T}/merge", json=[[a, 0, 0, 0], [b, 0, 0, 0]])
    assert merge.status_code == 200, merge.text
    merged = int(merge.json()["new_root_ids"][0])
    merged_flat = _flat(http, merged)
    _check_skeleton(merged_flat, _l2_ids(http, merged))
    # the merged skeleton covers both parts: their L2 nodes, except those of the edited chunks,
    # which the merge replaced by new L2 nodes holding the same supervoxels
    assert len((l2_a | l2_b) - set(np.asarray(merged_flat["lvl2_ids"]).tolist())) <= 2
    assert _leaves(http, merged) >= _leaves(http, root_a) | _leaves(http, root_b)
    for old, l2 in ((root_a, l2_a), (root_b, l2_b)):  # expired roots answer as of their time
        flat = _flat(http, old)
        _check_skeleton(flat, l2)
    assert np.array_equal(_flat(http, root_b)["vertices"], before_b["vertices"])

    split = http("POST", f"{T}/split", json={"sources": [[a, 0, 0, 0]], "sinks": [[b, 0, 0, 0]]})
    assert split.status_code == 200, split.text
    halves = [int(r) for r in split.json()["new_root_ids"]]
    assert len(halves) >= 2
    sets = []
    for half in halves:
        flat = _flat(http, half)
        _check_skeleton(flat, _l2_ids(http, half))
        sets.append(set(np.asarray(flat["lvl2_ids"]).tolist()))
    assert not sets[0] & sets[1]
    assert np.array_equal(_flat(http, merged)["vertices"], merged_flat["vertices"])  # the merged root keeps its own


# -- bulk, async, cache, refusal list -----------------------------------------------------------------------
def _fresh_roots(http, world, count: int, skip: int) -> list[int]:
    """Current roots without a stored skeleton (from every ``skip``-th supervoxel onwards)."""
    svs = world.graph.sv_ids[skip::7]
    candidates = list(dict.fromkeys(r for r in _roots(http, svs) if r))
    state = http("POST", f"{S1}/precomputed/skeleton/exists", json={"root_ids": candidates[:1000], "skeleton_version": 4}).json()
    roots = [r for r in candidates[:1000] if not state[str(r)]]
    assert len(roots) >= count, f"only {len(roots)} roots without a skeleton found"
    return roots[:count]


def test_bulk_async_exists_and_cache_queries(http, world):
    roots = _fresh_roots(http, world, 6, skip=1)
    sv = int(world.soma_supervoxels[0])
    unknown = (roots[0] >> 56 << 56) | ((1 << 40) - 3)
    # synchronous bulk: made now with gen_missing, sentinels for ids that are not roots
    r = http("GET", f"{S1}/bulk/get_skeletons/4/flatdict/True/{roots[0]},{roots[1]},{sv},{unknown}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body[str(sv)] == "invalid_layer_rid" and body[str(unknown)] == "invalid_rid"
    for root in roots[:2]:
        assert wire.decode_bulk_entry("flatdict", body[str(root)])["meta"]["root_id"] == root
    swc = http("GET", f"{S1}/bulk/get_skeletons/3/swc/False/{roots[0]}").json()
    frame = wire.decode_bulk_entry("swc", swc[str(roots[0])])
    assert list(frame.columns) == wire.SWC_COLUMNS and len(frame) > 0
    # without gen_missing a missing skeleton is queued and marked async
    assert http("GET", f"{S1}/bulk/get_skeletons/4/flatdict/False/{roots[2]}").json() == {str(roots[2]): "async"}
    # cached bulk returns only stored ones unless generate_missing
    cached = http("POST", f"{S1}/bulk/get_cached_skeletons/4/flatdict", json={"root_ids": [roots[0], roots[3]], "generate_missing": False}).json()
    assert set(cached) == {str(roots[0])}
    made = http("POST", f"{S1}/bulk/get_cached_skeletons/4/swccompressed", json={"root_ids": [roots[3]], "generate_missing": True}).json()
    assert set(made) == {str(roots[3])} and len(wire.decode_bulk_entry("swccompressed", made[str(roots[3])])) > 0
    # asynchronous generation answers an estimate, then the skeletons appear
    estimate = http("POST", f"{S1}/bulk/gen_skeletons", json={"root_ids": roots[4:6], "skeleton_version": 4})
    assert estimate.status_code == 200 and isinstance(estimate.json(), float)
    assert isinstance(http("GET", f"{S1}/bulk/gen_skeletons/4/{roots[4]}").json(), float)
    deadline = time.time() + 60
    while time.time() < deadline:
        state = http("POST", f"{S1}/precomputed/skeleton/exists", json={"root_ids": roots[2:6], "skeleton_version": 4}).json()
        if all(state.values()):
            break
        time.sleep(0.2)
    assert state == {str(r): True for r in roots[2:6]}
    assert http("GET", f"{S1}/precomputed/skeleton/exists/4/{roots[0]},{unknown}").json() == {str(roots[0]): True, str(unknown): False}
    assert http("GET", f"{S1}/precomputed/skeleton/exists/4/{roots[0]}").json() is True
    assert http("POST", f"{S1}/precomputed/skeleton/exists", json={"root_ids": str(roots[0]), "skeleton_version": 4}).json() is True
    # query_cache lists stored skeletons by root id prefix
    prefix = str(roots[0])[:-1]
    listing = http("GET", f"{S1}/precomputed/skeleton/query_cache/4/{prefix}/0").json()
    assert listing["num_found"] == len(listing["files"]) >= 1
    assert any(f"rid-{roots[0]}__" in f for f in listing["files"])
    assert http("GET", f"{S1}/precomputed/skeleton/query_cache/4/{prefix}/1").json()["files"] == listing["files"][:1]
    assert http("GET", f"{S1}/precomputed/skeleton/query_cache/4/0/0").json() == {"num_found": 0, "files": []}


def test_refusal_list(http, server, world):
    root = _fresh_roots(http, world, 1, skip=3)[0]
    assert "now" in server.cli("skeleton", "refuse", DS, str(root)).stdout
    assert "already" in server.cli("skeleton", "refuse", DS, str(root)).stdout
    assert str(root) in server.cli("skeleton", "refusals", DS).stdout
    listing = wire.decode_refusal_list(http("GET", f"{S1}/precomputed/skeleton/get_refusal_list").content)
    assert (DS, root) in set(zip(listing["DATASTACK_NAME"], listing["ROOT_ID"]))
    _error(http("GET", f"{S1}/async/get_skeleton/4/{root}/flatdict"), 403, "refusal list")
    assert http("GET", f"{S1}/bulk/get_skeletons/4/flatdict/True/{root}").json() == {}
    assert http("POST", f"{S1}/bulk/get_cached_skeletons/4/flatdict", json={"root_ids": [root], "generate_missing": True}).json() == {}
    bad = server.cli("skeleton", "refuse", DS, "12", check=False)
    assert bad.returncode != 0 and "does not exist" in bad.stderr
    assert "removed" in server.cli("skeleton", "unrefuse", DS, str(root)).stdout
    assert http("GET", f"{S1}/async/get_skeleton/4/{root}/flatdict").status_code == 200


# -- bad input ------------------------------------------------------------------------------------------------
def test_bad_input_gets_4xx_json(http, server, world):
    sv = int(world.soma_supervoxels[0])
    root = _roots(http, [sv])[0]
    unknown = (root >> 56 << 56) | ((1 << 40) - 3)
    _error(http("GET", f"{S1}/precomputed/skeleton/4/abc/flatdict"), 400, "decimal")
    _error(http("GET", f"{S1}/precomputed/skeleton/4/{sv}/flatdict"), 400, "not a root id")
    _error(http("GET", f"{S1}/precomputed/skeleton/4/{unknown}/none"), 400, "does not exist")
    _error(http("GET", f"{S1}/async/get_skeleton/4/{unknown}/flatdict"), 400, "does not exist")
    _error(http("GET", f"{S1}/precomputed/skeleton/7/{root}/flatdict"), 400, "Unknown skeleton version")
    _error(http("GET", f"{S1}/precomputed/skeleton/x/info"), 400, "skeleton version")
    _error(http("GET", f"{S1}/precomputed/skeleton/4/{root}/obj"), 400, "output format")
    _error(http("GET", f"{S1}/bulk/get_skeletons/4/precomputed/True/{root}"), 400, "flatdict")
    _error(http("GET", f"{S1}/bulk/get_skeletons/4/flatdict/maybe/{root}"), 400, "True or False")
    eleven = ",".join([str(root)] * 11)
    _error(http("GET", f"{S1}/bulk/get_skeletons/4/flatdict/True/{eleven}"), 400, "Too many root IDs", "10")
    _error(http("POST", f"{S1}/bulk/get_cached_skeletons/4/flatdict", json={"root_ids": [root] * 501}), 400, "500")
    _error(http("POST", f"{S1}/bulk/gen_skeletons", json={"root_ids": [root] * 10001, "skeleton_version": 4}), 400, "10000")
    _error(http("POST", f"{S1}/bulk/gen_skeletons", data=b"{not json"), 400, "JSON")
    _error(http("POST", f"{S1}/bulk/gen_skeletons", json={"skeleton_version": 4}), 422, "root_ids", "required")
    _error(http("POST", f"{S1}/precomputed/skeleton/exists", json=[root]), 400, "JSON object")
    _error(http("GET", f"{S1}/precomputed/skeleton/query_cache/4/ab/0"), 400, "prefixes")
    _error(http("GET", f"{S1}/precomputed/skeleton/query_cache/4/1/-1"), 400, "limit")
    _error(http("POST", f"{S1}/bulk/get_skeleton_token/4", json={"verbose_level": 0}), 501, "bucket")
    assert http("GET", f"{S}/v1/no_such_datastack/precomputed/skeleton/4/{root}/flatdict").status_code in (403, 404)
    no_token = requests.get(f"{server.url}{S1}/precomputed/skeleton/4/{root}/flatdict", timeout=30)
    _error(no_token, 401)


def test_codec_roundtrips():
    """The shared codec against caveclient's own helpers."""
    from caveclient.skeletonservice import SkeletonClient

    d = {"a": [1, 2], "b": {"c": "x"}}
    assert SkeletonClient.decompressBytesToDict(wire.compress_dict(d)) == d
    assert wire.decompress_dict(SkeletonClient.compressDictToBytes(d)) == d
    assert SkeletonClient.decompressBytesToString(wire.compress_text("a b\n")) == "a b\n"
    vertices = np.array([[0, 0, 0], [1000, 0, 0], [1000, 1000, 0], [0, 0, 5000.0]])
    edges = np.array([[1, 0], [2, 1], [3, 0]])
    text = wire.swc_text(wire.swc_rows(vertices, edges, 0, np.full(4, 500.0), np.array([1, 3, 3, 2])))
    frame = wire.swc_frame(text)
    assert frame["parent"].tolist()[0] == -1 and (frame["parent"] < frame["id"]).all()
    assert gzip.decompress(wire.compress_text(text)).decode() == text
    binary = wire.encode_precomputed(vertices, edges, [(np.full(4, 2.0), "float32"), (np.array([1, 3, 3, 2]), "uint8")])
    back = wire.decode_precomputed(binary, wire.vertex_attribute_info(3))
    assert np.array_equal(back["edges"], edges) and back["compartment"].tolist() == [1, 3, 3, 2]
    with pytest.raises(ValueError):
        wire.decode_precomputed(binary + b"x", wire.vertex_attribute_info(3))
    assert gzip.decompress(wire.encode_refusal_list([("ds", 5)])) == b"ds,5\n"
    flat = {"meta": {"skeleton_version": 4}, "vertices": vertices, "edges": edges, "root": 0, "mesh_to_skel_map": np.arange(4),
            "radius": np.full(4, 2.0, dtype=np.float32), "compartment": np.array([1, 3, 3, 2], dtype=np.uint8), "lvl2_ids": np.arange(4) + 2**62}
    h5 = wire.encode_h5(flat)
    for data in (h5, gzip.compress(h5)):  # the service's answer; CAVE's bucket file
        ours, theirs = wire.decode_h5(data), SkeletonClient._parse_h5gz_to_dict(data)
        assert set(ours) == set(theirs) == set(flat) - {"root"}
        for key, value in flat.items():
            if key != "root":
                assert np.array_equal(ours[key], value) and np.array_equal(theirs[key], value), key
    with pytest.raises(ValueError, match="HDF5"):
        wire.decode_h5(b"not an hdf5 file")


# -- the algorithm, in-process (no storage) --------------------------------------------------------------
def _random_neuron(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    points, directions, tips = [np.zeros(3)], [rng.normal(size=3)], [0]
    while len(points) < n:
        i = tips[rng.integers(len(tips))]
        d = directions[i] + rng.normal(size=3) * 0.3
        d /= np.linalg.norm(d)
        points.append(points[i] + d * 500)
        directions.append(d)
        if rng.random() < 0.95:
            tips.remove(i)
        tips.append(len(points) - 1)
    vertices = np.array(points)
    return vertices, np.array(sorted(cKDTree(vertices).query_pairs(700)))


@pytest.mark.parametrize("soma", [False, True])
def test_teasar_matches_meshparty(soma):
    """Same skeleton as meshparty's skeletonize_mesh with pcg_skel's parameters."""
    from meshparty import skeletonize, trimesh_io

    from opencave.services.skeleton.teasar import skeletonize_graph

    vertices, edges = _random_neuron(3, 1500)
    soma_pt = vertices[700] + 50 if soma else None
    ours = skeletonize_graph(vertices, edges, 3000, soma_pt=soma_pt, collapse_radius=3000 if soma else None)
    mesh = trimesh_io.Mesh(vertices=vertices, faces=[[0, 0, 0]], link_edges=edges)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = skeletonize.skeletonize_mesh(
            mesh, invalidation_d=3000, soma_pt=soma_pt, collapse_soma=soma, soma_radius=3000,
            compute_radius=False, cc_vertex_thresh=0, remove_zero_length_edges=True, verbose=False,
        )
    assert len(ours.vertices) == ref.n_vertices
    assert abs(ours.path_length() - ref.path_length()) < 1e-6 * ref.path_length()
    assert np.allclose(np.sort(ours.vertices, axis=0), np.sort(ref.vertices, axis=0))
    _assert_forest(len(ours.vertices), ours.edges, ours.root)
    assert np.array_equal(ours.vertices[ours.mesh_to_skel_map], ref.vertices[ref.mesh_to_skel_map])
    if soma:
        assert np.allclose(ours.vertices[ours.root], soma_pt) and ours.mesh_index[ours.root] == -1


def test_teasar_components_lone_vertices_and_missing_positions():
    from opencave.services.skeleton.inputs import fill_missing_positions
    from opencave.services.skeleton.properties import effective_radius
    from opencave.services.skeleton.teasar import skeletonize_graph

    a, ea = _random_neuron(1, 300)
    b, eb = _random_neuron(2, 200)
    vertices = np.vstack((a, b + 1e5, [[5e5, 0, 0]]))  # two neurons and a lone L2 node
    edges = np.vstack((ea, eb + len(a)))
    sk = skeletonize_graph(vertices, edges, 2000)
    _assert_forest(len(sk.vertices), sk.edges, sk.root)
    n_comp, _ = connected_components(coo_matrix((np.ones(len(sk.edges)), tuple(sk.edges.T)), shape=(len(sk.vertices),) * 2), directed=False)
    assert n_comp == 3 and (sk.mesh_to_skel_map >= 0).all()
    assert np.allclose(sk.vertices[sk.mesh_to_skel_map[-1]], [5e5, 0, 0])
    radius = effective_radius(sk.vertices, sk.edges, sk.root, sk.mesh_to_skel_map, np.full(len(vertices), 1e6))
    assert (radius > 0).all() and np.isfinite(radius).all()
    single = skeletonize_graph(np.array([[1.0, 2, 3]]), np.zeros((0, 2), int), 2000, soma_pt=np.array([1.0, 2, 4]), collapse_radius=2000)
    assert len(single.vertices) == 1 and single.mesh_to_skel_map.tolist() == [0] and len(single.edges) == 0
    # positions missing from the L2 cache: neighbour means, then the chunk centre
    holes = vertices[:5].copy()
    holes[[1, 4]] = np.nan
    filled = fill_missing_positions(holes, np.array([[0, 1], [1, 2], [2, 3]]), np.full((5, 3), 7.0))
    assert filled == 2 and np.allclose(holes[1], (vertices[0] + vertices[2]) / 2) and np.allclose(holes[4], 7.0)
