"""The test suite never writes in the user's home: what it watches there, and how.

``fingerprint(home)`` records every file (path, size, mtime and, for small files, a SHA-256)
under the directories that CAVE clients, cloud-volume and opencave write to by default.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

WATCHED = (".cloudvolume", ".cloudfiles", ".opencave")
HASHED_BYTES = 1 << 20  # larger files (a user's own opencave store) are compared by size and mtime

# Variables that would send clients, cloud-volume or opencave somewhere else than HOME; the
# suite removes them so that a user's settings neither leak into nor get written by the tests.
HOME_ENV_VARS = (
    "CLOUD_VOLUME_DIR",
    "CLOUD_VOLUME_CACHE_DIR",
    "CLOUD_FILES_DIR",
    "CLOUD_FILES_LOCK_DIR",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    *(name for name in os.environ if name.startswith("OPENCAVE_")),
)


@dataclass(frozen=True)
class Fingerprint:
    files: dict[str, tuple]

    def diff(self, before: "Fingerprint") -> list[str]:
        """What changed since ``before``: ``+path`` added, ``-path`` removed, ``~path`` modified."""
        added = [f"+{p}" for p in self.files.keys() - before.files.keys()]
        removed = [f"-{p}" for p in before.files.keys() - self.files.keys()]
        modified = [f"~{p}" for p in self.files.keys() & before.files.keys() if self.files[p] != before.files[p]]
        return sorted(added + removed + modified)


def fingerprint(home: str) -> Fingerprint:
    files: dict[str, tuple] = {}
    for name in WATCHED:
        top = os.path.join(home, name)
        if os.path.lexists(top):
            files[top] = ("dir" if os.path.isdir(top) else "file",)
        for directory, subdirs, names in os.walk(top):
            for entry in subdirs:
                files[os.path.join(directory, entry)] = ("dir",)
            for entry in names:
                path = os.path.join(directory, entry)
                try:
                    stat = os.stat(path)
                except OSError:  # a dangling link
                    files[path] = ("missing",)
                    continue
                digest = _sha256(path) if stat.st_size <= HASHED_BYTES else None
                files[path] = (stat.st_size, stat.st_mtime_ns, digest)
    return Fingerprint(files)


def _sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None
