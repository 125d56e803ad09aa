"""The chunkedgraph over HTTP: bad input gets clear 4xx JSON answers, concurrent conflicting
edits resolve cleanly, cloud-volume reads the watershed, and a server killed with SIGKILL
during a stream of edits loses no acknowledged edit and leaves no partial one."""

from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest
import requests
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from opencave.wire.json_chunks import json_chunks
from tests.support.demo import demo_world
from tests.support.server import ServerProcess
from tests.support.volumes import graphene_volume

T = "/segmentation/api/v1/table/opencave_demo"


@pytest.fixture(scope="module")
def world(server):
    return demo_world(server)


@pytest.fixture(scope="module")
def http(server, admin_token):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {admin_token}"
    base = server.url

    def call(method: str, path: str, **kwargs) -> requests.Response:
        return session.request(method, base + path, **kwargs)

    return call


def _error(response: requests.Response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == status and body["message"]
    for word in words:
        assert word.lower() in body["message"].lower(), body["message"]
    return body


def _roots(http, svs, **params) -> np.ndarray:
    r = http("POST", T + "/roots_binary", data=np.asarray(svs, dtype="<u8").tobytes(), params=params)
    assert r.status_code == 200, r.text
    return np.frombuffer(r.content, dtype="<u8")


def test_unknown_and_wrong_layer_ids(http, world):
    sv = int(world.soma_supervoxels[0])
    root = int(_roots(http, [sv])[0])
    unknown_root = (root >> 56 << 56) | ((1 << 40) - 3)
    _error(http("GET", f"{T}/node/{unknown_root}/root"), 404, str(unknown_root), "does not exist")
    _error(http("GET", f"{T}/node/{unknown_root}/leaves"), 404, "does not exist")
    _error(http("GET", f"{T}/node/{unknown_root}/children"), 404)
    _error(http("GET", f"{T}/node/abc/root"), 400, "decimal")
    _error(http("GET", f"{T}/root/{sv}/change_log"), 400, "layer-1", "root ids")
    _error(http("POST", f"{T}/is_latest_roots", json={"node_ids": [sv]}), 400, "root ids")
    _error(http("POST", f"{T}/lineage_graph_multiple", json={"root_ids": [sv]}), 400, "root ids")
    _error(http("GET", f"{T}/node/{sv}/lvl2_graph"), 400, "root ids")
    assert _roots(http, [sv, unknown_root, 12345]).tolist()[1:] == [0, 0]
    _error(http("GET", "/segmentation/api/v1/table/no_such_graph/node/1/root"), 404, "no_such_graph")


def test_timestamps_out_of_range(http, world):
    sv = int(world.soma_supervoxels[0])
    before = world.epoch.timestamp() - 3600
    _error(http("GET", f"{T}/node/{sv}/root", params={"timestamp": before}), 400, "before the oldest")
    _error(http("GET", f"{T}/node/{sv}/root", params={"timestamp": time.time() + 86400}), 400, "future")
    _error(http("POST", f"{T}/roots_binary", data=np.array([sv], "<u8").tobytes(), params={"timestamp": "yesterday"}), 400, "unix time")
    _error(http("GET", f"{T}/delta_roots"), 422, "timestamp_past", "required")


def test_malformed_bodies_and_sizes(http, world):
    _error(http("POST", f"{T}/roots_binary", data=b"12345"), 400, "uint64")
    _error(http("POST", f"{T}/is_latest_roots", data=b"not json"), 400, "json")
    _error(http("POST", f"{T}/is_latest_roots", json={"ids": [1]}), 422, "node_ids", "required")
    _error(http("POST", f"{T}/is_latest_roots", json={"node_ids": ["x"]}), 400)
    _error(http("POST", f"{T}/is_latest_roots", json={"node_ids": list(range(1, 1_000_002))}), 400, "too many")
    huge = http("POST", f"{T}/roots_binary", data=b"\0" * (65 * 1024 * 1024))
    _error(huge, 413)
    _error(http("GET", f"{T}/node/{int(world.soma_supervoxels[0])}/leaves", params={"bounds": "0-10_5-1_0-4"}), 400, "bounds")
    _error(http("POST", f"{T}/merge", json=[[1, 2, 3]]), 400, "[node_id, x, y, z]")
    _error(http("POST", f"{T}/split", json={"sources": []}), 400, "sinks")
    _error(http("GET", f"{T}/operation_details", params={"operation_ids": "[999999]"}), 404, "operation")
    _error(http("POST", f"{T}/undo", json={"operation_id": 999999}), 400, "does not exist")
    _error(http("POST", "/l2cache/api/v1/table/opencave_demo/attributes", json={"l2_ids": [1]}, params={"attribute_names": "volume"}), 400, "unknown")


def test_leaves_answer_raw_ids_when_asked(http, world):
    """``Accept: application/octet-stream`` gets little-endian uint64 ids; otherwise the same
    ids come as JSON, byte for byte the text of the streaming encoder (and as strings)."""
    root = int(_roots(http, world.soma_supervoxels[:1])[0])
    url = f"{T}/node/{root}/leaves"
    answer = http("GET", url)
    assert answer.headers["content-type"].startswith("application/json")
    ids = np.array(answer.json()["leaf_ids"], dtype=np.uint64)
    assert ids.size > 1 and answer.content == b"".join(json_chunks({"leaf_ids": ids}))
    raw = http("GET", url, headers={"Accept": "application/octet-stream, application/json;q=0.9"})
    assert raw.headers["content-type"] == "application/octet-stream"
    assert np.array_equal(np.frombuffer(raw.content, dtype="<u8"), ids)
    as_str = http("GET", url, params={"int64_as_str": True}).json()["leaf_ids"]
    assert as_str == [str(i) for i in ids.tolist()]
    l2 = http("GET", url, params={"stop_layer": 2}, headers={"Accept": "application/octet-stream"})
    assert 0 < len(l2.content) // 8 <= ids.size
    assert http("GET", url, headers={"Accept": "application/json, application/octet-stream"}).content == answer.content


def test_invalid_edits(http, world):
    svs = world.soma_supervoxels
    roots = _roots(http, svs)
    a, b = int(svs[0]), int(svs[1])
    leaves = http("GET", f"{T}/node/{int(roots[0])}/leaves").json()["leaf_ids"]
    same_object = [[a, 0, 0, 0], [int(leaves[-1]), 0, 0, 0]]
    _error(http("POST", f"{T}/merge", json=same_object), 400, "already belong to one object")
    split = {"sources": [[a, 0, 0, 0]], "sinks": [[b, 0, 0, 0]]}
    _error(http("POST", f"{T}/split", json=split), 400, "must lie in one object")
    _error(http("POST", f"{T}/split", json={"sources": [[a, 0, 0, 0]], "sinks": [[a, 0, 0, 0]]}), 400, "both a source and a sink")
    assert (_roots(http, svs) == roots).all(), "a rejected edit must change nothing"


def _separate_pairs(http, world, count: int) -> list[tuple[int, int]]:
    """Touching supervoxels of two neurons whose objects are different now, no object in two
    pairs (other modules' edits on the shared server may have joined some neurons already)."""
    pairs = world.merge_candidates_raw(len(world.graph.edges))
    roots = _roots(http, [sv for pair in pairs for sv in pair]).reshape(-1, 2).tolist()
    used: set[int] = set()
    found = []
    for pair, (ra, rb) in zip(pairs, roots):
        if ra != rb and not {ra, rb} & used:
            used |= {ra, rb}
            found.append(pair)
            if len(found) == count:
                return found
    raise AssertionError("too few touching neuron pairs of different objects left")


def test_concurrent_conflicting_edits(http, world, server, admin_token):
    """Two clients merge the same pair at once: one merge applies, the other is refused."""
    (a, b), (c, d) = _separate_pairs(http, world, 2)
    body = [[a, 0, 0, 0], [b, 0, 0, 0]]
    results: list[requests.Response] = []
    barrier = threading.Barrier(2)

    def merge() -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {admin_token}"
        barrier.wait()
        results.append(session.post(server.url + T + "/merge", json=body))

    threads = [threading.Thread(target=merge) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 400], [r.text for r in results]
    _error(next(r for r in results if r.status_code == 400), 400, "already belong to one object")
    merged = next(r for r in results if r.status_code == 200).json()
    roots = _roots(http, [a, b])
    assert roots.tolist() == merged["new_root_ids"] * 2
    # Edits of different objects both apply.
    other = [[c, 0, 0, 0], [d, 0, 0, 0]]
    undo = http("POST", T + "/undo", json={"operation_id": merged["operation_id"]})
    second = http("POST", T + "/merge", json=other)
    assert second.status_code == 200 and undo.status_code == 200, (second.text, undo.text)
    assert http("POST", T + "/undo", json={"operation_id": second.json()["operation_id"]}).status_code == 200


def test_cloudvolume_reads_the_watershed(server, admin_token, world):
    from cloudvolume import CloudVolume

    path = f"precomputed://{server.url}/volumes/opencave_demo/ws"
    volume = CloudVolume(path, mip=0, progress=False, secrets={"user": "token", "password": admin_token})
    cutout = np.asarray(volume[40:140, 30:130, 10:30])[..., 0]
    assert np.array_equal(cutout, world.volume.cutout((40, 30, 10), (140, 130, 30)))
    assert len(np.unique(cutout)) > 10
    no_token = requests.get(f"{server.url}/volumes/opencave_demo/ws/info")
    assert no_token.status_code == 401


def test_graphene_source_reads_agglomerated_segmentation(server, admin_token, world, isolated_home):
    volume = graphene_volume(server.url, "opencave_demo", admin_token, agglomerate=True)
    cutout = np.asarray(volume[40:140, 30:130, 10:30])[..., 0]
    svs = world.volume.cutout((40, 30, 10), (140, 130, 30))
    present = np.unique(svs[svs > 0])
    r = requests.post(
        f"{server.url}{T}/roots_binary", data=present.astype("<u8").tobytes(), headers={"Authorization": f"Bearer {admin_token}"}
    )
    roots = dict(zip(present.tolist(), np.frombuffer(r.content, "<u8").tolist()))
    expected = np.vectorize(lambda v: roots.get(int(v), 0), otypes=[np.uint64])(svs)
    assert np.array_equal(cutout, expected)


@pytest.mark.parametrize("kill_backend", ["sqlite", "postgresql"])
def test_sigkill_during_edits_loses_nothing(kill_backend, server_factory, tmp_path):
    """Edits stream in; the server is killed with SIGKILL mid-stream and restarted. Every
    acknowledged edit is there, and the graph equals the components of the logged edits."""
    server = server_factory(kill_backend)
    token = server.new_token()
    world = demo_world(server)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    pairs = world.merge_candidates_raw(6)
    acknowledged: list[int] = []
    stop = threading.Event()

    def stream() -> None:
        i = 0
        while not stop.is_set():
            a, b = pairs[i % len(pairs)]
            try:
                r = session.post(server.url + T + "/merge", json=[[a, 0, 0, 0], [b, 0, 0, 0]], timeout=10)
                if r.status_code == 200:
                    acknowledged.append(r.json()["operation_id"])
                    r = session.post(server.url + T + "/undo", json={"operation_id": acknowledged[-1]}, timeout=10)
                    if r.status_code == 200:
                        acknowledged.append(r.json()["operation_id"])
            except requests.RequestException:
                return
            i += 1

    worker = threading.Thread(target=stream)
    worker.start()
    deadline = time.time() + 30
    while len(acknowledged) < 8 and time.time() < deadline:
        time.sleep(0.05)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    stop.set()
    worker.join()
    assert len(acknowledged) >= 8

    restarted = ServerProcess(server.data_dir, server.database, port=server.port).start()
    try:
        base = restarted.url + T
        ops = session.get(base + "/operation_details", params={"operation_ids": str(list(range(1, max(acknowledged) + 1)))})
        assert ops.status_code == 200, ops.text
        details = ops.json()
        assert set(map(str, acknowledged)) <= set(details)
        # The graph must be exactly the components of the initial edges plus every logged edit.
        sv_ids = world.graph.sv_ids
        edges = {tuple(e) for e in world.graph.edges[world.graph.initially_active].tolist()}
        op_id = 1
        while True:
            r = session.get(base + "/operation_details", params={"operation_ids": f"[{op_id}]"})
            if r.status_code != 200:
                break
            entry = r.json()[str(op_id)]
            edges -= {tuple(sorted(e)) for e in entry.get("removed_edges", [])}
            edges |= {tuple(sorted(e)) for e in entry.get("added_edges", [])}
            op_id += 1
        assert op_id - 1 >= max(acknowledged)
        index = {sv: i for i, sv in enumerate(sv_ids.tolist())}
        a = np.array([index[x] for x, _ in edges])
        b = np.array([index[y] for _, y in edges])
        _, labels = connected_components(coo_matrix((np.ones(a.size), (a, b)), shape=(sv_ids.size,) * 2), directed=False)
        roots = np.frombuffer(session.post(base + "/roots_binary", data=sv_ids.astype("<u8").tobytes()).content, "<u8")
        pairs_seen = set(zip(labels.tolist(), roots.tolist()))
        assert len(pairs_seen) == len(set(labels.tolist())) == len(set(roots.tolist()))
    finally:
        restarted.stop()
