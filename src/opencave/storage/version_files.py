"""Where frozen versions' files live: a local directory, or any fsspec URL with a local cache.

A version's ``location`` (``mat_versions.location``) is either a plain directory path, whose
files are used in place exactly as written, or the URL of its prefix on object storage
(``s3://bucket/prefix/<datastack>/v<N>``, ``gs://…``, any fsspec protocol). For a remote
location:

- builders write into a local *staging* directory under the data directory; its files are
  uploaded (``publish_directory``) before the version is published, so a published version's
  files are all there;
- readers get a local file from ``local_path``: a read-through cache under
  ``<data_dir>/version-cache`` of bounded size, least recently used files evicted first.
  Version files never change once written, so any process may download one at the same time
  (to a temporary name, then renamed) and a cached copy is never stale. An evicted file that
  DuckDB still has open stays readable (POSIX);
- files made later (clustered copies, connections files) are written locally and ``put``:
  uploaded, then moved into the cache, so every process sees them through ``exists``.

Credentials come from the storage library's usual environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for s3fs; ``GOOGLE_APPLICATION_CREDENTIALS`` for
gcsfs); nothing here reads or logs them.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import threading
import time
from functools import cache
from pathlib import Path
from typing import Any

from opencave.errors import BadRequest, OpencaveError

log = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 20 * 1024**3
LISTING_TTL = 15.0  # seconds a remote directory listing answers ``exists`` before it is re-read
# Files used this recently are evicted last and never below the bound: a query names its files
# (table, clustered copy) a moment before DuckDB opens them, so they must survive that moment.
HOLD_SECONDS = 5.0
_PARTIAL = ".partial-"
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def parse_size(text: str | int) -> int:
    """Bytes from ``20GiB``, ``500MB``, ``1.5G`` or a plain number (ValueError saying the form)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size; write a number of bytes or e.g. 500MB, 20GiB")
    return int(float(match.group(1)) * _UNITS[unit])


class VersionStorageUnavailable(OpencaveError):
    """The object storage holding versions could not be read or written (down, denied, gone)."""

    status, default_code = 503, "version_storage_unavailable"


def _unavailable(action: str, where: str, error: Exception) -> VersionStorageUnavailable:
    return VersionStorageUnavailable(
        f"Could not {action} {where} ({type(error).__name__}: {error}); check that the storage is reachable, "
        "the bucket exists and the credentials in the environment allow it."
    )


def is_remote(location: str) -> bool:
    """Whether a version location (or root) is a URL other than ``file://``."""
    return "://" in location and not location.startswith("file://")


def _plain(location: str) -> str:
    return location[len("file://") :] if location.startswith("file://") else location


@cache
def _filesystem(protocol: str) -> Any:
    import fsspec

    return fsspec.filesystem(protocol)


class VersionFiles:
    """The files of every version, local or remote (see the module's description)."""

    def __init__(self, root: str | Path, data_dir: Path, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        root = str(root)
        self.root = root.rstrip("/") if is_remote(root) else str(Path(os.path.expanduser(_plain(root))).resolve())
        self.data_dir = Path(data_dir)
        self.cache_dir = self.data_dir / "version-cache"
        self.staging_root = self.data_dir / "version-staging"
        self.cache_bytes = int(cache_bytes)
        self._listings: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()
        if self.remote:
            _check_protocol(self.root)
        if self.cache_dir.is_dir():  # the bound may have shrunk since the files were cached
            self._trim(keep=None)

    @property
    def remote(self) -> bool:
        """Whether new versions go to object storage."""
        return is_remote(self.root)

    # -- building -------------------------------------------------------------------------------
    def staging(self, location: str) -> Path:
        """The local directory a builder writes a version's files into: the version's own
        directory when local, a fresh directory under the data directory when remote."""
        if not is_remote(location):
            return Path(_plain(location))
        directory = self.staging_root / f"{_staging_stem(location)}-{secrets.token_hex(4)}"
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def publish_directory(self, location: str, staging: Path) -> None:
        """Upload every file of ``staging`` to ``location`` (nothing to do when local). The
        staged files then move into the cache, which is trimmed to its bound."""
        if not is_remote(location):
            return
        for path in sorted(p for p in Path(staging).iterdir() if p.is_file() and _PARTIAL not in p.name):
            try:
                self.put(location, path.name, path)
            except OSError as error:  # s3fs and gcsfs raise OSError subclasses for refusals
                raise _unavailable("upload the version's files to", location, error) from error
        shutil.rmtree(staging, ignore_errors=True)

    def scratch(self, location: str) -> Path:
        """A local directory for a file made later (then given to ``put``): beside the version's
        files when local (so ``put`` is a rename), under the data directory when remote."""
        if not is_remote(location):
            return Path(_plain(location))
        self.staging_root.mkdir(parents=True, exist_ok=True)
        return self.staging_root

    def put(self, location: str, name: str, local: Path) -> None:
        """Make ``local`` the version's file ``name``: renamed into place when local; when
        remote uploaded, then moved into the cache (the local file is consumed either way)."""
        if not is_remote(location):
            os.replace(local, Path(_plain(location)) / name)
            return
        fs = _filesystem(_protocol(location))
        fs.put_file(str(local), f"{location}/{name}")
        self._forget_listing(location)
        target = self._cached(location, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(local, target)
        self._trim(keep=target)

    def delete(self, location: str) -> None:
        """Remove a version's files (and, when remote, its cached copies); quietly if gone."""
        if not is_remote(location):
            shutil.rmtree(_plain(location), ignore_errors=True)
            return
        fs = _filesystem(_protocol(location))
        self._forget_listing(location)
        try:
            if fs.exists(location):
                fs.rm(location, recursive=True)
        except FileNotFoundError:
            pass
        self._forget_listing(location)
        shutil.rmtree(self.cache_dir / _cache_key(location), ignore_errors=True)

    def remove_staging(self, location: str) -> None:
        """Remove the staging directories of a remote version (its builder failed or died)."""
        if is_remote(location) and self.staging_root.is_dir():
            for directory in self.staging_root.glob(f"{_staging_stem(location)}-*"):
                shutil.rmtree(directory, ignore_errors=True)

    # -- reading --------------------------------------------------------------------------------
    def local_path(self, location: str, file: str) -> Path:
        """A local path holding the version's ``file`` (downloaded into the cache if needed;
        FileNotFoundError when the version has no such file)."""
        if not is_remote(location):
            return Path(_plain(location)) / file
        target = self._cached(location, file)
        try:
            os.utime(target)  # the least recently used files are evicted first
            return target
        except FileNotFoundError:
            pass
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}{_PARTIAL}{os.getpid()}-{secrets.token_hex(4)}")
        try:
            _filesystem(_protocol(location)).get_file(f"{location}/{file}", str(partial))
            os.replace(partial, target)
        except FileNotFoundError:
            raise
        except OSError as error:
            if error.errno is not None and error.filename is not None:
                raise  # the local disk (full, read-only): answered as such by storage/faults.py
            raise _unavailable("read", f"{location}/{file}", error) from error
        finally:
            partial.unlink(missing_ok=True)
        self._trim(keep=target)
        return target

    def exists(self, location: str, file: str) -> bool:
        """Whether the version has ``file``. Remote: from a listing re-read every
        ``LISTING_TTL`` seconds, so a copy another process uploads is seen soon after."""
        if not is_remote(location):
            return (Path(_plain(location)) / file).exists()
        if self._cached(location, file).exists():
            return True
        return file in self._listing(location)

    # -- the cache ------------------------------------------------------------------------------
    def _cached(self, location: str, file: str) -> Path:
        return self.cache_dir / _cache_key(location) / file

    def _listing(self, location: str) -> frozenset[str]:
        now = time.monotonic()
        with self._lock:
            found = self._listings.get(location)
        if found is not None and now - found[0] < LISTING_TTL:
            return found[1]
        fs = _filesystem(_protocol(location))
        try:
            names = frozenset(Path(p).name for p in fs.ls(location, detail=False, refresh=True))
        except FileNotFoundError:
            names = frozenset()
        with self._lock:
            self._listings[location] = (now, names)
        return names

    def _forget_listing(self, location: str) -> None:
        with self._lock:
            self._listings.pop(location, None)
        _filesystem(_protocol(location)).invalidate_cache(location)

    def cache_size(self) -> int:
        """Bytes of complete files in the cache."""
        return sum(size for _, size, _ in _cache_files(self.cache_dir))

    def _trim(self, keep: Path | None) -> None:
        """Evict the least recently used files until the cache fits its bound. ``keep`` (the
        file just fetched) and the files used in the last ``HOLD_SECONDS`` stay, even when
        they alone are larger."""
        files = _cache_files(self.cache_dir)
        total = sum(size for _, size, _ in files)
        recent = time.time() - HOLD_SECONDS
        for path, size, used in sorted(files, key=lambda item: item[2]):
            if total <= self.cache_bytes or used > recent:
                break
            if path == keep:
                continue
            path.unlink(missing_ok=True)
            total -= size


def _cache_files(directory: Path) -> list[tuple[Path, int, float]]:
    """(path, size, last use) of every complete file under ``directory``."""
    out = []
    for folder, _, names in os.walk(directory):
        for name in names:
            if _PARTIAL in name:
                continue
            path = Path(folder) / name
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            out.append((path, stat.st_size, stat.st_mtime))
    return out


def _check_protocol(root: str) -> None:
    """A clear refusal for a URL whose storage library is missing or unknown."""
    import fsspec

    try:
        fsspec.get_filesystem_class(_protocol(root))
    except (ImportError, ValueError) as error:
        extra = {"s3": " (pip install opencave[s3])", "gs": " (pip install opencave[gcs])", "gcs": " (pip install opencave[gcs])"}
        raise BadRequest(
            f"--versions-url {root} cannot be used: {error}{extra.get(_protocol(root), '')}", code="versions_url_unusable"
        ) from None


def _protocol(location: str) -> str:
    return location.split("://", 1)[0]


def _staging_stem(location: str) -> str:
    return _cache_key(location).replace("/", "_")


def _cache_key(location: str) -> str:
    """A relative directory for a remote location: ``s3/bucket/prefix/ds/v1``."""
    protocol, rest = location.split("://", 1)
    parts = [p for p in rest.split("/") if p and p not in (".", "..")]
    return "/".join([protocol, *parts])


__all__ = ["DEFAULT_CACHE_BYTES", "VersionFiles", "VersionStorageUnavailable", "is_remote", "parse_size"]
