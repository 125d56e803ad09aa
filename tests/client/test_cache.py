"""The client's local query cache (``opencave.client.cache``): the content-addressed store,
keys and parameter normalisation, what is stored and what never is, several processes sharing
one directory, and ``opencave cache ls|rm``."""

from __future__ import annotations

import json
import multiprocessing
import pickle
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opencave.cli import main
from opencave.client.cache import (
    CacheStore,
    Fetched,
    NotStorable,
    QueryCache,
    QueryKey,
    default_cache_dir,
    normalise_params,
    resolve_cache_dir,
)

SERVER = "http://cave.example"
PAST = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def sample_frame(n: int = 5) -> pd.DataFrame:
    """A frame with the kinds of columns query answers have, and some they may have."""
    frame = pd.DataFrame(
        {
            "id": np.arange(n, dtype=np.int64),
            "pt_root_id": np.arange(n, dtype=np.uint64) + np.uint64(2**63 + 7),
            "size": np.linspace(0.5, 2.5, n),
            "valid": np.arange(n) % 2 == 0,
            "cell_type": [f"type{i % 3}" for i in range(n)],
            "created": pd.date_range("2025-01-01", periods=n, freq="h", tz="UTC"),
            "kind": pd.Categorical([["a", "b"][i % 2] for i in range(n)]),
            "pt_position": [np.array([i, i + 1, i + 2], dtype=np.int64) for i in range(n)],
            "maybe": [None if i % 2 else 1.5 for i in range(n)],
        },
        index=pd.Index(np.arange(10, 10 + n), name="row"),
    )
    frame.attrs = {"table_name": "t", "materialization_version": 3, "filters": {"inclusive": None}, "dataframe_resolution": [4.0, 4.0, 40.0]}
    return frame


def assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b)
    assert a.attrs == b.attrs


# -- the store ----------------------------------------------------------------------------------


def test_round_trip_is_exact_and_content_addressed(tmp_path):
    store = CacheStore(tmp_path)
    frame = sample_frame()
    digest, size = store.write(frame)
    assert size > 0 and store.path_of(digest).name == f"{digest}.parquet"
    assert_same(store.read(digest, verify=True), frame)
    assert store.write(sample_frame())[0] == digest  # equal content, same name
    assert store.write(store.read(digest))[0] == digest  # the stored copy hashes the same
    changed = sample_frame()
    changed.attrs["materialization_version"] = 4
    assert store.write(changed)[0] != digest  # attrs are content
    empty = sample_frame().iloc[:0].drop(columns="kind")
    assert_same(store.read(store.write(empty)[0]), empty)
    ranged = sample_frame().reset_index(drop=True)  # query answers have a RangeIndex
    back = store.read(store.write(ranged)[0])
    assert_same(back, ranged)
    assert isinstance(back.index, pd.RangeIndex)


def test_frames_parquet_would_change_are_refused(tmp_path):
    store = CacheStore(tmp_path)
    with pytest.raises(NotStorable, match="kind"):
        store.write(sample_frame().iloc[:0])  # an empty categorical loses its categories
    cache = QueryCache(SERVER, tmp_path)
    server = Server(sample_frame().iloc[:0])
    ask(cache, server, version=3)
    ask(cache, server, version=3)
    assert server.calls == 2 and "identical" in cache.records[0].reason
    assert list(store.objects.glob("*/*")) == []


def test_corrupt_content_is_detected(tmp_path):
    store = CacheStore(tmp_path)
    digest, _ = store.write(sample_frame())
    path = store.path_of(digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        store.read(digest, verify=True)
    assert store.read("0" * 64) is None


def test_index_entries_and_removal(tmp_path):
    store = CacheStore(tmp_path)
    key_a = QueryKey(SERVER, "ds", "materialize", "query_table", "syn", 3, None, {"limit": None})
    key_b = QueryKey(SERVER, "ds", "materialize", "query_table", "syn", 4, None, {"limit": None})
    frame = sample_frame()
    assert store.put(key_a, frame) == store.put(key_b, frame)  # one file for both
    (entry_a, entry_b) = sorted(store.entries(), key=lambda e: e.version)
    assert (entry_a.table, entry_a.version, entry_a.rows, entry_a.params) == ("syn", 3, 5, {"limit": None})
    assert store.lookup(key_a)[0] == entry_a.hash
    assert store.remove([key_a.digest]) == 1
    assert store.has(entry_a.hash)  # still named by key_b
    store.remove([key_b.digest])
    assert not store.has(entry_a.hash) and store.entries() == []
    assert store.lookup(key_b) is None


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_missing_or_damaged_file_is_a_miss(tmp_path, damage):
    store = CacheStore(tmp_path)
    key = QueryKey(SERVER, "ds", "materialize", "query_table", "syn", 3, None, {})
    path = store.path_of(store.put(key, sample_frame()))
    if damage == "delete":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:100])
    assert store.lookup(key) is None and store.entries() == []


# -- keys ---------------------------------------------------------------------------------------


def test_equal_queries_share_a_key():
    a = normalise_params(
        {
            "filter_in_dict": {"pt_root_id": [3, 1, 2, 2], "cell_type": ["b", "a"]},
            "filter_equal_dict": {"valid": np.bool_(True)},
            "select_columns": ["id", "pt_root_id"],
            "desired_resolution": np.array([4, 4, 40]),
            "limit": np.int64(10),
            "filter_out_dict": {},
        }
    )
    b = normalise_params(
        {
            "limit": 10,
            "desired_resolution": [4, 4, 40],
            "select_columns": ["id", "pt_root_id"],
            "filter_equal_dict": {"valid": True},
            "filter_in_dict": {"cell_type": ("a", "b"), "pt_root_id": np.array([1, 2, 3], dtype=np.uint64)},
            "filter_out_dict": None,
        }
    )
    assert a == b
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    # nested (join) filters are sorted at every level
    nested = normalise_params({"filter_in_dict": {"syn": {"pre_pt_root_id": [9, 8]}}})
    assert nested == {"filter_in_dict": {"syn": {"pre_pt_root_id": [8, 9]}}}
    mixed = normalise_params({"filter_in_dict": {"c": [2, "a", 1.5, 2, None]}})
    assert mixed == normalise_params({"filter_in_dict": {"c": [None, 1.5, "a", 2]}})


def test_different_queries_get_different_keys():
    base = {"select_columns": ["id", "pt_root_id"], "filter_in_dict": {"pt_root_id": [1, 2]}}
    variants = [
        {**base, "select_columns": ["pt_root_id", "id"]},  # column order is the answer's
        {**base, "filter_out_dict": {"pt_root_id": [1, 2]}},
        {**base, "filter_in_dict": {"pt_root_id": [1, 3]}},
        {**base, "filter_spatial_dict": {"pt_position": [[0, 0, 0], [1, 1, 1]]}},
    ]
    keys = {json.dumps(normalise_params(p), sort_keys=True) for p in [base, *variants]}
    assert len(keys) == 5
    box = normalise_params({"filter_spatial_dict": {"pt_position": [[5, 5, 5], [0, 0, 0]]}})
    assert box["filter_spatial_dict"]["pt_position"] == [[5, 5, 5], [0, 0, 0]]  # not a set: kept
    make = lambda version, ts: QueryKey(SERVER, "ds", "materialize", "query_table", "t", version, ts, {})
    assert len({make(3, None).digest, make(4, None).digest, make(None, PAST.isoformat()).digest}) == 3


def test_default_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENCAVE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "opencave"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "opencave"
    monkeypatch.setenv("OPENCAVE_CACHE_DIR", str(tmp_path / "mine"))
    assert resolve_cache_dir(True) == tmp_path / "mine"
    assert resolve_cache_dir(str(tmp_path / "x")) == tmp_path / "x"
    assert resolve_cache_dir(None) is None and resolve_cache_dir(False) is None


# -- QueryCache.answer --------------------------------------------------------------------------


class Server:
    """A stand-in for the requests ``answer`` makes: counts them, answers ``frame``."""

    def __init__(self, frame: pd.DataFrame, version: int | None = 3, timestamp: datetime | None = None, truncated: bool = False):
        self.frame, self.version, self.timestamp, self.truncated = frame, version, timestamp, truncated
        self.calls = 0

    def __call__(self) -> Fetched:
        self.calls += 1
        return Fetched(self.frame.copy(deep=True), self.version, self.timestamp, self.truncated)


def ask(cache: QueryCache, fetch, version=None, timestamp=None, params=None, table="syn"):
    return cache.answer(
        service="materialize", method="query_table", datastack="ds", table=table, version=version,
        timestamp=timestamp, params=params or {"limit": None}, fetch=fetch,
    )


def test_pinned_answer_is_stored_and_hit_without_fetching(tmp_path):
    cache = QueryCache(SERVER, tmp_path)
    server = Server(sample_frame())
    first = ask(cache, server, version=3)
    second = ask(cache, server, version=3, params={"limit": None})
    assert server.calls == 1
    assert_same(first, second)
    second.loc[10, "size"] = -1.0  # a hit is a copy: changing it changes nothing stored
    assert_same(ask(cache, server, version=3), sample_frame())
    assert [r.stored for r in cache.records] == [True, True, True]
    assert len({r.hash for r in cache.records}) == 1


def test_default_version_is_stored_under_the_resolved_one(tmp_path):
    cache = QueryCache(SERVER, tmp_path)
    server = Server(sample_frame(), version=3)
    ask(cache, server)  # "latest": the server is asked which version that is
    ask(cache, server)
    assert server.calls == 2
    ask(cache, server, version=3)  # ... and the answer is that version's
    assert server.calls == 2
    assert [(e.version, e.timestamp) for e in cache.store.entries()] == [(3, None)]
    assert cache.records[0].call.version is None and cache.records[0].version == 3


def test_truncated_answer_is_never_stored(tmp_path):
    cache = QueryCache(SERVER, tmp_path)
    server = Server(sample_frame(), truncated=True)
    ask(cache, server, version=3)
    ask(cache, server, version=3)
    assert server.calls == 2
    assert cache.store.entries() == [] and list(cache.store.objects.glob("*/*")) == []
    record = cache.records[0]
    assert record.truncated and not record.stored and "truncated" in record.reason


def test_only_settled_moments_are_stored(tmp_path):
    cache = QueryCache(SERVER, tmp_path)
    recent = datetime.now(timezone.utc) - timedelta(seconds=5)
    live_now = Server(sample_frame(), version=None, timestamp=recent)
    ask(cache, live_now, timestamp=recent)
    ask(cache, live_now, timestamp=recent)
    assert live_now.calls == 2 and cache.store.entries() == []
    assert "not pinned" in cache.records[0].reason
    past = Server(sample_frame(), version=None, timestamp=PAST)
    naive = PAST.replace(tzinfo=None)  # naive datetimes are UTC
    ask(cache, past, timestamp=naive)
    ask(cache, past, timestamp=PAST.astimezone(timezone(timedelta(hours=2))))
    assert past.calls == 1
    ask(cache, past, timestamp=PAST.timestamp())  # POSIX seconds
    ask(cache, past, timestamp="2025-01-02T03:04:05Z")
    assert past.calls == 1
    (entry,) = cache.store.entries()
    assert entry.timestamp == PAST.isoformat() and entry.version is None


def test_attrs_that_json_would_change_are_not_stored(tmp_path):
    cache = QueryCache(SERVER, tmp_path)
    frame = sample_frame()
    frame.attrs["when"] = PAST  # a datetime would come back as a string
    server = Server(frame)
    ask(cache, server, version=3)
    ask(cache, server, version=3)
    assert server.calls == 2 and "attrs" in cache.records[0].reason


def test_caching_off_goes_straight_to_the_server(tmp_path):
    cache = QueryCache(SERVER, None)
    server = Server(sample_frame())
    assert_same(ask(cache, server, version=3), sample_frame())
    ask(cache, server, version=3)
    assert server.calls == 2 and not cache.enabled and cache.records == []


def test_a_call_inside_a_call_belongs_to_the_outer_one(tmp_path):
    cache = QueryCache(SERVER, tmp_path)
    inner = Server(sample_frame(), version=2)

    def outer() -> Fetched:
        frame = ask(cache, inner, version=2, table="inner")
        return Fetched(frame, None, PAST)

    ask(cache, outer, timestamp=PAST)
    assert [r.call.table for r in cache.records] == ["syn"]
    assert [e.table for e in cache.store.entries()] == ["syn"]


def test_a_failing_fetch_stores_and_records_nothing(tmp_path):
    cache = QueryCache(SERVER, tmp_path)

    def fail() -> Fetched:
        raise RuntimeError("server down")

    with pytest.raises(RuntimeError):
        ask(cache, fail, version=3)
    assert cache.records == [] and cache.store.entries() == []


def test_query_cache_pickles(tmp_path):
    cache = QueryCache(SERVER, tmp_path)
    ask(cache, Server(sample_frame()), version=3)
    copy = pickle.loads(pickle.dumps(cache))
    server = Server(sample_frame())
    assert_same(ask(copy, server, version=3), sample_frame())
    assert server.calls == 0 and len(copy.records) == 2


# -- several processes --------------------------------------------------------------------------


def _worker(directory: str, worker: int, rounds: int) -> list[str]:
    """Store shared and own answers, read them back; returns the hashes seen."""
    cache = QueryCache(SERVER, directory)
    seen = []
    for i in range(rounds):
        shared = Server(sample_frame(3 + i % 4))
        own = Server(sample_frame(20 + worker))
        seen.append(ask(cache, shared, version=i % 4, params={"limit": i % 4}).shape[0])
        seen.append(ask(cache, own, version=100 + worker, params={"worker": worker}).shape[0])
    return [r.hash for r in cache.records]


def test_several_processes_share_a_directory(tmp_path):
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        results = pool.starmap(_worker, [(str(tmp_path), w, 12) for w in range(4)])
    store = CacheStore(tmp_path)
    entries = store.entries()
    assert len(entries) == 4 + 4  # 4 shared keys, one own key per worker
    for entry in entries:
        assert store.read(entry.hash, verify=True) is not None
    assert {h for hashes in results for h in hashes} == {e.hash for e in entries}
    assert len(list(store.objects.glob("*/*.part"))) == 0
    with sqlite3.connect(tmp_path / "index.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# -- opencave cache ls | rm ---------------------------------------------------------------------


@pytest.fixture
def filled(tmp_path) -> Path:
    """A cache directory with three answers from two servers and two datastacks."""
    for server, datastack, version in ((SERVER, "ds", 1), (SERVER, "other", 2), ("http://elsewhere", "ds", 3)):
        cache = QueryCache(server, tmp_path)
        cache.answer(
            service="materialize", method="query_table", datastack=datastack, table="syn", version=version,
            timestamp=None, params={}, fetch=Server(sample_frame(version), version=version),
        )
    return tmp_path


def ls(capsys, *args: str) -> list[str]:
    assert main(["cache", "ls", *args]) == 0
    return capsys.readouterr().out.splitlines()


def test_cache_ls(filled, capsys):
    lines = ls(capsys, "--dir", str(filled))
    assert len(lines) == 3
    entries = {e.version: e for e in CacheStore(filled).entries()}
    line = next(line for line in lines if "v2" in line)
    assert line.startswith(entries[2].key[:12])
    for part in (SERVER, "other", "query_table:syn", "2 rows", "used "):
        assert part in line
    assert len(ls(capsys, "--dir", str(filled), "--datastack", "ds")) == 2
    assert len(ls(capsys, "--dir", str(filled), "--server", SERVER + "/", "--datastack", "ds")) == 1
    records = [json.loads(line) for line in ls(capsys, "--dir", str(filled), "--json")]
    assert sorted(r["version"] for r in records) == [1, 2, 3]
    assert all(r["size"] > 0 and r["hash"] == entries[r["version"]].hash for r in records)


def test_cache_ls_uses_the_default_directory(filled, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("OPENCAVE_CACHE_DIR", str(filled))
    assert len(ls(capsys)) == 3
    monkeypatch.setenv("OPENCAVE_CACHE_DIR", str(tmp_path / "nothing"))
    assert ls(capsys) == []
    assert not (tmp_path / "nothing").exists()  # listing creates nothing


def test_cache_rm(filled, capsys):
    entries = {e.version: e for e in CacheStore(filled).entries()}
    assert main(["cache", "rm", "--dir", str(filled), entries[1].key[:10]]) == 0
    assert "removed 1 cached answer" in capsys.readouterr().out
    assert not CacheStore(filled).has(entries[1].hash)
    assert main(["cache", "rm", "--dir", str(filled), "--all", "--datastack", "other"]) == 0
    assert [e.version for e in CacheStore(filled).entries()] == [3]
    assert main(["cache", "rm", "--dir", str(filled), "--all", "--older-than", "1"]) == 0  # used just now
    assert [e.version for e in CacheStore(filled).entries()] == [3]
    with sqlite3.connect(filled / "index.sqlite") as db:
        db.execute("UPDATE entries SET last_used = ?", (time.time() - 3 * 86400,))
    assert main(["cache", "rm", "--dir", str(filled), "--all", "--older-than", "2"]) == 0
    assert CacheStore(filled).entries() == [] and list((filled / "objects").glob("*/*.parquet")) == []


@pytest.mark.parametrize(
    "args, message",
    [([], "name the entries"), (["abc", "--all"], "not both"), (["ffffffffffff"], "no cached answer")],
)
def test_cache_rm_misuse(filled, capsys, args, message):
    assert main(["cache", "rm", "--dir", str(filled), *args]) == 2
    assert message in capsys.readouterr().err
    assert len(CacheStore(filled).entries()) == 3


# -- lockfiles that cannot be replayed ----------------------------------------------------------


def test_from_lockfile_refuses_what_it_cannot_replay(tmp_path):
    from opencave import CAVEclient
    from opencave.client.errors import LockfileError

    (tmp_path / "not.json").write_text("{")
    with pytest.raises(LockfileError, match="cannot read the lockfile"):
        CAVEclient.from_lockfile(tmp_path / "not.json")
    (tmp_path / "other.json").write_text(json.dumps({"queries": []}))
    with pytest.raises(LockfileError, match="not an opencave lockfile"):
        CAVEclient.from_lockfile(tmp_path / "other.json")
    lockfile = {"opencave_lockfile": 1, "datastack": "ds", "info": {"local_server": SERVER}, "server_address": SERVER,
                "cache_dir": str(tmp_path / "gone"), "client": {}, "services": {}, "queries": []}
    (tmp_path / "lock.json").write_text(json.dumps(lockfile))
    with pytest.raises(LockfileError, match="no opencave cache"):
        CAVEclient.from_lockfile(tmp_path / "lock.json", cache=tmp_path / "empty")
    with pytest.raises(LockfileError, match="records no datastack"):
        (tmp_path / "global.json").write_text(json.dumps({**lockfile, "datastack": None}))
        CAVEclient.from_lockfile(tmp_path / "global.json")
