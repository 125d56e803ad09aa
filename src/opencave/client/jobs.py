"""Calls an opencave server may answer with a job: ``202 {"job": {…}, "message": …}`` when the
work outlasts the request's ``wait_s`` on a server whose jobs run in `opencave worker`
processes. The client then follows the job (``GET /jobs/api/v1/jobs/{id}`` on the same server,
with its session) and returns its result, the answer the call would have given, or raises
``JobFailedError`` with the job's error, so callers see the same outcome either way.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import requests

from ..wire.endpoints import JOBS
from .base import handle_response
from .errors import JobFailedError

ENDED = ("done", "failed", "cancelled")
FIRST_POLL_S = 0.25  # the first looks come sooner: a job answered 202 may end any moment
POLL_S = 2.0


def job_url(server_address: str, job_id: int) -> str:
    return JOBS.for_version(1)["job"].format(jobs_server_address=server_address, job_id=job_id)


def answer_or_job_result(
    response: requests.Response, session: requests.Session, server_address: str, poll_s: float = POLL_S, progress: bool = False
) -> Any:
    """The JSON answer of ``response`` (as ``handle_response`` gives it), or, for a 202 naming a
    job, that job's result once it has ended; see ``follow_job``."""
    body = handle_response(response)
    job = body.get("job") if response.status_code == 202 and isinstance(body, dict) else None
    if not isinstance(job, dict) or "id" not in job:
        return body
    return follow_job(job, session, server_address, poll_s=poll_s, progress=progress)


def follow_job(job: dict[str, Any], session: requests.Session, server_address: str, poll_s: float = POLL_S, progress: bool = False) -> Any:
    """Poll ``job`` (its JSON) until it ends, every ``poll_s`` seconds at most; its result if done.

    ``progress`` prints the job's progress to stderr as it changes (nothing is shown otherwise).
    Raises ``JobFailedError`` for a failed or cancelled job, and what ``handle_response``
    raises if following it fails (e.g. 404 once the job is no longer kept).
    """
    url = job_url(server_address, job["id"])
    delay = min(FIRST_POLL_S, poll_s)
    shown = None
    while True:
        if progress and job.get("progress") and job["progress"] != shown:
            shown = job["progress"]
            print(f"job {job['id']} ({job.get('kind')}): {shown}", file=sys.stderr, flush=True)
        if job.get("status") in ENDED:
            break
        time.sleep(delay)
        delay = min(delay * 1.5, poll_s)
        job = handle_response(session.get(url))
    if job["status"] == "done":
        return job.get("result")
    raise _failure(job, url)


def _failure(job: dict[str, Any], url: str) -> JobFailedError:
    """The error of an ended job as the call would have raised it (status, code, message)."""
    error = job.get("error") or {}
    if job["status"] == "cancelled":
        status, code, message = 409, error.get("code", "job_cancelled"), error.get("message", "The job was cancelled before it ran.")
    else:
        status, code, message = int(error.get("status") or 500), error.get("code", "job_failed"), error.get("message", "The job failed.")
    kind = "Client" if status < 500 else "Server"
    text = f"{status} {kind} Error: job {job['id']} ({job.get('kind')}) {job['status']}: {message} [{code}] for url: {url}"
    return JobFailedError(text, status_code=status, code=code, job=job)
