"""Versions hold exactly the rows alive at their moment, on SQLite and PostgreSQL: a write
stamped before the moment but still committing when the version is built is waited for, and a
version made at a past moment holds the tables that existed then, even if deleted since."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

import opencave.services.annotation.service as annotation_service
from opencave.demo.registration import DEMO_DATASTACK
from tests.test_annotation_service import AV, OWNER, make, runtime, synapse, volume, voxels  # noqa: F401 (fixtures)


def _frozen_ids(version, table: str) -> list[int]:
    return pq.read_table(Path(version.location) / f"{table}.parquet").column("id").to_pylist()


def test_a_write_stamped_before_a_version_is_waited_for(runtime, voxels, monkeypatch):
    svc = runtime.annotations
    name = make(svc)
    inside = voxels[0]
    stamped, release = threading.Event(), threading.Event()
    original = annotation_service.existing_ids

    def slow_insert(conn, rows, ids):  # runs under the table lock, after the write is stamped
        stamped.set()
        release.wait(20)
        return original(conn, rows, ids)

    monkeypatch.setattr(annotation_service, "existing_ids", slow_insert)
    inserted: list[int] = []
    writer = threading.Thread(target=lambda: inserted.extend(svc.insert(AV, name, [synapse(inside[0], inside[1])])))
    writer.start()
    assert stamped.wait(20)
    threading.Timer(0.5, release.set).start()  # the insert commits while the version is being made
    version = runtime.materializer.create_version(DEMO_DATASTACK)
    writer.join(20)
    assert inserted and _frozen_ids(version, name) == inserted


def test_a_version_at_a_past_moment_holds_tables_deleted_since(runtime, voxels):
    svc = runtime.annotations
    name = make(svc)
    inside = voxels[0]
    ids = svc.insert(AV, name, [synapse(inside[2], inside[3]), synapse(inside[4], inside[5])])
    time.sleep(0.01)
    moment = datetime.now(UTC)
    time.sleep(0.01)
    svc.delete_table(AV, name, OWNER)
    past = runtime.materializer.create_version(DEMO_DATASTACK, timestamp=moment)
    assert _frozen_ids(past, name) == ids
    now = runtime.materializer.create_version(DEMO_DATASTACK)
    assert not (Path(now.location) / f"{name}.parquet").exists()
