"""Reproducible analyses against a real ``opencave serve``: a notebook-style analysis run with
a cache is locked, the server is stopped, and the analysis re-run through
``CAVEclient.from_lockfile`` gives identical DataFrames without a single request; anything not
recorded is refused; a cached answer needs no server; an answer truncated by a server's
``--row-limit`` is never cached and is recorded as not replayable.

The cache is the client's, so one storage engine (SQLite) is enough; each server here is the
module's own, as one of them is stopped.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
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
SYN_NUC = [["synapses", "post_pt_root_id"], ["nucleus_detection", "pt_root_id"]]


def assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b)
    assert a.attrs == b.attrs


def analysis(client, moment: dt.datetime, roots: list[int]) -> dict[str, pd.DataFrame]:
    """A notebook's queries: a version, a view, live queries at a past moment, filters, a join."""
    m = client.materialize
    return {
        "synapses_v2": m.query_table("synapses", materialization_version=2),
        "view_v1": m.query_view("single_neurons", materialization_version=1),
        "live": m.live_query("synapses", moment),
        "live_roots": m.live_query("synapses", moment, filter_in_dict={"post_pt_root_id": roots}),
        "server_live": m.live_live_query("synapses", moment, filter_in_dict={"synapses": {"post_pt_root_id": roots}}),
        "filtered_latest": m.query_table(
            "synapses", filter_in_dict={"pre_pt_root_id": roots}, select_columns=["id", "pre_pt_root_id", "size"]
        ),
        "cell_types_v3": m.query_table("cell_types", materialization_version=3, split_positions=True),
        "join_v2": m.join_query(SYN_NUC, materialization_version=2, suffixes={"synapses": "", "nucleus_detection": "_nuc"}),
        "synapse_query": m.synapse_query(post_ids=roots[0], materialization_version=2),
    }


def start_server(root: Path, *extra: str) -> tuple[ServerProcess, str]:
    server = ServerProcess(root / "data", None, extra_args=extra).start()
    return server, server.new_token()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The analysis run on a caching client and locked; then the server is stopped."""
    root = tmp_path_factory.mktemp("lockfile")
    server, token = start_server(root)
    try:
        client = opencave.CAVEclient(DS, server_address=server.url, auth_token=token, cache=root / "cache")
        stamps = {m["version"]: m["time_stamp"] for m in client.materialize.get_versions_metadata()}
        moment = stamps[1] + (stamps[2] - stamps[1]) / 2
        live = client.materialize.live_query("synapses", moment)
        roots = [int(r) for r in live["post_pt_root_id"].value_counts().index[:3]]
        frames = analysis(client, moment, roots)
        # passed by: JSON answers and random samples are neither cached nor recorded
        client.materialize.query_table("synapses", materialization_version=2, return_df=False, limit=3)
        client.materialize.query_table("synapses", materialization_version=2, random_sample=50)
        content = client.lock(root / "analysis.lock.json")
        # a client pinned to a version: its default-version queries name that version
        pinned = opencave.CAVEclient(DS, server_address=server.url, auth_token=token, cache=root / "cache", version=1)
        pinned_frame = pinned.materialize.query_table("nucleus_detection")
        pinned.lock(root / "pinned.lock.json")
    finally:
        server.stop()
    return {"pinned": pinned, "pinned_frame": pinned_frame,"root": root, "client": client, "moment": moment, "roots": roots, "frames": frames,
            "content": content, "lockfile": root / "analysis.lock.json", "url": server.url}


def test_the_server_is_stopped(recorded):
    with pytest.raises(requests.ConnectionError):
        requests.get(recorded["url"] + "/health", timeout=2)


def test_replay_gives_identical_frames_without_requests(recorded, no_requests):
    replay = opencave.CAVEclient.from_lockfile(recorded["lockfile"])
    assert replay.datastack_name == DS and replay.server_address == recorded["url"]
    again = analysis(replay, recorded["moment"], recorded["roots"])
    assert again.keys() == recorded["frames"].keys()
    for name, frame in recorded["frames"].items():
        assert len(frame) > 0, name
        assert_same(again[name], frame)
    assert no_requests == []
    # the replaying client's own lockfile records the same calls and content
    relocked = replay.lock(recorded["root"] / "again.lock.json")
    key = lambda q: json.dumps([q["call"], q["hash"]], sort_keys=True)
    assert sorted(map(key, relocked["queries"])) == sorted(map(key, recorded["content"]["queries"]))


def test_replay_with_an_explicit_cache_directory(recorded, no_requests, tmp_path):
    copy = tmp_path / "moved"
    shutil.copytree(recorded["root"] / "cache", copy)
    replay = opencave.CAVEclient.from_lockfile(recorded["lockfile"], cache=copy)
    assert_same(replay.materialize.query_table("synapses", materialization_version=2), recorded["frames"]["synapses_v2"])
    assert no_requests == []


def test_replay_refuses_what_is_not_recorded(recorded, no_requests):
    replay = opencave.CAVEclient.from_lockfile(recorded["lockfile"])
    m = replay.materialize
    with pytest.raises(LockfileError, match=r"query_table\('synapses'\).*version 1.*not in the lockfile"):
        m.query_table("synapses", materialization_version=1)
    with pytest.raises(LockfileError, match="limit.*not in the lockfile"):
        m.query_table("synapses", materialization_version=2, limit=5)
    with pytest.raises(LockfileError, match="live_query.*not in the lockfile"):
        m.live_query("synapses", recorded["moment"] + dt.timedelta(seconds=1))
    with pytest.raises(LockfileError, match="makes no requests"):
        m.get_versions()
    with pytest.raises(LockfileError, match="makes no requests"):
        m.query_table("synapses", materialization_version=2, random_sample=50)
    with pytest.raises(LockfileError, match="makes no requests"):
        replay.chunkedgraph.get_roots([1])
    with pytest.raises(LockfileError, match="cannot change version"):
        replay.version = 1
    # the connectivity client is built offline too, and goes through the same cache
    with pytest.raises(LockfileError, match=r"connectivity\..*not in the lockfile"):
        replay.connectivity.partners(recorded["roots"][0], version=2)
    assert no_requests == []


def test_a_pinned_client_replays_and_hits(recorded, no_requests):
    assert_same(recorded["pinned"].materialize.query_table("nucleus_detection"), recorded["pinned_frame"])
    replay = opencave.CAVEclient.from_lockfile(recorded["root"] / "pinned.lock.json")
    assert replay.version == 1
    assert_same(replay.materialize.query_table("nucleus_detection"), recorded["pinned_frame"])
    assert recorded["pinned_frame"].attrs["materialization_version"] == 1
    assert no_requests == []


def test_equal_queries_written_differently_replay(recorded, no_requests):
    replay = opencave.CAVEclient.from_lockfile(recorded["lockfile"])
    roots = recorded["roots"]
    shuffled = [roots[2], roots[0], roots[1], roots[0]]
    frame = replay.materialize.live_query("synapses", recorded["moment"], filter_in_dict={"post_pt_root_id": shuffled})
    assert_same(frame, recorded["frames"]["live_roots"])


def test_a_cached_answer_needs_no_server(recorded, no_requests):
    client = recorded["client"]  # the recording client; its server is gone
    assert_same(client.materialize.query_table("synapses", materialization_version=2), recorded["frames"]["synapses_v2"])
    assert_same(client.materialize.live_query("synapses", recorded["moment"]), recorded["frames"]["live"])
    assert no_requests == []
    with pytest.raises(requests.ConnectionError):  # what is not cached does need it
        client.materialize.query_table("synapses", materialization_version=1)


def test_lockfile_content(recorded):
    content = recorded["content"]
    text = recorded["lockfile"].read_text()
    assert json.loads(text) == content
    assert text == json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert content["server_address"] == recorded["url"] and content["datastack"] == DS
    assert content["opencave_version"] == opencave.__version__
    assert content["info"]["synapse_table"] == "synapses"
    assert content["services"]["MaterializationClient"]["api_version"] == 3
    store = CacheStore(content["cache_dir"])
    queries = content["queries"]
    methods = sorted({q["call"]["method"] for q in queries})
    assert methods == ["join_query", "live_live_query", "live_query", "query_table", "query_view"]
    assert len(queries) == len(recorded["frames"])  # one per query; no JSON answer or sample
    assert len({q["hash"] for q in queries}) == len(queries)
    for query in queries:
        assert query["replayable"] and not query["truncated"] and store.has(query["hash"])
        assert query["rows"] == len(store.read(query["hash"], verify=True))
    latest = next(q for q in queries if q["call"]["params"]["select_columns"] == ["id", "pre_pt_root_id", "size"])
    assert latest["call"]["version"] is None and latest["resolved"]["version"] == 3  # asked: latest
    live = next(q for q in queries if q["call"]["method"] == "live_query")
    assert live["resolved"]["timestamp"] == recorded["moment"].isoformat()


def test_corrupt_content_is_refused(recorded, tmp_path):
    copy = tmp_path / "corrupt"
    shutil.copytree(recorded["root"] / "cache", copy)
    store = CacheStore(copy)
    digest = next(q["hash"] for q in recorded["content"]["queries"] if q["call"]["table"] == "cell_types")
    path = store.path_of(digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    replay = opencave.CAVEclient.from_lockfile(recorded["lockfile"], cache=copy)
    with pytest.raises(LockfileError, match="corrupt"):
        replay.materialize.query_table("cell_types", materialization_version=3, split_positions=True)


def test_truncated_answers_are_not_cached(tmp_path_factory):
    """``opencave serve --row-limit 500``: a capped answer is fetched anew each time, never
    stored, and locked as not replayable; an answer under the cap is cached as usual."""
    root = tmp_path_factory.mktemp("capped")
    server, token = start_server(root, "--row-limit", "500")
    try:
        uncached = opencave.CAVEclient(DS, server_address=server.url, auth_token=token)
        with pytest.raises(LockfileError, match="cache=True"):
            uncached.lock(root / "no.lock.json")
        client = opencave.CAVEclient(DS, server_address=server.url, auth_token=token, cache=root / "cache")
        m = client.materialize
        capped = m.query_table("synapses", materialization_version=2)
        assert capped.attrs["truncated"] is True and len(capped) == 500
        store = CacheStore(root / "cache")
        assert store.entries() == [] and list(store.objects.glob("*/*")) == []
        again = m.query_table("synapses", materialization_version=2)
        assert_same(again, capped)
        small = m.query_table("nucleus_detection", materialization_version=2)
        assert "truncated" not in small.attrs and 0 < len(small) < 500
        assert [e.table for e in store.entries()] == ["nucleus_detection"]
        content = client.lock(root / "capped.lock.json")
    finally:
        server.stop()
    by_table = {q["call"]["table"]: q for q in content["queries"]}
    assert by_table["synapses"]["truncated"] and not by_table["synapses"]["replayable"]
    assert "truncated" in by_table["synapses"]["reason"]
    assert by_table["nucleus_detection"]["replayable"]
    replay = opencave.CAVEclient.from_lockfile(root / "capped.lock.json")
    with pytest.raises(LockfileError, match="cannot be replayed: the server truncated"):
        replay.materialize.query_table("synapses", materialization_version=2)
    assert_same(replay.materialize.query_table("nucleus_detection", materialization_version=2), small)
