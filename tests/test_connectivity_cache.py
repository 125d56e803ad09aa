"""Connectivity answers in the client's cache and lockfiles, and under a server's row cap.

A notebook-style connectivity analysis (partners, adjacency, a cell-type matrix, paths, a diff
between versions, edges at a past moment, a query_table beside them) runs on a caching client
and is locked; with the server stopped, ``CAVEclient.from_lockfile`` replays it and gives
identical DataFrames without a request, and a cached one-neuron answer needs no server. On a
server started with ``--row-limit``, a cut list says so (attrs and a warning) and is never
cached; a matrix larger than the cap is refused whole. The cache is the client's, so one storage
engine (SQLite) is enough; the servers are this module's own, as they are stopped.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
import requests

import opencave
from opencave.client.cache import CacheStore
from opencave.client.errors import LockfileError
from tests.support.offline import no_requests  # noqa: F401 - a fixture
from tests.support.server import ServerProcess

DS = "opencave_demo"


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b)
    assert a.attrs == b.attrs


def analysis(client, roots: list[int], old_roots: list[int], moment: dt.datetime) -> dict[str, pd.DataFrame]:
    conn = client.connectivity
    return {
        "partners": conn.partners(roots[:2], "output", version=3),
        "adjacency": conn.adjacency(roots, version=3),
        "cell_types": conn.cell_type_matrix("cell_types", version=2),
        "cell_types_long": conn.cell_type_matrix("cell_types", long=True, version=2, min_synapses=2),
        "paths": conn.paths(roots[:2], roots[2:5], max_hops=2, version=3),
        "diff": conn.diff(old_roots, from_version=1, to_version=3),
        "edges_then": conn.edges(roots, timestamp=moment),
        "synapses": client.materialize.query_table("synapses", materialization_version=3, filter_in_dict={"pre_pt_root_id": roots[:2]}),
    }


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp("connectivity-lock")
    server = ServerProcess(root / "data", None).start()
    try:
        token = server.new_token()
        client = opencave.CAVEclient(DS, server_address=server.url, auth_token=token, cache=root / "cache", write_server_cache=False)
        everything = client.connectivity.edges(version=3)
        roots = list(dict.fromkeys(everything["pre_pt_root_id"].tolist()))[:6]
        old_roots = list(dict.fromkeys(client.connectivity.edges(version=1)["pre_pt_root_id"].tolist()))[:3]
        stamps = {m["version"]: m["time_stamp"] for m in client.materialize.get_versions_metadata()}
        frames = analysis(client, roots, old_roots, stamps[3] + dt.timedelta(seconds=1))
        client.lock(root / "analysis.lock.json")
        # another client of the same cache, built (sub-clients included) while the server runs
        other = opencave.CAVEclient(DS, server_address=server.url, auth_token=token, cache=root / "cache", write_server_cache=False)
        other.connectivity
    finally:
        server.stop()
    return {"root": root, "roots": roots, "old_roots": old_roots, "frames": frames, "moment": stamps[3] + dt.timedelta(seconds=1), "url": server.url,
            "other": other}


def test_the_server_is_stopped(recorded):
    with pytest.raises(requests.ConnectionError):
        requests.get(recorded["url"] + "/health", timeout=2)


def test_replay_gives_identical_frames_with_the_server_stopped(recorded, no_requests):
    replay = opencave.CAVEclient.from_lockfile(recorded["root"] / "analysis.lock.json")
    again = analysis(replay, recorded["roots"], recorded["old_roots"], recorded["moment"])
    for name, frame in recorded["frames"].items():
        assert len(frame) > 0, name
        _same(again[name], frame)
    assert no_requests == []
    with pytest.raises(LockfileError):
        replay.connectivity.partners(recorded["roots"][:2], "input", version=3)


def test_a_cached_answer_needs_no_server(recorded, no_requests):
    """Another client with the same cache answers a call it never made (version given) from
    the cache, with the server stopped."""
    _same(recorded["other"].connectivity.partners(recorded["roots"][:2], "output", version=3), recorded["frames"]["partners"])
    assert no_requests == []


def test_cut_answers_say_so_and_are_never_cached(tmp_path_factory):
    root = tmp_path_factory.mktemp("connectivity-capped")
    server = ServerProcess(root / "data", None, extra_args=("--row-limit", "10")).start()
    try:
        client = opencave.CAVEclient(DS, server_address=server.url, auth_token=server.new_token(), cache=root / "cache", write_server_cache=False)
        conn = client.connectivity
        with pytest.warns(UserWarning, match="row limit of 10"):
            cut = conn.edges(version=3)
        assert len(cut) == 10 and cut.attrs["truncated"] is True
        assert CacheStore(root / "cache").entries() == []
        roots = list(dict.fromkeys(cut["pre_pt_root_id"].tolist() + cut["post_pt_root_id"].tolist()))
        whole = conn.partners(roots[0], "output", version=3, min_synapses=100)
        assert whole.attrs["truncated"] is False and len(whole) <= 10
        assert len(CacheStore(root / "cache").entries()) == 1
        with pytest.raises(requests.HTTPError, match="row limit"):
            conn.adjacency(roots, version=3)  # the 10 strongest connections and more among their roots
    finally:
        server.stop()


def test_lockfile_names_the_connectivity_calls(recorded):
    import json

    content = json.loads(Path(recorded["root"] / "analysis.lock.json").read_text())
    methods = sorted(q["call"]["method"] for q in content["queries"] if q["call"]["service"] == "connectivity")
    assert methods == sorted(["edges", "edges", "partners", "adjacency", "cell_type_matrix", "cell_type_matrix", "paths", "diff", "edges"])
