"""Every skeleton method: the genuine caveclient 8.2.1 and opencave's client, against the same
``opencave serve`` on the demo datastack, return equal results (numpy arrays with equal dtypes,
equal DataFrames) or raise the same exceptions with the same messages.

Calls that change the service's cache (generation) are compared on a settled state: the first
client's call may start generation, so each such comparison waits until the skeletons exist and
then calls both clients again; the first answer must agree with the settled one.
"""

from __future__ import annotations

import datetime as dt
import gzip
import inspect
import time

import caveclient
import caveclient.skeletonservice as genuine_module
import numpy as np
import pytest
import requests

import opencave
import opencave.client.skeleton as our_module
from opencave.wire import skeletons as wire
from tests.support.compare import both, outcome, same
from tests.support.demo import demo_world

DS = "opencave_demo"
SETTLE_SECONDS = 120


@pytest.fixture(scope="module")
def pair(server, admin_token):
    return (
        caveclient.CAVEclient(DS, server_address=server.url, auth_token=admin_token),
        opencave.CAVEclient(DS, server_address=server.url, auth_token=admin_token),
    )


def test_genuine_segmentation_cloudvolume_opens_unchanged(server, admin_token):
    """caveclient's get_skeleton, get_bulk_skeletons and generate_bulk_skeletons_async open the
    segmentation with ``info.segmentation_cloudvolume()`` on every call. That CloudVolume
    sends the CAVE token to the graphene API only; CloudFiles reads the files it needs under
    the watershed path (``provenance``, the mesh ``info``) without credentials, treats 404/403
    as "no file" and raises on 401."""
    genuine = caveclient.CAVEclient(DS, server_address=server.url, auth_token=admin_token)
    volume = genuine.info.segmentation_cloudvolume()
    assert volume.meta.n_layers == genuine.chunkedgraph.segmentation_info["graph"]["n_layers"]


def exists_map(client, roots: list[int]) -> dict[int, bool]:
    """``skeletons_exist`` as a dict even for one id (it answers a bare bool then)."""
    answer = client.skeleton.skeletons_exist(root_ids=list(roots))
    return {roots[0]: answer} if isinstance(answer, bool) else answer


class RootPool:
    """Root ids (current and expired) whose skeletons are not cached yet, handed out once each,
    so a test that needs "not generated yet" gets an id no earlier test has touched."""

    def __init__(self, client, roots: list[int]):
        exists = exists_map(client, roots)
        self.fresh = [r for r in roots if not exists[r]]

    def take(self, n: int = 1) -> list[int]:
        if len(self.fresh) < n:
            pytest.fail(f"the demo datastack has no {n} more roots without a cached skeleton")
        taken, self.fresh = self.fresh[:n], self.fresh[n:]
        return taken


@pytest.fixture(scope="module")
def world(server):
    return demo_world(server)


@pytest.fixture(scope="module")
def pool(pair, world) -> RootPool:
    genuine = pair[0]
    current = np.unique(genuine.chunkedgraph.get_roots(world.soma_supervoxels)).tolist()
    expired = genuine.chunkedgraph.get_delta_roots(world.epoch + dt.timedelta(minutes=1))[0].tolist()
    return RootPool(genuine, [int(r) for r in current + sorted(set(expired) - set(current))])


@pytest.fixture(scope="module")
def bad_ids(pair, world) -> dict[str, int]:
    """A supervoxel id and a root-layer id that was never a node of the graph."""
    genuine = pair[0]
    n_layers = genuine.chunkedgraph.segmentation_info["graph"]["n_layers"]
    return {"supervoxel": int(world.soma_supervoxels[0]), "missing_root": (n_layers << 56) | 0xFFFFFFFF}


def wait_until_cached(client, roots: list[int]) -> None:
    deadline = time.time() + SETTLE_SECONDS
    while time.time() < deadline:
        exists = exists_map(client, roots)
        if all(exists[r] for r in roots):
            return
        time.sleep(0.2)
    pytest.fail(f"skeletons of {roots} were not generated within {SETTLE_SECONDS} s")


def sk(call):
    """``call(skeleton_client)`` as a call on a CAVEclient."""
    return lambda client: call(client.skeleton)


# -- service, constants, signatures, static helpers --------------------------------------------


def test_versions_constants_and_signatures(pair):
    genuine, ours = pair
    both(pair, sk(lambda s: s.get_version()))
    versions = both(pair, sk(lambda s: s.get_versions()))
    assert versions == [-1, 0, 1, 2, 3, 4]
    same(genuine.skeleton.server_version, ours.skeleton.server_version)
    assert ours.skeleton.server_version >= our_module.Version("0.23.9")
    for name in (
        "MAX_SKELETONS_EXISTS_QUERY_SIZE",
        "MAX_BULK_SYNCHRONOUS_SKELETONS",
        "MAX_BULK_CACHED_SKELETONS",
        "MAX_BULK_ASYNCHRONOUS_SKELETONS",
        "BULK_SKELETONS_BATCH_SIZE",
    ):
        assert getattr(genuine_module, name) == getattr(our_module, name), name
    public = [n for n in dir(genuine_module.SkeletonClient) if not n.startswith("_") and n in vars(genuine_module.SkeletonClient)]
    for name in public:
        theirs = inspect.signature(getattr(genuine_module.SkeletonClient, name))
        mine = inspect.signature(getattr(our_module.SkeletonClient, name))
        assert [(p.name, p.default) for p in theirs.parameters.values()] == [
            (p.name, p.default) for p in mine.parameters.values()
        ], name
    theirs = inspect.signature(genuine_module.SkeletonClient.__init__).parameters
    mine = inspect.signature(our_module.SkeletonClient.__init__).parameters
    assert [(n, p.default) for n, p in theirs.items()] == [(n, p.default) for n, p in mine.items() if n != "timeout"]


@pytest.mark.parametrize(
    "text", ["", "plain", "with  spaces and ünïcödé ✓", "1 0 1.000 2.000 3.000 0.500 -1\n" * 50]
)
def test_static_string_helpers(text):
    G, O = genuine_module.SkeletonClient, our_module.SkeletonClient
    assert O.decompressBytesToString(G.compressStringToBytes(text)) == text
    assert G.decompressBytesToString(O.compressStringToBytes(text)) == text
    assert isinstance(O.compressStringToBytes(text), bytes)


@pytest.mark.parametrize("remove_spaces", [True, False])
def test_static_dict_helpers(remove_spaces):
    G, O = genuine_module.SkeletonClient, our_module.SkeletonClient
    doc = {"meta": {"skeleton type": "pcg skel", "root_id": 123}, "vertices": [[1.5, 2, 3]], "edges": [[0, 0]], "n": None}
    theirs, mine = G.compressDictToBytes(doc, remove_spaces=remove_spaces), O.compressDictToBytes(doc, remove_spaces=remove_spaces)
    # The JSON text (spaces inside strings removed too when asked) is the same; gzip headers
    # differ only by their timestamp.
    assert O.decompressBytesToString(mine) == G.decompressBytesToString(theirs)
    same(G.decompressBytesToDict(mine), O.decompressBytesToDict(theirs))
    same(G.decompressBytesToDict(theirs), O.decompressBytesToDict(mine))


# -- info and single skeletons ---------------------------------------------------------------------


def test_precomputed_skeleton_info(pair):
    genuine, _ = pair
    for version in genuine.skeleton.get_versions():
        info = both(pair, sk(lambda s: s.get_precomputed_skeleton_info(version)))
        assert info["@type"] == "neuroglancer_skeletons"
        both(pair, sk(lambda s: s.get_precomputed_skeleton_info(version, datastack_name=DS)))
    both(pair, sk(lambda s: s.get_precomputed_skeleton_info(7)), error=requests.HTTPError, status=400)
    both(pair, sk(lambda s: s.get_precomputed_skeleton_info(2, datastack_name="no_such_datastack")), error=requests.HTTPError, status=404)


def test_get_skeleton_every_version_and_format(pair, pool):
    genuine, _ = pair
    root = pool.take()[0]
    for version in genuine.skeleton.get_versions():
        for output_format in ("dict", "swc"):
            result = both(
                pair, sk(lambda s: s.get_skeleton(root, skeleton_version=version, output_format=output_format))
            )
            if output_format == "dict":
                assert isinstance(result["vertices"], np.ndarray) and len(result["vertices"]) > 0
            else:
                assert list(result.columns) == ["id", "type", "x", "y", "z", "radius", "parent"]
    # Defaults, an explicit datastack, a numpy id.
    both(pair, sk(lambda s: s.get_skeleton(root)))
    both(pair, sk(lambda s: s.get_skeleton(np.int64(root), datastack_name=DS, output_format="swc")))


def test_get_skeleton_of_an_expired_root(pair, pool, world):
    genuine, _ = pair
    current = set(np.unique(genuine.chunkedgraph.get_roots(world.soma_supervoxels)).tolist())
    expired = [r for r in pool.fresh if r not in current]
    if not expired:
        pytest.skip("the demo history left no uncached expired root")
    root = expired[0]
    pool.fresh.remove(root)
    both(pair, sk(lambda s: s.get_skeleton(root, skeleton_version=4)))
    both(pair, sk(lambda s: s.get_skeleton(root, output_format="swc")))


def test_get_skeleton_bad_input(pair, pool, bad_ids):
    genuine, _ = pair
    root = int(genuine.chunkedgraph.get_roots(bad_ids["supervoxel"])[0])
    cases = [
        lambda s: s.get_skeleton(root, skeleton_version=7),
        lambda s: s.get_skeleton(root, skeleton_version="4"),
        lambda s: s.get_skeleton(root, output_format="json"),
        lambda s: s.get_skeleton(bad_ids["supervoxel"]),
        lambda s: s.get_skeleton(bad_ids["missing_root"]),
        lambda s: s.get_skeleton(0),
    ]
    for call in cases:
        both(pair, sk(call), error=ValueError)
    # A negative id cannot be decoded (numpy's OverflowError in both).
    both(pair, sk(lambda s: s.get_skeleton(-5)), error=OverflowError)


# -- synchronous bulk ---------------------------------------------------------------------------------


def test_get_bulk_skeletons(pair, pool, bad_ids):
    genuine, _ = pair
    roots = pool.take(2)
    ids = roots + [bad_ids["supervoxel"], bad_ids["missing_root"]]
    first = outcome(sk(lambda s: s.get_bulk_skeletons(ids, generate_missing_skeletons=True)), genuine)
    assert set(first) == {str(r) for r in roots}, first
    for output_format in ("dict", "swc"):
        for generate in (False, True):
            result = both(
                pair,
                sk(
                    lambda s: s.get_bulk_skeletons(
                        ids, output_format=output_format, generate_missing_skeletons=generate
                    )
                ),
            )
            assert set(result) == {str(r) for r in roots}
    same(first, both(pair, sk(lambda s: s.get_bulk_skeletons(ids))))
    for version in genuine.skeleton.get_versions():
        both(pair, sk(lambda s: s.get_bulk_skeletons(roots, skeleton_version=version)))
    # More than 10 ids: the first 10 are asked for.
    both(pair, sk(lambda s: s.get_bulk_skeletons(np.array(roots * 6, dtype=np.int64))))
    # Nothing valid: an empty answer without a request; bad version and format raise.
    assert both(pair, sk(lambda s: s.get_bulk_skeletons([bad_ids["supervoxel"], bad_ids["missing_root"]]))) == {}
    for call in (
        lambda s: s.get_bulk_skeletons(roots, skeleton_version=5),
        lambda s: s.get_bulk_skeletons(roots, output_format="h5"),
    ):
        both(pair, sk(call), error=ValueError)


# -- asynchronous generation, existence, cache contents -------------------------------------------------


def test_generation_exists_and_cache_contents(pair, pool, bad_ids):
    genuine, ours = pair
    roots = pool.take(3)
    # Before generation: a single id gives a bool, a list a dict with int keys.
    assert both(pair, sk(lambda s: s.skeletons_exist(root_ids=roots[0]))) is False
    assert both(pair, sk(lambda s: s.skeletons_exist(root_ids=str(roots[0])))) is False
    assert both(pair, sk(lambda s: s.skeletons_exist(root_ids=roots))) == {r: False for r in roots}
    both(pair, sk(lambda s: s.skeletons_exist(root_ids=np.array(roots, dtype=np.int64), skeleton_version=2)))
    both(pair, sk(lambda s: s.get_cache_contents(root_id_prefixes=str(roots[0]))))

    # The estimate depends on the service's queue, so each client queues its own roots; once
    # everything is generated (nothing queued) both get the same answer.
    for client, queued in ((genuine, roots[:2]), (ours, roots[2:])):
        estimate = client.skeleton.generate_bulk_skeletons_async(queued, skeleton_version=4)
        assert isinstance(estimate, float) and estimate > 0, estimate
    wait_until_cached(genuine, roots)
    assert both(pair, sk(lambda s: s.generate_bulk_skeletons_async(roots, skeleton_version=4))) == 0.0

    assert both(pair, sk(lambda s: s.skeletons_exist(root_ids=roots[0]))) is True
    assert both(pair, sk(lambda s: s.skeletons_exist(root_ids=roots + [bad_ids["missing_root"]]))) == {
        **{r: True for r in roots},
        bad_ids["missing_root"]: False,
    }
    both(pair, sk(lambda s: s.generate_bulk_skeletons_async(np.array(roots), skeleton_version=-1)))
    both(pair, sk(lambda s: s.generate_bulk_skeletons_async(roots)))  # version None → 4, with a warning
    assert both(pair, sk(lambda s: s.generate_bulk_skeletons_async([bad_ids["supervoxel"]], skeleton_version=4))) == {}
    for call in (
        lambda s: s.generate_bulk_skeletons_async(roots[0], skeleton_version=4),
        lambda s: s.generate_bulk_skeletons_async(roots, skeleton_version=9),
        lambda s: s.skeletons_exist(root_ids=roots, skeleton_version=9),
        lambda s: s.get_cache_contents(skeleton_version=9),
    ):
        both(pair, sk(call), error=ValueError)

    contents = both(pair, sk(lambda s: s.get_cache_contents(root_id_prefixes=str(roots[0]))))
    assert contents["num_found"] >= 1
    for kwargs in (
        {},
        {"root_id_prefixes": roots[0]},
        {"root_id_prefixes": [str(roots[0])[:4], roots[1]]},
        {"root_id_prefixes": str(roots[0])[:3], "limit": 1},
        {"skeleton_version": 2, "root_id_prefixes": roots[1]},
    ):
        both(pair, sk(lambda s: s.get_cache_contents(**kwargs)))
    # More than 1000 ids: the first 1000 are checked.
    many = roots + [bad_ids["missing_root"] + i for i in range(1, 1001)]
    result = both(pair, sk(lambda s: s.skeletons_exist(root_ids=many)))
    assert len(result) == 1000 and result[roots[0]] is True


# -- cached bulk (fetch_skeletons) --------------------------------------------------------------------


def test_fetch_skeletons_from_the_server(pair, pool, bad_ids):
    genuine, ours = pair
    cached, uncached = pool.take(1), pool.take(1)
    genuine.skeleton.get_skeleton(cached[0])
    for output_format in ("dict", "swc"):
        result = both(pair, sk(lambda s: s.fetch_skeletons(cached + uncached, output_format=output_format)))
        assert set(result) == {str(cached[0])}, result
    for version in genuine.skeleton.get_versions():
        both(pair, sk(lambda s: s.fetch_skeletons(cached, skeleton_version=version)))
    # caveclient cannot send a numpy array (TypeError from the JSON encoder); opencave sends it.
    assert isinstance(outcome(sk(lambda s: s.fetch_skeletons(np.array(cached))), genuine), TypeError)
    same(genuine.skeleton.fetch_skeletons(cached), ours.skeleton.fetch_skeletons(np.array(cached, dtype=np.uint64)))
    assert both(pair, sk(lambda s: s.skeletons_exist(root_ids=uncached[0]))) is False

    # generate_missing: whichever client asks first, the settled answers agree.
    for first_client in (genuine, ours):
        fresh = pool.take(1)
        first = sk(lambda s: s.fetch_skeletons(cached + fresh, generate_missing_skeletons=True))(first_client)
        wait_until_cached(genuine, fresh)
        settled = both(pair, sk(lambda s: s.fetch_skeletons(cached + fresh, generate_missing_skeletons=True)))
        assert set(settled) == {str(cached[0]), str(fresh[0])}
        for key in first:
            same(settled[key], first[key], key)
        both(pair, sk(lambda s: s.fetch_skeletons(cached + fresh, output_format="swc", generate_missing_skeletons=True)))

    # More than 500 ids: the first 500 are asked for; ids are not validated.
    many = cached + [bad_ids["supervoxel"]] + [bad_ids["missing_root"] + i for i in range(600)]
    assert set(both(pair, sk(lambda s: s.fetch_skeletons(many)))) == {str(cached[0])}
    for call in (
        lambda s: s.fetch_skeletons(cached, method="ftp"),
        lambda s: s.fetch_skeletons(cached, output_format="h5"),
        lambda s: s.fetch_skeletons(cached, skeleton_version=8),
        lambda s: s.fetch_skeletons(cached, method="gcs", output_format="swc"),
    ):
        both(pair, sk(call), error=ValueError)


def test_fetch_skeletons_gcs_needs_a_bucket(pair):
    genuine, ours = pair
    with pytest.raises(requests.HTTPError) as theirs:
        genuine.skeleton.fetch_skeletons([1], method="gcs")
    assert theirs.value.response.status_code == 501
    with pytest.raises(our_module.SkeletonBucketUnavailable) as mine:
        ours.skeleton.fetch_skeletons([1], method="gcs")
    assert isinstance(mine.value, requests.HTTPError) and mine.value.response.status_code == 501
    assert "method='server'" in str(mine.value)


def test_bucket_h5_files_parse_alike(pair, server, admin_token, pool):
    """``fetch_skeletons(method="gcs")`` parses CAVE's cached H5 files (gzipped in the bucket).
    The service's ``h5`` format has that layout, so both clients' parsers are compared on it."""
    genuine, _ = pair
    root = pool.take(1)[0]
    genuine.skeleton.get_skeleton(root)
    url = f"{server.url}/skeletoncache/api/v1/{DS}/precomputed/skeleton/4/{root}/h5"
    response = requests.get(url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=60)
    assert response.status_code == 200, response.text
    parsed = []
    for data in (response.content, gzip.compress(response.content), b"not an hdf5 file"):
        theirs = outcome(genuine_module.SkeletonClient._parse_h5gz_to_dict, data)
        same(theirs, outcome(wire.decode_h5, data))
        parsed.append(theirs)
    assert set(parsed[0]) == {"vertices", "edges", "mesh_to_skel_map", "lvl2_ids", "radius", "compartment", "meta"}
    assert isinstance(parsed[2], ValueError)


# -- refusal list -----------------------------------------------------------------------------------


def test_refusal_list(pair, pool, server):
    refused = pool.take(1)[0]
    server.cli("skeleton", "refuse", DS, str(refused))
    try:
        after = both(pair, sk(lambda s: s.get_refusal_list(datastack_name=DS)))
        assert list(after.columns) == ["DATASTACK_NAME", "ROOT_ID"]
        assert refused in after["ROOT_ID"].tolist() and set(after["DATASTACK_NAME"]) == {DS}
        both(pair, sk(lambda s: s.get_skeleton(refused)), error=requests.HTTPError, status=403)
    finally:
        server.cli("skeleton", "unrefuse", DS, str(refused))
    assert refused not in pair[1].skeleton.get_refusal_list()["ROOT_ID"].tolist()


def test_empty_refusal_list(pair):
    """Without refusals (the usual state) both give the same empty frame (columns and dtypes)."""
    if len(pair[0].skeleton.get_refusal_list()):
        pytest.skip("another test left a refusal")
    empty = both(pair, sk(lambda s: s.get_refusal_list()))
    assert list(empty.columns) == ["DATASTACK_NAME", "ROOT_ID"] and empty.empty


# -- without an L2 cache, without a parent client, without a server version ----------------------


def test_no_l2cache(server, admin_token, pool):
    """Skeletons need the L2 cache: both clients raise their NoL2CacheException, same message."""
    root = pool.fresh[0]
    clients = [
        caveclient.CAVEclient(DS, server_address=server.url, auth_token=admin_token),
        opencave.CAVEclient(DS, server_address=server.url, auth_token=admin_token),
    ]
    for client in clients:
        client.l2cache.has_cache = lambda *args, **kwargs: False
    for call in (
        lambda s: s.get_skeleton(root),
        lambda s: s.get_bulk_skeletons([root]),
        lambda s: s.generate_bulk_skeletons_async([root], skeleton_version=4),
        lambda s: s.get_precomputed_skeleton_info(4),
    ):
        theirs, mine = (outcome(sk(call), client) for client in clients)
        assert isinstance(theirs, genuine_module.NoL2CacheException), theirs
        assert isinstance(mine, our_module.NoL2CacheException) and str(mine) == str(theirs)
    assert both(tuple(clients), sk(lambda s: s.skeletons_exist(root_ids=root))) is False


def test_standalone_client(pair, server, admin_token, pool, bad_ids):
    """Built on its own (no CAVEclient), the client skips the id checks the server repeats."""
    genuine, _ = pair
    root = pool.take(1)[0]
    alone = our_module.SkeletonClient(server.url, datastack_name=DS, auth_client=opencave.client.AuthClient(token=admin_token))
    assert alone.api_version == 1
    same(genuine.skeleton.get_skeleton(root, output_format="swc"), alone.get_skeleton(root, output_format="swc"))
    same(genuine.skeleton.get_bulk_skeletons([root]), alone.get_bulk_skeletons([root]))
    for bad in (bad_ids["supervoxel"], bad_ids["missing_root"]):
        error = outcome(lambda s: s.get_skeleton(bad), alone)
        assert isinstance(error, requests.HTTPError) and error.response.status_code == 400, error


def test_missing_server_version_is_explained(pair, pool):
    """caveclient compares a missing server version with ``<`` (TypeError); opencave says why."""
    genuine, ours = pair
    root = pool.fresh[0]
    saved = genuine.skeleton._server_version, ours.skeleton._server_version
    genuine.skeleton._server_version = ours.skeleton._server_version = None
    try:
        assert isinstance(outcome(sk(lambda s: s.get_skeleton(root)), genuine), TypeError)
        error = outcome(sk(lambda s: s.get_skeleton(root)), ours)
        assert isinstance(error, opencave.client.ServerIncompatibilityError) and "version" in str(error)
        assert isinstance(outcome(sk(lambda s: s.fetch_skeletons([root])), ours), opencave.client.ServerIncompatibilityError)
    finally:
        genuine.skeleton._server_version, ours.skeleton._server_version = saved


# -- cost ---------------------------------------------------------------------------------------------


def test_ours_validates_with_one_request(pair, pool):
    """Once warm, opencave's get_skeleton makes two requests (the chunkedgraph validity check and
    the skeleton); bulk calls validate all ids with one request."""
    _, ours = pair
    target = pool.take(1)[0]
    ours.skeleton.get_skeleton(target)  # warm: versions, L2 cache, layer count
    seen: list[str] = []

    def record(response, *args, **kwargs):
        seen.append(response.url)

    sessions = [ours.skeleton.session, ours.chunkedgraph.session, ours.l2cache.session, ours.info.session]
    for session in sessions:
        session.hooks["response"].append(record)
    try:
        ours.skeleton.get_skeleton(target, output_format="swc")
        assert len(seen) == 2, seen
        seen.clear()
        ours.skeleton.get_bulk_skeletons([target] * 5)
        assert len(seen) == 2, seen
    finally:
        for session in sessions:
            session.hooks["response"].remove(record)
