"""A version whose builder is killed with SIGKILL half-way is never listed, its files go, and
the next version is built and queried normally — whether the builder was ``opencave
materialize create`` or the server itself (``create_frozen``). Builders racing for the next
version number all succeed. A build whose process is still alive is left alone by other
processes starting on the same host, however long it takes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests

from tests.support.materialize import DS, caveclient_for, create_version
from tests.support.server import ServerProcess

BIG = "zz_big_synapses"  # sorts last: the builder is on it when the smaller tables are written
BIG_ROWS = 200_000

FILL = """
import sys, time
import numpy as np
from opencave.config import resolve_settings
from opencave.runtime import Runtime

runtime = Runtime.open(resolve_settings(sys.argv[1], sys.argv[2] or None))
source = runtime.annotations.read_rows("opencave_demo", "synapses")
rng = np.random.default_rng(0)
pick = rng.integers(0, source.num_rows, int(sys.argv[4]))
columns = {
    f"{p}_position": np.stack([source.column(f"{p}_position_{a}").to_numpy() for a in "xyz"], axis=1)[pick]
    for p in ("pre_pt", "post_pt", "ctr_pt")
}
columns["size"] = rng.uniform(1, 1000, pick.size)
runtime.annotations.create_table(
    "opencave_demo", sys.argv[3], "synapse", description="many synapses", voxel_resolution=[8, 8, 40], user_id="1"
)
runtime.annotations.insert_columns("opencave_demo", sys.argv[3], columns, created=np.full(pick.size, time.time() - 60))
"""

LIVE_BUILDER = """
import subprocess, sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from sqlalchemy import update
from opencave.config import resolve_settings
from opencave.runtime import Runtime
from opencave.storage.tables import mat_versions

data_dir, database = sys.argv[1], sys.argv[2] or None
runtime = Runtime.open(resolve_settings(data_dir, database))
registry = runtime.materializer.registry
version = registry.begin("opencave_demo", datetime.now(timezone.utc), None, str(runtime.settings.version_root))
# a long build: this process is alive, but it has not sent a heartbeat for an hour
with runtime.engine.begin() as conn:
    conn.execute(update(mat_versions).where(mat_versions.c.id == version.id).values(heartbeat=datetime.now(timezone.utc) - timedelta(hours=1)))
Path(version.location).mkdir(parents=True, exist_ok=True)
(Path(version.location) / "synapses.parquet").write_bytes(b"being written")
storage = ["--data-dir", data_dir] + (["--database", database] if database else [])
# another process starting on this host (a CLI command, a restarted server) discards abandoned builds
subprocess.run([sys.executable, "-m", "opencave", "materialize", "list", "opencave_demo", *storage], check=True, capture_output=True)
assert [v.version for v in registry.abandoned()] == [], "a live builder's version was considered abandoned"
status = runtime.engine.connect().execute(mat_versions.select().where(mat_versions.c.id == version.id)).one().status
assert status == "RUNNING", status
assert (Path(version.location) / "synapses.parquet").exists(), "a live builder's files were removed"
print(version.version, version.location)
"""


def _get(server, token: str, path: str) -> requests.Response:
    return requests.get(f"{server.url}/materialize/api/v3/datastack/{DS}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=60)


def _fill(server, table: str, rows: int) -> None:
    result = subprocess.run(
        [sys.executable, "-c", FILL, str(server.data_dir), server.database or "", table, str(rows)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr


def _version_dir(server, number: int) -> Path:
    return server.data_dir / "versions" / DS / f"v{number}"


def _kill_cli_builder(server) -> tuple[int, str]:
    """Start ``opencave materialize create`` and SIGKILL it once it works on the big table."""
    process = subprocess.Popen(
        [sys.executable, "-m", "opencave", "materialize", "create", DS, *server.storage_args()],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    number = None
    try:
        for line in process.stdout:
            seen.append(line)
            if line.startswith("version ") and number is None:
                number = int(line.split()[1])
            if "] synapses:" in line:  # the next table is the big one
                process.send_signal(signal.SIGKILL)
                break
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
    output = "".join(seen)
    assert number is not None and "] synapses:" in output, output
    assert "published" not in output, output
    return number, output


def test_sigkill_during_version_creation(backend, server_factory):
    server = server_factory(backend)
    token = server.new_token()
    _fill(server, BIG, BIG_ROWS)
    before = _get(server, token, "/versions").json()
    assert before == [1, 2, 3]

    # 1. the command-line builder is killed half-way while the server runs
    cli_number, output = _kill_cli_builder(server)
    assert cli_number == 4
    partial = _version_dir(server, cli_number)
    assert (partial / "synapses.parquet").exists() and not (partial / f"{BIG}.parquet").exists(), sorted(os.listdir(partial))
    assert _get(server, token, "/versions").json() == before  # never listed, even before any clean-up
    assert _get(server, token, f"/version/{cli_number}").status_code == 404

    # 2. the server is killed while it builds a version for create_frozen
    outcome: list[object] = []

    def request() -> None:
        try:
            outcome.append(create_version(server, token))
        except (requests.RequestException, AssertionError) as error:
            outcome.append(error)

    worker = threading.Thread(target=request)
    worker.start()
    server_number = cli_number + 1
    marker = _version_dir(server, server_number) / "synapses.by_post_pt_root_id.parquet"  # the last file before the big table
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline and worker.is_alive():
        time.sleep(0.002)
    assert marker.exists(), (outcome, sorted(os.listdir(marker.parent)) if marker.parent.exists() else None)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    worker.join(30)
    assert outcome and isinstance(outcome[0], requests.RequestException), outcome  # the request never got an answer
    assert not (_version_dir(server, server_number) / f"{BIG}.parquet").exists()

    # 3. restart: both half-made versions are discarded, files and all
    restarted = ServerProcess(server.data_dir, server.database, port=server.port).start()
    server.process = restarted.process  # so the session's clean-up stops the new process
    try:
        assert _get(restarted, token, "/versions").json() == before
        for number in (cli_number, server_number):
            assert not _version_dir(restarted, number).exists(), number
            assert _get(restarted, token, f"/version/{number}").status_code == 404
        listed = restarted.cli("materialize", "list", DS).stdout
        assert "RUNNING" not in listed and "FAILED" not in listed, listed

        # 4. a new version is built and answers queries
        made = create_version(restarted, token)
        assert made["status"] == "AVAILABLE" and made["valid"] is True
        number = made["version"]
        assert number > server_number and _get(restarted, token, "/versions").json() == before + [number]
        client = caveclient_for(restarted, token)
        assert client.materialize.get_annotation_count(BIG, version=number) == BIG_ROWS
        assert client.materialize.query_table(BIG, get_counts=True, materialization_version=number)["count"].tolist() == [BIG_ROWS]
        some = client.materialize.query_table(BIG, limit=1000, materialization_version=number, split_positions=True)
        assert some["id"].tolist() == list(range(1, 1001))
        roots = client.chunkedgraph.get_roots(some["pre_pt_supervoxel_id"].to_numpy().astype("uint64"))
        assert some["pre_pt_root_id"].tolist() == [int(r) for r in roots]
        assert client.materialize.get_annotation_count("synapses", version=number) == 19_800
        assert sorted(os.listdir(_version_dir(restarted, number))) == sorted(
            [f"{t}.parquet" for t in ("cell_types", "nucleus_detection", "proofreading_status", "synapses", BIG)]
            + [f"{t}.by_{c}.{kind}" for t in ("synapses", BIG) for c in ("pre_pt_root_id", "post_pt_root_id") for kind in ("parquet", "arrow")]
            + [f"{t}.by_pt_root_id.{kind}" for t in ("nucleus_detection", "proofreading_status") for kind in ("parquet", "arrow")]
            + ["view.single_neurons.parquet", "view.synapse_connections.parquet", "version.json"]
        )

        # 5. builders racing for the next number all succeed, each with its own number
        made_together: list[dict] = []
        barrier = threading.Barrier(3)

        def build() -> None:
            barrier.wait()
            made_together.append(create_version(restarted, token))

        racers = [threading.Thread(target=build) for _ in range(3)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join()
        numbers = sorted(v["version"] for v in made_together)
        assert len(numbers) == 3 and numbers == list(range(number + 1, number + 4)), made_together
        assert _get(restarted, token, "/versions").json() == before + [number, *numbers]
    finally:
        restarted.stop()


def test_live_builders_are_not_discarded(server, admin_token):
    """A build without a heartbeat for an hour whose process still runs on this host is not
    discarded by another process starting; once that process is gone, it is. (On the shared
    server: it leaves only a FAILED registry row behind.)"""
    token = admin_token
    before = _get(server, token, "/versions").json()
    result = subprocess.run(
        [sys.executable, "-c", LIVE_BUILDER, str(server.data_dir), server.database or ""], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    number, location = result.stdout.split()
    assert Path(location).exists()
    server.cli("materialize", "list", DS)  # the builder has exited: now its version is abandoned
    assert not Path(location).exists()
    assert _get(server, token, "/versions").json() == before
    assert _get(server, token, f"/version/{number}").status_code == 404


def test_a_restart_discards_builds_whatever_the_pid(server, admin_token):
    """A server in a container runs as PID 1, like the one that died building a version before
    it: the PID alone proves nothing. A restarted server discards a build recorded under a
    live PID that is not its builder's process (files and all), and one from another host
    whose heartbeat is stale; one from another host with a fresh heartbeat may still be
    running there and is kept."""
    from datetime import timedelta

    from sqlalchemy import select, update

    from opencave.config import resolve_settings
    from opencave.runtime import Runtime
    from opencave.services.materialize.versions import worker_name
    from opencave.storage.tables import mat_versions
    from tests.support.postgres import free_port

    host, _, start, _ = worker_name().split(":")
    boot = start.split("-")[0]
    now = datetime.now(timezone.utc)
    cases = {  # worker name, heartbeat, discarded?
        "same host, PID 1, another process": (f"{host}:1:{boot}-1:0123456789ab", now, True),
        "another host, stale heartbeat": ("elsewhere:1:?:0123456789ab", now - timedelta(hours=1), True),
        "another host, fresh heartbeat": ("elsewhere:1:?:ba9876543210", now + timedelta(minutes=10), False),
    }
    runtime = Runtime.open(resolve_settings(str(server.data_dir), server.database))
    registry = runtime.materializer.registry
    before = _get(server, admin_token, "/versions").json()
    built = {}
    try:
        for name, (worker, heartbeat, _) in cases.items():
            version = registry.begin(DS, now, None, str(runtime.settings.version_root))
            with runtime.engine.begin() as conn:
                conn.execute(update(mat_versions).where(mat_versions.c.id == version.id).values(worker=worker, heartbeat=heartbeat))
            Path(version.location).mkdir(parents=True, exist_ok=True)
            (Path(version.location) / "synapses.parquet").write_bytes(b"half written")
            built[name] = version
        restarted = ServerProcess(server.data_dir, server.database, port=free_port()).start()
        restarted.stop()
        with runtime.engine.connect() as conn:
            status = dict(conn.execute(select(mat_versions.c.id, mat_versions.c.status).where(mat_versions.c.id.in_([v.id for v in built.values()]))).all())
        for name, (_, _, discarded) in cases.items():
            version = built[name]
            assert status[version.id] == ("FAILED" if discarded else "RUNNING"), name
            assert Path(version.location).exists() is not discarded, name
        assert _get(server, admin_token, "/versions").json() == before
    finally:
        for version in built.values():
            registry.fail(version.id, "test clean-up")
            shutil.rmtree(version.location, ignore_errors=True)
        runtime.close()


def test_worker_names_tell_processes_apart():
    """The name has host, PID, process start and a random id; only this process's own name
    and live processes' names on this host count as running builders here."""
    from opencave.services.materialize.versions import _builder_gone, worker_name

    mine = worker_name()
    host, pid, start, instance = mine.split(":")
    assert int(pid) == os.getpid() and len(instance) == 12 and start != "?"
    assert _builder_gone(mine) is False
    parent = subprocess.run([sys.executable, "-c", "from opencave.services.materialize.versions import worker_name; print(worker_name())"], capture_output=True, text=True, check=True)
    assert _builder_gone(parent.stdout.strip()) is True, "that process has exited"
    assert _builder_gone(f"{host}:1:{start.split('-')[0]}-1:{instance}") is True, "PID 1 runs, but started at another time"
    assert _builder_gone(f"elsewhere:{pid}:{start}:{instance}") is None, "another host: only its heartbeat tells"
    assert _builder_gone(f"{host}:{pid}") is None, "a name in the older form"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_serving_process_discards_a_build_once_its_heartbeat_is_stale(backend, tmp_path, database_for, monkeypatch):
    """A build on another host may die after this process started: while serving, the process
    looks again now and then, and discards it once its heartbeat has gone stale."""
    from datetime import timedelta

    from sqlalchemy import select, update

    import opencave.runtime
    from opencave.config import resolve_settings
    from opencave.runtime import Runtime
    from opencave.storage.tables import mat_versions

    monkeypatch.setattr(opencave.runtime, "ABANDONED_CHECK_S", 0.05)
    runtime = Runtime.open(resolve_settings(str(tmp_path / "data"), database_for(backend)))
    registry = runtime.materializer.registry
    version = registry.begin(DS, datetime.now(timezone.utc), None, str(runtime.settings.version_root))
    Path(version.location).mkdir(parents=True)
    (Path(version.location) / "synapses.parquet").write_bytes(b"half written")

    def builder(heartbeat: datetime) -> None:
        with runtime.engine.begin() as conn:
            conn.execute(update(mat_versions).where(mat_versions.c.id == version.id).values(worker="elsewhere:1:?:0123456789ab", heartbeat=heartbeat))

    def status() -> str:
        with runtime.engine.connect() as conn:
            return conn.execute(select(mat_versions.c.status).where(mat_versions.c.id == version.id)).scalar_one()

    builder(datetime.now(timezone.utc))
    runtime.start()
    try:
        time.sleep(0.5)
        assert status() == "RUNNING", "a fresh heartbeat: the builder may be working"
        builder(datetime.now(timezone.utc) - timedelta(hours=1))
        deadline = time.time() + 20
        while status() == "RUNNING" and time.time() < deadline:
            time.sleep(0.05)
        assert status() == "FAILED" and not Path(version.location).exists()
    finally:
        runtime.close()
