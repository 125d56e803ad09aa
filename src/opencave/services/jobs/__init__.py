"""Work off the request path: a job queue in the live store and the runners that claim from it."""

from opencave.services.jobs.queue import Job, JobError, JobQueue
from opencave.services.jobs.runner import JobKind, JobRunner

__all__ = ["Job", "JobError", "JobKind", "JobQueue", "JobRunner"]
