"""An optional schedule: create a version of every datastack at a fixed interval.

Runs in a daemon thread of the server. With several server processes over one database, each
schedule first checks the newest version's age, so versions are not created twice per period.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opencave.runtime import Runtime

log = logging.getLogger(__name__)


def due(runtime: "Runtime", datastack: str, every: timedelta, now: datetime) -> bool:
    versions = runtime.materializer.registry.list(datastack)
    return not versions or now - versions[-1].time_stamp >= every


def run_once(runtime: "Runtime", every: timedelta, expires_after_days: float | None) -> None:
    now = datetime.now(timezone.utc)
    for datastack in runtime.info.datastack_names():
        if not due(runtime, datastack, every, now):
            continue
        expires = now + timedelta(days=expires_after_days) if expires_after_days else None
        try:
            runtime.materializer.create_version(datastack, now, expires, progress=log.info)
        except Exception:  # one datastack's failure must not stop the others or the schedule
            log.exception("scheduled materialization of %s failed", datastack)
    runtime.materializer.expire(now)


def start_schedule(runtime: "Runtime", every_hours: float, expires_after_days: float | None) -> threading.Thread:
    every = timedelta(hours=every_hours)

    def loop() -> None:
        while True:
            run_once(runtime, every, expires_after_days)
            time.sleep(min(every.total_seconds(), 300))

    thread = threading.Thread(target=loop, name="materialize-schedule", daemon=True)
    thread.start()
    return thread
