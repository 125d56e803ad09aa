"""Small file helpers for the client's JSON files under ``~/.cloudvolume/secrets``."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any


def atomic_write_json(path: str, data: Any, mode: int | None = None) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename.

    A crash or a full disk mid-write then leaves the old file intact instead of a truncated
    one, which matters for token files that other tools (cloud-volume, caveclient) also read.
    ``mode`` sets the permissions of the new file (e.g. 0o600 for secrets); by default an
    existing file keeps its permissions and a new one gets 0o644.
    """
    path = os.path.realpath(path)  # rewrite a symlinked file's target, not the link
    if mode is None:
        mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
