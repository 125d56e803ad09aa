"""The kinds of queued work and the service call each one makes.

Arguments are JSON (what any process can read back from the queue); times are ISO 8601 in UTC.
Each handler only calls a domain service, so a job does exactly what the same command run
directly would do.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from opencave.services.ingest.service import IngestRequest
from opencave.services.jobs.runner import JobKind, Progress
from opencave.services.meshing.service import REMESH_JOB
from opencave.services.skeleton.service import GENERATE_JOB
from opencave.services.transfer.table_import_job import IMPORT_TABLE, run_import

if TYPE_CHECKING:
    from opencave.runtime import Runtime

CREATE_VERSION = "materialize.version"
IMPORT_VERSION = "import.version"
INGEST_SEGMENTATION = "ingest.segmentation"


def moment_text(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _moment(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def job_kinds(runtime: "Runtime") -> list[JobKind]:
    """Every kind of job, bound to ``runtime``'s services."""

    def create_version(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
        version = runtime.materializer.create_version(
            payload["datastack"], _moment(payload.get("timestamp")), _moment(payload.get("expires_on")), progress=progress
        )
        return version.to_json()

    def import_version(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
        options = dict(payload["options"])
        options["timestamp"] = _moment(options.get("timestamp"))
        version = runtime.imports.import_version(payload["datastack"], payload["source"], progress=progress, **options)
        return version.to_json()

    def import_table(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
        return run_import(runtime.table_imports, payload, progress)

    def ingest_segmentation(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
        return runtime.ingest.ingest(IngestRequest.from_json(payload), progress=progress, bars=False).to_json()

    def generate_skeletons(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
        return runtime.skeletons.generate(payload["datastack"], [int(r) for r in payload["root_ids"]], progress)

    def remesh(payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
        return runtime.meshes.remesh(payload["table_id"], [int(i) for i in payload["l2_ids"]])

    return [
        JobKind(CREATE_VERSION, create_version, "freeze a datastack's tables as a new materialized version"),
        JobKind(IMPORT_VERSION, import_version, "import a released version (a version package or CAVE static export)"),
        JobKind(IMPORT_TABLE, import_table, "import rows of files or an upload into a live annotation table"),
        JobKind(INGEST_SEGMENTATION, ingest_segmentation, "ingest a lab's segmentation as a new datastack"),
        JobKind(GENERATE_JOB, generate_skeletons, "make skeletons asked for asynchronously"),
        JobKind(REMESH_JOB, remesh, "mesh the L2 nodes of a remesh request"),
    ]
