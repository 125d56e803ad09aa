"""VersionFiles: versions' files in a local directory (in place) or on object storage (a local
S3-compatible server) through a bounded read-through cache."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from opencave.storage import version_files
from opencave.errors import BadRequest
from opencave.storage.version_files import VersionFiles, VersionStorageUnavailable, is_remote, parse_size
from tests.support.object_store import object_store

BUCKET = "files"


@pytest.fixture(scope="module")
def store():
    with object_store() as running:
        running.create_bucket(BUCKET)
        yield running


def test_sizes_and_locations():
    assert parse_size("20GiB") == 20 * 1024**3
    assert parse_size("500MB") == 500_000_000
    assert parse_size("1.5k") == 1500
    assert parse_size("123") == 123
    with pytest.raises(ValueError, match="not a size"):
        parse_size("12 parsecs")
    assert is_remote("s3://b/p") and is_remote("gs://b") and not is_remote("file:///tmp/x") and not is_remote("/tmp/x")


def test_an_unknown_storage_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(BadRequest, match="nosuch") as refused:
        VersionFiles("nosuch://bucket/versions", tmp_path)
    assert refused.value.code == "versions_url_unusable"


def test_storage_that_cannot_be_read_answers_503_not_a_crash(store, tmp_path, monkeypatch):
    files = VersionFiles(f"s3://{BUCKET}/six", tmp_path)
    store.filesystem().pipe(f"{BUCKET}/six/ds/v1/t.parquet", b"rows")

    def down(*args, **kwargs):
        raise ConnectionError("Could not connect to the endpoint URL")

    monkeypatch.setattr(version_files._filesystem("s3"), "get_file", down)
    with pytest.raises(VersionStorageUnavailable, match="Could not connect") as refused:
        files.local_path(f"{files.root}/ds/v1", "t.parquet")
    assert refused.value.status == 503
    assert not list(tmp_path.rglob("*.partial-*")), "no partial download left"


def test_a_local_directory_is_used_in_place(tmp_path):
    files = VersionFiles(tmp_path / "versions", tmp_path / "data")
    location = f"{files.root}/ds/v1"
    staging = files.staging(location)
    assert staging == tmp_path / "versions" / "ds" / "v1", "a local version is written where it is read"
    staging.mkdir(parents=True)
    (staging / "t.parquet").write_bytes(b"rows")
    files.publish_directory(location, staging)
    assert files.local_path(location, "t.parquet") == staging / "t.parquet"
    assert files.exists(location, "t.parquet") and not files.exists(location, "u.parquet")
    made = files.scratch(location) / ".u.partial"
    made.write_bytes(b"later")
    files.put(location, "u.parquet", made)
    assert (staging / "u.parquet").read_bytes() == b"later" and not made.exists()
    assert not (tmp_path / "data" / "version-cache").exists(), "no copies of local files"
    files.delete(location)
    assert not staging.exists()
    assert VersionFiles(f"file://{tmp_path}/v", tmp_path).root == str(tmp_path / "v")


def test_remote_versions_are_uploaded_then_read_through_the_cache(store, tmp_path, monkeypatch):
    writer = VersionFiles(f"s3://{BUCKET}/one", tmp_path / "writer")
    reader = VersionFiles(f"s3://{BUCKET}/one", tmp_path / "reader")
    location = f"{writer.root}/ds/v1"
    staging = writer.staging(location)
    assert staging.is_relative_to(tmp_path / "writer"), "staged under the builder's data directory"
    (staging / "t.parquet").write_bytes(b"table rows")
    (staging / "version.json").write_text("{}")
    writer.publish_directory(location, staging)
    assert not staging.exists()
    fs = store.filesystem()
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{BUCKET}/one/ds/v1")) == ["t.parquet", "version.json"]

    assert not reader.exists(location, "u.parquet")
    path = reader.local_path(location, "t.parquet")
    assert path.read_bytes() == b"table rows" and path.is_relative_to(tmp_path / "reader" / "version-cache")
    with pytest.raises(FileNotFoundError):
        reader.local_path(location, "missing.parquet")
    assert not [p for p in (tmp_path / "reader").rglob("*") if ".partial-" in p.name], "no partial download left"

    # a file made later by one process is seen by the other once its listing is re-read
    made = writer.scratch(location) / ".u.partial"
    made.write_bytes(b"copy")
    writer.put(location, "u.parquet", made)
    assert writer.exists(location, "u.parquet"), "the maker sees it at once (it is in its cache)"
    assert not reader.exists(location, "u.parquet"), "the other's listing is fresh for a while"
    monkeypatch.setattr(version_files, "LISTING_TTL", 0.0)
    assert reader.exists(location, "u.parquet")
    assert reader.local_path(location, "u.parquet").read_bytes() == b"copy"

    reader.delete(location)
    fs.invalidate_cache()
    assert not fs.exists(f"{BUCKET}/one/ds/v1") and not (tmp_path / "reader" / "version-cache" / "s3" / BUCKET / "one" / "ds" / "v1").exists()
    assert not reader.exists(location, "t.parquet")
    reader.delete(location)  # gone already: quietly


def test_concurrent_readers_share_one_cached_file(store, tmp_path):
    files = VersionFiles(f"s3://{BUCKET}/two", tmp_path)
    location = f"{files.root}/ds/v1"
    payload = os.urandom(3_000_000)
    store.filesystem().pipe(f"{BUCKET}/two/ds/v1/big.parquet", payload)
    with ThreadPoolExecutor(6) as pool:
        paths = list(pool.map(lambda _: files.local_path(location, "big.parquet"), range(6)))
    assert len(set(paths)) == 1 and paths[0].read_bytes() == payload
    assert [p.name for p in paths[0].parent.iterdir()] == ["big.parquet"]


def test_the_cache_keeps_within_its_bound_least_recently_used_first(store, tmp_path, monkeypatch):
    monkeypatch.setattr(version_files, "HOLD_SECONDS", 0.0)
    fs = store.filesystem()
    for name in "abcde":
        fs.pipe(f"{BUCKET}/three/ds/v1/{name}.parquet", name.encode() * 1000)
    files = VersionFiles(f"s3://{BUCKET}/three", tmp_path, cache_bytes=2500)
    location = f"{files.root}/ds/v1"
    for name in "abc":
        files.local_path(location, f"{name}.parquet")
        time.sleep(0.02)  # distinct use times
    cached = lambda: sorted(p.name for p in (tmp_path / "version-cache").rglob("*.parquet"))  # noqa: E731
    assert cached() == ["b.parquet", "c.parquet"], "a, the least recently used, went"
    files.local_path(location, "b.parquet")  # b used again: c is now the older
    time.sleep(0.02)
    files.local_path(location, "d.parquet")
    assert cached() == ["b.parquet", "d.parquet"]
    assert files.cache_size() <= 2500
    # a file larger than the bound is still served (and kept until another is fetched)
    fs.pipe(f"{BUCKET}/three/ds/v1/huge.parquet", b"h" * 5000)
    assert files.local_path(location, "huge.parquet").read_bytes() == b"h" * 5000
    assert cached() == ["huge.parquet"]
    assert files.local_path(location, "a.parquet").read_bytes() == b"a" * 1000, "an evicted file is fetched again"
    assert files.cache_size() <= 2500


def test_recently_used_files_survive_eviction_for_a_moment(store, tmp_path):
    fs = store.filesystem()
    for name in "xy":
        fs.pipe(f"{BUCKET}/four/ds/v1/{name}.parquet", name.encode() * 1000)
    files = VersionFiles(f"s3://{BUCKET}/four", tmp_path, cache_bytes=10)
    location = f"{files.root}/ds/v1"
    x = files.local_path(location, "x.parquet")
    y = files.local_path(location, "y.parquet")
    assert x.exists() and y.exists(), "a query's files, named a moment before DuckDB opens them, are kept"


def test_an_upload_failing_midway_leaves_no_files(store, tmp_path, monkeypatch):
    from opencave.services.materialize.materializer import discard_files

    files = VersionFiles(f"s3://{BUCKET}/five", tmp_path)
    location = f"{files.root}/ds/v1"
    staging = files.staging(location)
    for name in ("a.parquet", "b.parquet", "version.json"):
        (staging / name).write_bytes(b"x" * 100)
    fs = version_files._filesystem("s3")
    uploads = []

    def failing(local, remote, **kwargs):
        if uploads:
            raise PermissionError("Access Denied")
        uploads.append(remote)
        return original(local, remote, **kwargs)

    original = fs.put_file
    monkeypatch.setattr(fs, "put_file", failing)
    with pytest.raises(VersionStorageUnavailable, match="Access Denied") as refused:
        files.publish_directory(location, staging)
    assert refused.value.status == 503 and "s3://files/five/ds/v1" in refused.value.message
    monkeypatch.setattr(fs, "put_file", original)
    assert len(uploads) == 1 and store.filesystem().exists(uploads[0]), "one file made it before the failure"
    discard_files(files, location)
    check = store.filesystem()
    assert check.find(f"{BUCKET}/five") == [], "the uploaded file is removed with the version's prefix"
    assert not staging.exists() and not files.exists(location, "a.parquet")
