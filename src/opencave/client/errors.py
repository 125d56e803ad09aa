"""Exceptions raised by the client.

The first three keep caveclient's names so that ``except`` clauses written for caveclient keep
working after the import is changed; the rest are opencave's own.
"""

from __future__ import annotations

import textwrap
from typing import Any

import requests


class GlobalClientError(Exception):
    """A datastack-bound service was used on a client made without a datastack."""


class AuthException(Exception):
    """An API call was redirected, which CAVE servers do only to send a browser to a login page."""


class ServerIncompatibilityError(Exception):
    """The server's software or API version is too old (or too new) for the requested feature."""

    def __init__(self, message: str):
        # Messages name methods, constraints and versions; wrapping keeps them readable in a
        # notebook traceback, as caveclient does.
        super().__init__(textwrap.fill(message, width=80))


class TokenFileError(ValueError):
    """A token file exists but cannot be used (not JSON, or not a JSON object)."""


class LockfileError(Exception):
    """A lockfile cannot be written or replayed: a call is not in it (or not replayable from
    it), its content is missing or corrupt, or a replaying client was asked to reach a server."""


class JobFailedError(requests.HTTPError):
    """A job the server accepted with a 202 failed or was cancelled (opencave servers only).

    Caught by ``except requests.HTTPError`` like the error the call would have raised had the
    server answered it directly; ``status_code`` and ``code`` are that answer's HTTP status and
    error code (e.g. 400 ``invalid_rows``), ``job`` the job as ``GET /jobs/api/v1/jobs/{id}``
    last showed it. ``response`` is None: no response carried the failure.
    """

    def __init__(self, message: str, *, status_code: int, code: str, job: dict[str, Any]):
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.job = job
