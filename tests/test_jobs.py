"""The job queue and its runners, on SQLite and PostgreSQL: claims are exclusive under
concurrency, keys keep one active job, abandoned jobs are taken up again, failures keep their
domain error, and `opencave worker` processes share the queue of a server's store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests
from sqlalchemy import update

from opencave.errors import BadRequest, Conflict, NotFound, OpencaveError
from opencave.services.jobs import JobKind, JobQueue, JobRunner
from opencave.services.jobs.queue import MAX_ATTEMPTS, STALE_AFTER
from opencave.services.materialize.versions import worker_name
from opencave.storage.sql import create_store_engine, upgrade_schema
from opencave.storage.tables import jobs as jobs_table


@pytest.fixture(params=["sqlite", "postgresql"])
def queue(request, tmp_path, database_for):
    url = database_for(request.param) or f"sqlite:///{tmp_path}/store.db"
    engine = create_store_engine(url)
    upgrade_schema(engine)
    yield JobQueue(engine)
    engine.dispose()


def test_claims_follow_priority_then_age_and_record_the_outcome(queue):
    low = queue.submit("a", {"n": 1})
    high = queue.submit("a", {"n": 2}, priority=5)
    other = queue.submit("b", {"n": 3}, priority=9)
    me = worker_name()
    first = queue.claim(["a"], me)
    assert (first.id, first.status, first.attempts, first.worker) == (high.id, "running", 1, me)
    assert queue.claim(["a"], me).id == low.id
    assert queue.claim(["a"], me) is None  # b is not asked for
    assert queue.finish(high.id, me, {"ok": True})
    assert queue.fail(low.id, me, _error("table_gone"))
    done, failed = queue.get(high.id), queue.get(low.id)
    assert (done.status, done.result, done.finished is not None) == ("done", {"ok": True}, True)
    assert (failed.status, failed.error.code, failed.error.status) == ("failed", "table_gone", 400)
    assert queue.get(other.id).status == "queued"
    assert [j.id for j in queue.list()] == [other.id, high.id, low.id]
    assert queue.counts() == {"queued": 1, "done": 1, "failed": 1}


def _error(code: str):
    from opencave.services.jobs import JobError

    return JobError.of(BadRequest("the table is gone", code=code))


def test_a_failed_job_raises_its_domain_error_again(queue):
    job = queue.submit("a", {})
    me = worker_name()
    queue.claim(["a"], me)
    queue.fail(job.id, me, _error("table_gone"))
    with pytest.raises(OpencaveError) as raised:
        queue.get(job.id).error.raise_()
    assert (raised.value.status, raised.value.code, raised.value.message) == (400, "table_gone", "the table is gone")


def test_concurrent_claimers_never_share_a_job(queue):
    submitted = [queue.submit("a", {"n": n}).id for n in range(60)]
    claimed: list[int] = []
    lock = threading.Lock()

    def claim_all() -> None:
        while (job := queue.claim(["a"], worker_name())) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=claim_all) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == submitted


def test_a_key_keeps_one_active_job(queue):
    first = queue.submit("a", {"n": 1}, key="version:x")
    again = queue.submit("a", {"n": 2}, key="version:x")
    assert again.id == first.id and again.payload == {"n": 1}
    me = worker_name()
    queue.claim(["a"], me)
    assert queue.submit("a", {"n": 3}, key="version:x").id == first.id  # running is active too
    queue.finish(first.id, me)
    fresh = queue.submit("a", {"n": 4}, key="version:x")
    assert fresh.id != first.id and fresh.status == "queued"


def test_only_queued_jobs_are_cancelled(queue):
    job = queue.submit("a", {})
    assert queue.cancel(job.id).status == "cancelled"
    assert queue.claim(["a"], worker_name()) is None
    running = queue.submit("a", {})
    queue.claim(["a"], worker_name())
    with pytest.raises(Conflict):
        queue.cancel(running.id)
    with pytest.raises(NotFound):
        queue.get(10**9)


def test_jobs_of_stopped_processes_are_queued_again_then_given_up(queue):
    job = queue.submit("a", {})
    elsewhere = "another-host:4242:?:abcdef"  # not this host: only its heartbeat tells
    for attempt in range(1, MAX_ATTEMPTS + 1):
        claimed = queue.claim(["a"], elsewhere)
        assert claimed.attempts == attempt
        assert queue.requeue_abandoned() == []  # its heartbeat is fresh: still running
        old = datetime.now(timezone.utc) - STALE_AFTER - timedelta(seconds=5)
        with queue.engine.begin() as conn:
            conn.execute(update(jobs_table).where(jobs_table.c.id == job.id).values(heartbeat=old))
        assert queue.requeue_abandoned() == [job.id]
        assert not queue.heartbeat(job.id, elsewhere)  # the old claimer no longer holds it
    given_up = queue.get(job.id)
    assert (given_up.status, given_up.error.code) == ("failed", "job_abandoned")


def test_work_a_caller_waits_on_is_discarded_with_its_process_unless_kept(queue):
    """One start for a command's own job: killed, it fails instead of running behind the
    caller's back; once the caller was told it is accepted (``keep``), it is taken up again."""
    elsewhere = "another-host:4242:?:abcdef"
    old = datetime.now(timezone.utc) - STALE_AFTER - timedelta(seconds=5)
    waited, kept = queue.submit("a", {}, attempts=1), queue.submit("a", {}, attempts=1)
    queue.keep(kept.id)
    assert [queue.claim(["a"], elsewhere).id for _ in range(2)] == [waited.id, kept.id]
    with queue.engine.begin() as conn:
        conn.execute(update(jobs_table).values(heartbeat=old))
    assert sorted(queue.requeue_abandoned()) == sorted([waited.id, kept.id])
    assert (queue.get(waited.id).status, queue.get(waited.id).error.code) == ("failed", "job_abandoned")
    assert queue.get(kept.id).status == "queued"


def test_a_job_of_a_dead_process_on_this_host_is_queued_again_at_once(queue):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = _start_of(child.pid)
    finally:
        child.kill()
        child.wait()
    job = queue.submit("a", {})
    dead = f"{os.uname().nodename}:{child.pid}:{start}:0123456789ab"
    queue.claim(["a"], dead)
    assert queue.requeue_abandoned() == [job.id]
    assert queue.get(job.id).status == "queued"


def _start_of(pid: int) -> str:
    from opencave.services.materialize import versions

    return versions._process_start(pid)


def test_runner_threads_run_jobs_and_keep_failures(queue):
    ran: list[int] = []

    def square(payload, progress):
        progress(f"squaring {payload['n']}")
        ran.append(payload["n"])
        return {"square": payload["n"] ** 2}

    def refuse(payload, progress):
        raise BadRequest("no such datastack", code="unknown_datastack")

    runner = JobRunner(queue, [JobKind("square", square, ""), JobKind("refuse", refuse, "")], threads=2)
    ids = [queue.submit("square", {"n": n}).id for n in range(8)]
    bad = queue.submit("refuse", {}).id
    runner.start()
    try:
        ended = [runner.wait(job_id, timeout=30) for job_id in ids + [bad]]
    finally:
        runner.stop()
    assert [job.result for job in ended[:-1]] == [{"square": n * n} for n in range(8)]
    assert sorted(ran) == list(range(8))
    assert (ended[-1].status, ended[-1].error.code, ended[-1].error.status) == ("failed", "unknown_datastack", 400)


def test_run_here_runs_the_job_in_the_calling_thread_with_its_progress(queue):
    seen: list[str] = []
    thread_of: list[str] = []

    def work(payload, progress):
        thread_of.append(threading.current_thread().name)
        assert queue.claim(["work"], "another-host:1:?:abcdef") is None  # never claimable
        progress("half way")
        return "ok"

    runner = JobRunner(queue, [JobKind("work", work, "")], threads=0)
    job = runner.run_here("work", {}, progress=seen.append)
    assert (job.status, job.result, job.attempts, job.max_attempts) == ("done", "ok", 1, 1)
    assert (seen, thread_of) == (["half way"], [threading.current_thread().name])


def test_a_runner_refuses_unknown_kinds(queue):
    with pytest.raises(ValueError, match="unknown job kinds"):
        JobRunner(queue, [], only=["nothing"])


# -- processes over one store ------------------------------------------------------------------------
def _worker(server, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "opencave", "worker", *args, *server.storage_args()],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def _job_json(server, job_id: int) -> dict:
    return json.loads(server.cli("jobs", "show", str(job_id)).stdout)


@pytest.fixture(scope="module")
def queue_server(backend, server_factory):
    """A server that runs no jobs itself: only `opencave worker` processes do."""
    return server_factory(backend, "--job-threads", "0")


def test_a_version_asked_over_http_is_built_by_a_worker(queue_server):
    server = queue_server
    token = server.new_token()
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{server.url}/materialize/api/v2/materialize/run/create_frozen/datastack/opencave_demo"
    before = requests.get(f"{server.url}/materialize/api/v2/datastack/opencave_demo/versions", headers=headers).json()
    answer = requests.post(url, params={"wait_s": 0.5}, headers=headers, json={})
    assert answer.status_code == 202, answer.text
    job = answer.json()["job"]
    assert (job["kind"], job["status"]) == ("materialize.version", "queued")
    followed = requests.get(f"{server.url}/jobs/api/v1/jobs/{job['id']}", headers=headers)
    assert followed.status_code == 200 and followed.json()["status"] == "queued"
    worker = _worker(server)
    try:
        ended = _wait_for(lambda: (j := _job_json(server, job["id"]))["status"] in ("done", "failed") and j, 180, "the version job")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    assert ended["status"] == "done", ended
    after = requests.get(f"{server.url}/materialize/api/v2/datastack/opencave_demo/versions", headers=headers).json()
    assert sorted(after) == sorted(before + [ended["result"]["version"]])
    # errors come back as the domain error, through the queue
    late = requests.post(url, params={"wait_s": 0}, headers=headers, json={"timestamp": "2999-01-01T00:00:00"})
    assert late.status_code == 202
    worker = _worker(server)
    try:
        failed = _wait_for(lambda: (j := _job_json(server, late.json()["job"]["id"]))["status"] in ("done", "failed") and j, 120, "the failing job")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    assert failed["error"]["code"] == "timestamp_in_future"


def test_a_killed_worker_loses_no_job(queue_server):
    """A worker killed mid-build: the job is queued again and built by the next worker, the
    killed one's unfinished version is discarded, and exactly one new version is published."""
    server = queue_server
    store = JobQueue(create_store_engine(server.database or f"sqlite:///{server.data_dir / 'opencave.db'}"))
    before = server.cli("materialize", "list", "opencave_demo").stdout.count("AVAILABLE")
    queued = server.cli("materialize", "create", "opencave_demo", "--queue").stdout
    job_id = int(queued.split()[2])
    first = _worker(server)
    try:
        _wait_for(lambda: store.get(job_id).status != "queued", 120, "the first worker's claim")
    finally:
        first.kill()  # SIGKILL: no chance to clean up
        first.wait()
    assert store.get(job_id).status == "running"
    second = _worker(server)
    try:
        ended = _wait_for(lambda: (j := store.get(job_id)).done and j, 180, "the job's second run")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
        store.engine.dispose()
    assert (ended.status, ended.attempts) == ("done", 2), ended
    listing = server.cli("materialize", "list", "opencave_demo").stdout
    assert listing.count("AVAILABLE") == before + 1
    assert "RUNNING" not in listing
