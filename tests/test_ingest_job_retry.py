"""An ``ingest.segmentation`` job started again after its process died once the datastack was
registered (but before the job was marked done) ends with that ingest's result, on SQLite and
PostgreSQL; a datastack of the same name registered by anything else still fails the job."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from opencave.config import resolve_settings
from opencave.errors import Conflict
from opencave.runtime import Runtime
from opencave.services.ingest.service import IngestRequest
from opencave.services.jobs.kinds import INGEST_SEGMENTATION
from opencave.services.jobs.queue import STALE_AFTER
from tests.support.segmentations import flat_segmentation, registered, write_layer

LABELS = np.arange(1, 7, dtype=np.uint64) * 1000
CHUNKS = (16, 16, 8)
ELSEWHERE = "another-host:4242:boot-1:0123456789ab"  # the worker of the first start, on another host


@pytest.fixture(scope="module")
def runtime(backend, database_for, tmp_path_factory):
    """A store on each engine whose process runs no job threads (``run_one`` runs them here)."""
    opened = Runtime.open(resolve_settings(str(tmp_path_factory.mktemp(f"ingest-retry-{backend}") / "data"), database_for(backend)))
    opened.prepare()
    yield opened
    opened.engine.dispose()


@pytest.fixture(scope="module")
def watershed(tmp_path_factory) -> str:
    return write_layer(tmp_path_factory.mktemp("retry-seg") / "seg", flat_segmentation((24, 24, 16), LABELS, seed=5))


def _request(name: str, watershed: str, run_id: str | None) -> IngestRequest:
    return IngestRequest(name=name, watershed=watershed, chunk_size=CHUNKS, grant=("default",), run_id=run_id)


def _crashed_after_registering(runtime: Runtime, payload: dict) -> int:
    """Queue the job, let a worker elsewhere start it and register everything, then die."""
    job = runtime.jobs.submit(INGEST_SEGMENTATION, payload)
    claimed = runtime.jobs.claim([INGEST_SEGMENTATION], ELSEWHERE)
    assert claimed is not None and claimed.id == job.id
    runtime.ingest.ingest(IngestRequest.from_json(claimed.payload), bars=False)  # the first start's work, all of it
    later = datetime.now(timezone.utc) + STALE_AFTER + timedelta(minutes=1)  # its heartbeat has stopped since
    assert runtime.jobs.requeue_abandoned(now=later) == [job.id]
    assert runtime.jobs.get(job.id).status == "queued"
    return job.id


def test_a_job_started_again_after_registering_finishes(runtime, watershed):
    name = "retried_lab"
    job_id = _crashed_after_registering(runtime, _request(name, watershed, "run-1").to_json())
    ended = runtime.job_runner.run_one()
    assert ended is not None and ended.id == job_id
    assert ended.status == "done" and ended.attempts == 2, ended
    assert (ended.result["name"], ended.result["n_objects"], ended.result["resumed"]) == (name, LABELS.size, True)
    assert all(registered(runtime, runtime.settings.data_dir, name)[part] for part in ("datastack", "aligned_volume", "chunkedgraph", "dataset", "world"))
    assert len(runtime.materializer.registry.list(name, include_expired=True)) == 1  # no second version

    # another job (same inputs, its own run) and a direct ingest still find the name taken
    other = runtime.jobs.submit(INGEST_SEGMENTATION, _request(name, watershed, "run-2").to_json())
    refused = runtime.job_runner.run_one()
    assert refused is not None and refused.id == other.id
    assert refused.status == "failed" and refused.error.code == "datastack_exists", refused
    assert f"Datastack {name} exists already" in refused.error.message
    with pytest.raises(Conflict, match=f"Datastack {name} exists already"):
        runtime.ingest.ingest(_request(name, watershed, None), bars=False)


def test_a_datastack_of_another_ingest_is_not_taken_for_its_own(runtime, watershed, tmp_path):
    """The world under the name was made from other inputs: the job fails, nothing changes."""
    name = "taken_lab"
    runtime.ingest.ingest(_request(name, watershed, "first"), bars=False)
    other_volume = write_layer(tmp_path / "seg", flat_segmentation((24, 24, 16), LABELS[:3], seed=6))
    job = runtime.jobs.submit(INGEST_SEGMENTATION, _request(name, other_volume, "first").to_json())  # even with its token
    ended = runtime.job_runner.run_one()
    assert ended is not None and ended.id == job.id
    assert ended.status == "failed" and ended.error.code == "datastack_exists", ended
    world = (runtime.settings.data_dir / "worlds" / name / "world.json").read_text()
    assert '"run_id": "first"' in world and watershed.split("://")[-1] in world
