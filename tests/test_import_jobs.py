"""Table imports and segmentation ingests are jobs, on SQLite and PostgreSQL.

A server that runs no jobs itself (``--job-threads 0``) leaves them to `opencave worker`
processes: an ``opencave import table --queue`` and an ``opencave ingest segmentation --queue``
named with paths relative to the command's directory, and uploads through the annotation
engine — answered by the worker's result, or 202 with the job when it takes longer than
``wait_s``. A failing import through a job answers the same 400 as before, leaves no rows and
no upload folder; upload folders no job names are removed once abandoned.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from opencave import CAVEclient
from opencave.services.jobs import JobQueue
from opencave.services.materialize.versions import worker_name
from opencave.services.transfer.table_import_job import IMPORT_TABLE, UPLOAD_GRACE_S, remove_abandoned_uploads
from opencave.storage.sql import create_store_engine, upgrade_schema
from tests.support.segmentations import flat_segmentation, write_layer, write_table
from tests.test_import_table import DS, POINTS, RESOLUTION, SPLIT, with_bad_rows, write

ROWS = 40


@pytest.fixture(scope="module")
def queue_server(backend, server_factory):
    """A server that runs no jobs itself: only `opencave worker` processes do."""
    return server_factory(backend, "--job-threads", "0")


@pytest.fixture(scope="module")
def token(queue_server) -> str:
    return queue_server.new_token()


@pytest.fixture(scope="module")
def client(queue_server, token) -> CAVEclient:
    return CAVEclient(DS, server_address=queue_server.url, auth_token=token)


@pytest.fixture(scope="module")
def rows(client) -> pd.DataFrame:
    """Synapses at the demo's own synapse positions (in 4×4×40 nm voxels), with a size."""
    demo = client.materialize.query_table("synapses", limit=ROWS, split_positions=True).sort_values("id").reset_index(drop=True)
    out = pd.DataFrame({"size": demo["size"].astype(float)})
    for point in POINTS:
        out[f"{point}_position_x"] = demo[f"{point}_position_x"] * 2.0
        out[f"{point}_position_y"] = demo[f"{point}_position_y"] * 2.0
        out[f"{point}_position_z"] = demo[f"{point}_position_z"].astype(float)
    return out[SPLIT + ["size"]]


def _worker(server) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "opencave", "worker", *server.storage_args()], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(worker: subprocess.Popen) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def _ended(server, job_id: int, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = json.loads(server.cli("jobs", "show", str(job_id)).stdout)
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end within {timeout} s")


def _command(server, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """An ``opencave`` command run in ``cwd`` (so relative paths are relative to it)."""
    result = subprocess.run([sys.executable, "-m", "opencave", *args, *server.storage_args()], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    return result


def _queued_id(result: subprocess.CompletedProcess, kind: str) -> int:
    words = result.stdout.split()
    assert words[:2] == ["queued", "job"] and words[3] == f"({kind});", result.stdout
    return int(words[2])


def _tables(client: CAVEclient) -> list[str]:
    return client.annotation.get_tables()


def _uploads(server) -> list[Path]:
    root = server.data_dir / "imports" / "uploads"
    return sorted(root.iterdir()) if root.is_dir() else []


# -- the command line -------------------------------------------------------------------------------
def test_a_queued_import_is_run_by_a_worker(queue_server, client, rows, tmp_path):
    """Files named relative to the command's directory: the worker, elsewhere, reads them, and
    a failing import's message names them as given."""
    write(rows, tmp_path / "rows.csv")
    write(with_bad_rows(rows), tmp_path / "bad.csv")
    common = ("--schema", "synapse", "--description", "Queued synapses.", "--voxel-resolution", *map(str, RESOLUTION), "--queue")
    good = _queued_id(_command(queue_server, tmp_path, "import", "table", DS, "queued_rows", "rows.csv", *common), "import.table")
    bad = _queued_id(_command(queue_server, tmp_path, "import", "table", DS, "queued_bad", "bad.csv", *common), "import.table")
    queued = json.loads(queue_server.cli("jobs", "show", str(good)).stdout)
    assert queued["status"] == "queued" and queued["payload"]["files"] == [str(tmp_path / "rows.csv")]
    assert "queued_rows" not in _tables(client)
    worker = _worker(queue_server)
    try:
        done, failed = _ended(queue_server, good), _ended(queue_server, bad)
    finally:
        _stop(worker)
    assert done["status"] == "done", done
    result = done["result"]
    assert (result["rows"], result["created_table"], result["first_id"], result["last_id"]) == (ROWS, True, 1, ROWS)
    assert client.annotation.get_annotation_count("queued_rows") == ROWS
    assert failed["status"] == "failed" and failed["error"]["code"] == "invalid_rows", failed
    assert "bad.csv, row 3, column size" in failed["error"]["message"] and str(tmp_path) not in failed["error"]["message"]
    assert "queued_bad" not in _tables(client)


def test_an_import_run_here_shows_its_bars_and_summary(queue_server, client, rows, tmp_path):
    """Without --queue the command runs the job itself (no worker needed), with its bars."""
    result = _command(
        queue_server, tmp_path, "import", "table", DS, "run_here_rows", str(write(rows, tmp_path / "rows.parquet")),
        "--schema", "synapse", "--description", "Synapses.", "--voxel-resolution", *map(str, RESOLUTION),
    )  # fmt: skip
    assert f"imported {ROWS:,} rows into new table run_here_rows of {DS} (ids 1..{ROWS})" in result.stdout, result.stdout
    assert "checking:" in result.stderr and "writing:" in result.stderr and "reading:" in result.stderr
    listed = queue_server.cli("jobs", "ls", "--kind", "import.table").stdout
    assert "done" in listed
    assert client.annotation.get_annotation_count("run_here_rows") == ROWS


def test_a_queued_ingest_is_run_by_a_worker(queue_server, tmp_path):
    labels = np.arange(1, 7, dtype=np.uint64) * 1000
    volume = flat_segmentation((24, 24, 16), labels, seed=3)
    write_layer(tmp_path / "seg", volume)
    mapping = {"supervoxel": labels, "segment": np.repeat(np.arange(1, 4, dtype=np.uint64), 2)}  # pairs joined
    write_table(tmp_path / "mapping.csv", mapping)
    queued = _command(queue_server, tmp_path, "ingest", "segmentation", "queued_lab", "--watershed", "seg", "--agglomeration", "mapping.csv",
                      "--chunk-size", "16", "16", "8", "--queue")  # fmt: skip
    job_id = _queued_id(queued, "ingest.segmentation")
    payload = json.loads(queue_server.cli("jobs", "show", str(job_id)).stdout)["payload"]
    assert (payload["watershed"], payload["agglomeration"]) == (str((tmp_path / "seg").resolve()), str((tmp_path / "mapping.csv").resolve()))
    worker = _worker(queue_server)
    try:
        ended = _ended(queue_server, job_id)
    finally:
        _stop(worker)
    assert ended["status"] == "done", ended
    assert (ended["result"]["name"], ended["result"]["n_objects"]) == ("queued_lab", 3)
    assert "queued_lab" in queue_server.cli("datastack", "list").stdout


# -- uploads ------------------------------------------------------------------------------------------
def test_uploads_are_imported_by_a_worker(queue_server, client, token, rows, tmp_path):
    headers = {"Authorization": f"Bearer {token}"}

    def upload(table: str, body: bytes, file_name: str, **params) -> requests.Response:
        url = f"{queue_server.url}/annotation/api/v2/aligned_volume/{DS}/table/{table}/import"
        query = {"schema": "synapse", "file_name": file_name, "description": "Uploaded.", "voxel_resolution": "4,4,40", **params}
        return requests.post(url, params=query, data=body, headers=headers, timeout=120)

    good = write(rows, tmp_path / "good.csv").read_bytes()
    bad = write(with_bad_rows(rows), tmp_path / "bad_upload.csv").read_bytes()
    # no worker yet: accepted with the job to follow once wait_s has passed
    waiting = upload("uploaded_rows", good, "good.csv", wait_s=0.2)
    assert waiting.status_code == 202, waiting.text
    job = waiting.json()["job"]
    assert (job["kind"], job["status"], job["submitted_by"] is not None) == ("import.table", "queued", True)
    assert f"/jobs/api/v1/jobs/{job['id']}" in waiting.json()["message"] and str(queue_server.data_dir) not in waiting.text
    failing = upload("uploaded_rows", bad, "bad_upload.csv", wait_s=0)
    assert failing.status_code == 202, failing.text
    assert len(_uploads(queue_server)) == 2  # each body kept for its job
    followed = requests.get(f"{queue_server.url}/jobs/api/v1/jobs/{job['id']}", headers=headers, timeout=60)
    assert followed.status_code == 200 and followed.json()["status"] == "queued"

    worker = _worker(queue_server)
    try:
        done, failed = _ended(queue_server, job["id"]), _ended(queue_server, failing.json()["job"]["id"])
        assert done["status"] == "done", done
        assert (done["result"]["rows"], done["result"]["first_id"], done["result"]["created_table"]) == (ROWS, 1, True)
        assert failed["status"] == "failed" and failed["error"]["code"] == "invalid_rows", failed
        assert "bad_upload.csv, row 3, column size" in failed["error"]["message"] and "imports/" not in failed["error"]["message"]
        assert client.annotation.get_annotation_count("uploaded_rows") == ROWS
        assert _uploads(queue_server) == []

        # a worker running: the request waits for it and answers as before
        answer = upload("uploaded_rows", good, "good.csv")
        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert set(result) == {"aligned_volume", "table_name", "schema", "created_table", "rows", "skipped", "not_valid", "problems", "first_id", "last_id", "seconds"}
        assert (result["rows"], result["created_table"], result["first_id"], result["last_id"]) == (ROWS, False, ROWS + 1, 2 * ROWS)
        refused = upload("uploaded_rows", bad, "bad_upload.csv")
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_rows", refused.text
        assert "bad_upload.csv, row 3, column size" in refused.json()["message"] and "imports/" not in refused.json()["message"]
        never = upload("uploaded_never", bad, "bad_upload.csv")
        assert never.status_code == 400 and never.json()["error"] == "invalid_rows"
        unreadable = upload("uploaded_never", good, "good.parquet")
        assert unreadable.status_code == 400 and "good.parquet" in unreadable.json()["message"] and "imports/" not in unreadable.json()["message"]
    finally:
        _stop(worker)
    assert client.annotation.get_annotation_count("uploaded_rows") == 2 * ROWS
    assert "uploaded_never" not in _tables(client)
    assert _uploads(queue_server) == []


def test_permission_is_checked_in_the_request(queue_server, client, rows, tmp_path):
    """A refused upload never becomes a job (no worker is needed to refuse it)."""
    client.annotation.create_table("owned_by_admin", "synapse", "Someone else's table.", voxel_resolution=RESOLUTION)
    queue_server.cli("user", "add", "stranger-jobs@example.org")
    stranger = queue_server.new_token("stranger-jobs@example.org")
    url = f"{queue_server.url}/annotation/api/v2/aligned_volume/{DS}/table/owned_by_admin/import"
    before = queue_server.cli("jobs", "ls", "--kind", "import.table").stdout
    answer = requests.post(url, params={"schema": "synapse", "file_name": "rows.csv"}, data=write(rows, tmp_path / "rows.csv").read_bytes(),
                           headers={"Authorization": f"Bearer {stranger}"}, timeout=60)  # fmt: skip
    assert answer.status_code == 403 and answer.json()["error"] == "not_table_owner", answer.text
    assert queue_server.cli("jobs", "ls", "--kind", "import.table").stdout == before
    assert _uploads(queue_server) == []


# -- abandoned upload folders -----------------------------------------------------------------------
@pytest.fixture
def queue(backend, database_for, tmp_path):
    engine = create_store_engine(database_for(backend) or f"sqlite:///{tmp_path}/store.db")
    upgrade_schema(engine)
    yield JobQueue(engine)
    engine.dispose()


def test_upload_folders_no_job_names_are_removed_once_abandoned(queue, tmp_path):
    root = tmp_path / "uploads"
    folders = {name: root / name for name in ("abandoned", "queued", "fresh")}
    for folder in folders.values():
        (folder / "upload").mkdir(parents=True)
        (folder / "upload" / "rows.csv").write_text("a,b\n")
    old = time.time() - UPLOAD_GRACE_S - 60
    for name in ("abandoned", "queued"):
        for path in (folders[name], folders[name] / "upload", folders[name] / "upload" / "rows.csv"):
            os.utime(path, (old, old))
    job = queue.submit(IMPORT_TABLE, {"upload": {"folder": "queued", "file_name": "rows.csv"}})
    assert remove_abandoned_uploads(root, queue) == [folders["abandoned"]]
    assert folders["queued"].is_dir() and folders["fresh"].is_dir()
    queue.claim([IMPORT_TABLE], worker_name())
    assert remove_abandoned_uploads(root, queue) == []  # running: still its job's
    queue.fail(job.id, worker_name(), _gone())
    assert remove_abandoned_uploads(root, queue) == [folders["queued"]]
    assert remove_abandoned_uploads(root, queue, now=time.time() + UPLOAD_GRACE_S + 60) == [folders["fresh"]]
    assert list(root.iterdir()) == []


def _gone():
    from opencave.services.jobs import JobError

    return JobError("the process running it stopped", 500, "job_abandoned")


# -- opencave's client ----------------------------------------------------------------------------
def test_the_client_follows_an_import_answered_with_its_job(queue_server, client, rows, tmp_path, monkeypatch, capfd):
    """No worker yet, a tiny wait_s: the server answers 202 and the client follows the job (on
    the same server, with its session, silently) once a worker takes it: it returns the summary
    a 200 gives, or raises the job's error as an HTTPError with its status and code."""
    import concurrent.futures
    import threading

    from opencave.client import JobFailedError, jobs as client_jobs

    followed: dict[str, dict] = {}
    both_followed = threading.Event()
    follow = client_jobs.follow_job

    def spy(job, *args, **kwargs):
        followed[job["payload"]["table"]] = job
        if len(followed) == 2:
            both_followed.set()
        return follow(job, *args, **kwargs)

    monkeypatch.setattr(client_jobs, "follow_job", spy)
    good, bad = write(rows, tmp_path / "good.csv"), write(with_bad_rows(rows), tmp_path / "bad_upload.csv")
    common = {"schema": "synapse", "description": "Followed.", "voxel_resolution": RESOLUTION, "wait_s": 0.2, "poll_s": 0.2}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        imported = pool.submit(client.annotation.import_table, "followed_rows", good, **common)
        refused = pool.submit(client.annotation.import_table, "followed_bad", bad, **common)
        assert both_followed.wait(120), (imported, refused)  # both answered 202 while no worker runs
        assert {job["status"] for job in followed.values()} == {"queued"}
        worker = _worker(queue_server)
        try:
            result = imported.result(180)
            with pytest.raises(JobFailedError) as caught:
                refused.result(180)
        finally:
            _stop(worker)
    assert set(result) == {"aligned_volume", "table_name", "schema", "created_table", "rows", "skipped", "not_valid", "problems", "first_id", "last_id", "seconds"}
    assert (result["rows"], result["created_table"], result["first_id"], result["last_id"]) == (ROWS, True, 1, ROWS)
    assert client.annotation.get_annotation_count("followed_rows") == ROWS
    error = caught.value
    assert isinstance(error, requests.HTTPError) and (error.status_code, error.code) == (400, "invalid_rows")
    assert "bad_upload.csv, row 3, column size" in str(error) and "imports/" not in str(error)
    assert str(error).startswith(f"400 Client Error: job {followed['followed_bad']['id']} (import.table) failed:")
    assert error.job["status"] == "failed" and "followed_bad" not in _tables(client)
    assert "job " not in capfd.readouterr().err  # nothing shown unless asked
    assert _uploads(queue_server) == []
