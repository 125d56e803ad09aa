"""The job queue over HTTP (``/jobs/api/v1``, opencave's own): follow the background work a
request started — a version being built, skeletons being made. Users see their own jobs;
superadmins see and cancel every job."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from opencave.errors import NotFound
from opencave.server.security import current_identity, runtime_of
from opencave.services.auth import Identity
from opencave.services.jobs import Job
from opencave.wire.endpoints import JOBS, route_path

router = APIRouter(tags=["jobs"])
V1 = JOBS.for_version(1)

JobId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the job's id (answered when the work was started)")]
Status = Literal["queued", "running", "done", "failed", "cancelled"]


def _visible(identity: Identity, job: Job) -> Job:
    """The job if the caller may see it; the same 404 as for a missing job otherwise."""
    if not identity.admin and job.submitted_by != str(identity.id):
        raise NotFound(f"There is no job {job.id} of yours.", code="job_not_found")
    return job


@router.get(route_path(V1["jobs"]))
async def list_jobs(
    request: Request,
    status: Annotated[Status | None, Query(description="only jobs in this state")] = None,
    kind: Annotated[str | None, Query(max_length=64, description="only jobs of this kind, e.g. materialize.version")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many, newest first")] = 100,
    identity: Identity = Depends(current_identity),
) -> list[dict]:
    """The caller's jobs (a superadmin's: everyone's), newest first."""
    runtime = runtime_of(request)
    mine = None if identity.admin else str(identity.id)
    found = await run_in_threadpool(runtime.jobs.list, status=status, kind=kind, submitted_by=mine, limit=limit)
    return [job.to_json() for job in found]


@router.get(route_path(V1["job"]))
async def get_job(job_id: JobId, request: Request, identity: Identity = Depends(current_identity)) -> dict:
    """A job's state, progress, and its result or error once it has ended."""
    job = await run_in_threadpool(runtime_of(request).jobs.get, job_id)
    return _visible(identity, job).to_json()


@router.post(route_path(V1["cancel"]))
async def cancel_job(job_id: JobId, request: Request, identity: Identity = Depends(current_identity)) -> dict:
    """Cancel a queued job (409 once it runs: its work is written whole or not at all anyway)."""
    runtime = runtime_of(request)
    _visible(identity, await run_in_threadpool(runtime.jobs.get, job_id))
    return (await run_in_threadpool(runtime.jobs.cancel, job_id)).to_json()
