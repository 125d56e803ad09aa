"""The moment a connectivity answer describes: a materialized version or a timestamp."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from opencave.errors import BadRequest, NotFound
from opencave.services.materialize.versions import Version
from opencave.wire.connectivity import format_time

if TYPE_CHECKING:
    from opencave.services.materialize.service import MaterializeService


@dataclass(frozen=True)
class At:
    """A version (its frozen files) or a timestamp (the live store, roots at that time)."""

    datastack: str
    version: Version | None
    timestamp: datetime

    @property
    def label(self) -> str:
        return f"version {self.version.version}" if self.version is not None else f"timestamp {format_time(self.timestamp)}"

    def meta(self) -> dict[str, Any]:
        return {"version": self.version.version if self.version is not None else None, "timestamp": format_time(self.timestamp)}


def resolve(
    materialize: "MaterializeService", aligned_volume_of: Callable[[str], str], datastack: str, version: int | None, timestamp: datetime | None
) -> At:
    """The moment asked for; neither a version nor a timestamp: the newest version, else now.
    ``aligned_volume_of`` (NotFound for unknown datastacks) is the caller's, which keeps it."""
    aligned_volume_of(datastack)
    if version is not None:
        found = materialize.registry.version(datastack, version, include_expired=True)
        if not found.valid:
            raise NotFound(f"Version {version} of {datastack} has expired; use a current version ({materialize.versions(datastack)}).", code="version_expired")
        return At(datastack, found, found.time_stamp)
    if timestamp is not None:
        if timestamp > datetime.now(timezone.utc):
            raise BadRequest(f"timestamp {format_time(timestamp)} is in the future; ask for a time up to now.", code="timestamp_in_future")
        return At(datastack, None, timestamp)
    versions = materialize.registry.list(datastack)
    if not versions:
        return At(datastack, None, datetime.now(timezone.utc))
    newest = max(versions, key=lambda v: v.version)
    return At(datastack, newest, newest.time_stamp)
