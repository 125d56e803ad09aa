"""An optional schedule: create a version of every datastack at a fixed interval.

A periodic job of the runtime's background executor that queues a version job when one is due
(any process running jobs builds it). With several server processes over one database, each
schedule first checks the newest version's age, and a datastack has at most one scheduled
version queued or running (the job's key), so versions are not created twice per period.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from opencave.services.jobs.kinds import CREATE_VERSION, moment_text

if TYPE_CHECKING:
    from opencave.runtime import Runtime

log = logging.getLogger(__name__)
MAX_CHECK_INTERVAL_S = 300.0


def due(runtime: "Runtime", datastack: str, every: timedelta, now: datetime) -> bool:
    versions = runtime.materializer.registry.list(datastack)
    return not versions or now - versions[-1].time_stamp >= every


def run_once(runtime: "Runtime", every: timedelta, expires_after_days: float | None) -> None:
    now = datetime.now(timezone.utc)
    for datastack in runtime.info.datastack_names():
        if not due(runtime, datastack, every, now):
            continue
        expires = now + timedelta(days=expires_after_days) if expires_after_days else None
        payload = {"datastack": datastack, "timestamp": moment_text(now), "expires_on": moment_text(expires)}
        try:
            runtime.jobs.submit(CREATE_VERSION, payload, key=f"scheduled-version:{datastack}")
        except Exception:  # one datastack's failure must not stop the others or the schedule
            log.exception("queueing the scheduled version of %s failed", datastack)
    runtime.materializer.expire(now)


def schedule_versions(runtime: "Runtime", every_hours: float, expires_after_days: float | None) -> None:
    """Create versions every ``every_hours`` while the runtime's background work runs (looking
    at least every five minutes whether one is due)."""
    every = timedelta(hours=every_hours)
    runtime.background.every(
        "scheduled versions", min(every.total_seconds(), MAX_CHECK_INTERVAL_S), lambda: run_once(runtime, every, expires_after_days)
    )
