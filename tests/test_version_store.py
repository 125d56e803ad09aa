"""Frozen versions on object storage (``--versions-url s3://…``), against a local S3-compatible
server (moto's server mode), never the internet.

A version materialized through one process is written to the bucket only (with its manifest);
every process reads it through its own bounded local cache and gives the same answers (on
PostgreSQL two processes with separate data directories share one database). DuckDB and Polars
read a table straight from the bucket with nothing but the manifest. A build whose upload fails
publishes nothing and leaves nothing in the bucket.
"""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from opencave.storage import version_files
from tests.support.materialize import DS, caveclient_for
from tests.support.object_store import object_store
from tests.support.server import ServerProcess

BUCKET = "versions"
SYNAPSES = "synapses"
VIEW = "synapse_connections"


@pytest.fixture(scope="module")
def store():
    with object_store() as running:
        running.create_bucket(BUCKET)
        yield running


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fleet(request, store, database_for, tmp_path_factory):
    """Processes over one store whose versions are in the bucket: one on SQLite (which hosts
    cannot share), two on PostgreSQL with separate data directories. Version 4 is made by the
    first process's ``opencave materialize create``."""
    backend = request.param
    url = f"s3://{BUCKET}/{backend}"
    database = database_for(backend)
    root = tmp_path_factory.mktemp(f"version-store-{backend}")
    count = 1 if backend == "sqlite" else 2
    servers = []
    try:
        for number in range(count):
            servers.append(ServerProcess(root / f"data{number}", database, extra_args=("--versions-url", url)).start(timeout=300))
        created = servers[0].cli("materialize", "create", DS, "--versions-url", url)
        assert "version 4 published" in created.stdout, created.stdout
        yield {"backend": backend, "url": url, "servers": servers, "root": root, "database": database}
    finally:
        for server in servers:
            server.stop()


def _answers(server: ServerProcess) -> dict[str, pd.DataFrame]:
    """The same questions through the genuine caveclient and opencave's client."""
    from opencave import CAVEclient

    token = server.new_token()
    cave = caveclient_for(server, token)
    ours = CAVEclient(DS, server_address=server.url, auth_token=token, write_server_cache=False)
    full = cave.materialize.query_table(SYNAPSES, materialization_version=4, split_positions=True)
    roots = sorted(int(r) for r in full["pre_pt_root_id"].value_counts().index[:3])
    out = {
        "full": full,
        "one root (clustered copy)": cave.materialize.query_table(
            SYNAPSES, materialization_version=4, filter_equal_dict={"pre_pt_root_id": roots[0]}, split_positions=True
        ),
        "roots in and size": cave.materialize.query_table(
            SYNAPSES,
            materialization_version=4,
            filter_in_dict={"post_pt_root_id": roots},
            filter_greater_dict={"size": 50},
            split_positions=True,
        ),
        "view": cave.materialize.query_view(VIEW, materialization_version=4),
        "opencave client filters": ours.materialize.query_table(
            SYNAPSES, materialization_version=4, filter_in_dict={"pre_pt_root_id": roots}, split_positions=True
        ),
        "opencave client view": ours.materialize.query_view(VIEW, materialization_version=4),
        "connectivity edges": ours.connectivity.edges(roots, None, version=4),
    }
    return {name: _sorted(frame) for name, frame in out.items()}


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    frame = pd.DataFrame(frame)
    frame.attrs = {}
    keys = ["id"] if "id" in frame.columns else list(frame.columns)
    return frame.sort_values(keys).reset_index(drop=True)


def _bucket_files(store, url: str, version: int) -> list[str]:
    fs = store.filesystem()
    return sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{url.removeprefix('s3://')}/{DS}/v{version}", refresh=True))


def test_versions_live_in_the_bucket_and_every_process_answers_alike(fleet, store):
    url, servers = fleet["url"], fleet["servers"]
    files = _bucket_files(store, url, 4)
    assert {"version.json", "synapses.parquet", "synapses.by_pre_pt_root_id.parquet", f"view.{VIEW}.parquet"} <= set(files)
    for server in servers:
        assert not (server.data_dir / "versions").exists(), "no version files in a local versions directory"

    first = _answers(servers[0])
    full = first["full"]
    assert len(full) > 1000
    one = first["one root (clustered copy)"]
    assert len(one) and (one["pre_pt_root_id"] == one["pre_pt_root_id"].iloc[0]).all()
    pd.testing.assert_frame_equal(one, _sorted(full[full["pre_pt_root_id"] == one["pre_pt_root_id"].iloc[0]]))
    assert len(first["view"]) and len(first["connectivity edges"])
    for other in servers[1:]:
        answers = _answers(other)
        for name, frame in first.items():
            pd.testing.assert_frame_equal(answers[name], frame, obj=f"{name} through another process")
        cached = list((other.data_dir / "version-cache").rglob("synapses.parquet"))
        assert cached, "the second process read the version through its own cache"
    # the connections files made on first use went to the bucket, beside the version
    assert {"synapses.connections.parquet", "synapses.connections.by_post.parquet"} <= set(_bucket_files(store, url, 4))


def test_duckdb_and_polars_read_a_version_with_only_its_manifest(fleet, store):
    import duckdb
    import polars as pl

    url = fleet["url"]
    fs = store.filesystem()
    prefix = f"{url}/{DS}/v4"
    manifest = json.loads(fs.cat(f"{prefix}/version.json"))
    assert manifest["format"] == "opencave-version" and manifest["datastack"] == DS and manifest["version"] == 4
    assert manifest["time_stamp"]
    entry = next(t for t in manifest["tables"] if t["name"] == SYNAPSES)
    assert entry["kind"] == "table" and entry["schema"] == "synapse"
    columns = [c["name"] for c in entry["columns"]]
    assert columns[:2] == ["id", "valid"] and "pre_pt_root_id" in columns
    views = [t for t in manifest["tables"] if t["kind"] == "view"]
    assert VIEW in [v["name"] for v in views]

    by_polars = pl.read_parquet(f"{prefix}/{entry['path']}", storage_options=store.polars_options)
    assert by_polars.height == entry["row_count"] and by_polars.columns == columns
    assert [str(t) for t in by_polars.dtypes][:1] == ["Int64"]
    con = duckdb.connect()
    con.register_filesystem(fs)
    by_duckdb = con.sql(f"SELECT * FROM read_parquet('{prefix}/{entry['path']}') ORDER BY id").df()
    copy = con.sql(f"SELECT * FROM read_parquet('{prefix}/{entry['clustered']['pre_pt_root_id']}') ORDER BY id").df()
    pd.testing.assert_frame_equal(by_duckdb, by_polars.to_pandas().sort_values("id").reset_index(drop=True), check_dtype=False)
    pd.testing.assert_frame_equal(copy, by_duckdb)

    served = _answers(fleet["servers"][0])["full"]
    assert sorted(served["id"]) == sorted(by_duckdb["id"])
    merged = served.merge(by_duckdb, on="id", suffixes=("", "_file"))
    assert (merged["pre_pt_root_id"] == merged["pre_pt_root_id_file"]).all() and (merged["size"] == merged["size_file"]).all()


def test_a_tiny_cache_still_answers_and_stays_within_its_bound(fleet, tmp_path):
    if fleet["backend"] != "sqlite":
        pytest.skip("the SQLite store is enough: the cache is per process")
    first = fleet["servers"][0]
    expected = _answers(first)
    first.stop()
    bound = 1000  # smaller than any file: every fetch evicts what is not in use
    small = ServerProcess(first.data_dir, None, port=first.port, extra_args=("--versions-url", fleet["url"], "--versions-cache-size", str(bound)))
    fleet["servers"][0] = small.start(timeout=300)
    answers = _answers(small)
    for name, frame in expected.items():
        pd.testing.assert_frame_equal(answers[name], frame, obj=f"{name} with a tiny cache")
    time.sleep(version_files.HOLD_SECONDS + 0.5)  # files in use a moment ago are no longer held
    token = small.new_token()
    caveclient_for(small, token).materialize.query_view(VIEW, materialization_version=3)  # not cached: fetched
    cache = small.data_dir / "version-cache"
    kept = [p for p in cache.rglob("*") if p.is_file()]
    assert [p.relative_to(cache).as_posix() for p in kept] == [f"s3/{BUCKET}/sqlite/{DS}/v3/view.{VIEW}.parquet"], "only the file just used is left"
    assert sum(p.stat().st_size for p in kept) <= bound + max(p.stat().st_size for p in kept)


def test_a_failed_upload_publishes_nothing(fleet, store):
    server = fleet["servers"][0]
    before = server.cli("materialize", "list", DS).stdout
    missing = "s3://no-such-bucket/versions"
    result = server.cli("materialize", "create", DS, "--versions-url", missing, check=False)
    assert result.returncode != 0
    assert "NoSuchBucket" in result.stderr or "no-such-bucket" in result.stderr, result.stderr
    assert server.cli("materialize", "list", DS).stdout == before, "no version was published"
    cave = caveclient_for(server, server.new_token())
    assert max(cave.materialize.get_versions()) == 4, "clients never see the failed version"
    staging = server.data_dir / "version-staging"
    assert not staging.exists() or not any(staging.iterdir()), "its staged files are removed"



def test_a_version_directory_imports_as_it_is_onto_object_storage(fleet, store, tmp_path):
    """The manifest makes a version's directory a version package: downloaded from the bucket
    and imported into another datastack (its clustered copies built and uploaded), the copy
    answers like the original through every process."""
    from opencave import CAVEclient

    url, servers = fleet["url"], fleet["servers"]
    fs = store.filesystem()
    source = tmp_path / "v4"
    source.mkdir()
    for name in _bucket_files(store, url, 4):
        if name == "version.json" or ".by_" not in name and ".connections" not in name:
            fs.get_file(f"{url}/{DS}/v4/{name}", str(source / name))
    copied = f"copied_{fleet['backend']}"
    servers[0].cli("import", "version", copied, str(source), "--versions-url", url)
    imported = sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{url.removeprefix('s3://')}/{copied}/v4", refresh=True))
    assert {"version.json", "synapses.parquet", "synapses.by_pre_pt_root_id.parquet", f"view.{VIEW}.parquet"} <= set(imported)
    original = _answers(servers[0])["full"]
    for server in servers:
        client = CAVEclient(copied, server_address=server.url, auth_token=server.new_token(), write_server_cache=False)
        frame = client.materialize.query_table(SYNAPSES, materialization_version=4, split_positions=True)
        pd.testing.assert_frame_equal(_sorted(frame)[original.columns.tolist()], original, check_dtype=False, obj=f"imported copy via {server.url}")


def test_a_local_version_directory_has_its_manifest(server):
    """Versions in a directory get the same manifest: every entry names a file holding its rows
    with the listed Arrow schema."""
    import pyarrow.parquet as pq

    directory = server.data_dir / "versions" / DS / "v3"
    manifest = json.loads((directory / "version.json").read_text())
    assert manifest["version"] == 3 and manifest["datastack"] == DS
    assert {t["name"] for t in manifest["tables"]} >= {SYNAPSES, VIEW}
    for entry in manifest["tables"]:
        file = pq.ParquetFile(directory / entry["path"])
        assert file.metadata.num_rows == entry["row_count"], entry["name"]
        assert [{"name": f.name, "type": str(f.type)} for f in file.schema_arrow] == entry["columns"], entry["name"]
        for copy in entry["clustered"].values():
            assert pq.ParquetFile(directory / copy).metadata.num_rows == entry["row_count"], copy
