"""Lockfiles: what a client fetched, written by ``client.lock(path)`` and replayed offline by
``CAVEclient.from_lockfile(path)``.

A lockfile is JSON (sorted keys, indented) holding the server, the datastack, its info record,
the client's pinned version, and one entry per distinct query: the call as made, the version
or moment it resolved to, the content hash of its answer in the cache directory, its rows and
whether it was truncated. Replay needs the cache directory's content, not the server: a
replaying client builds its sub-clients without a request (recorded API and server versions,
sessions that refuse to send), answers each recorded call from the store after checking the
content hash, and raises ``LockfileError`` for anything else.
"""

from __future__ import annotations

import inspect
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import requests
from packaging.version import Version

from .. import __version__
from .auth import AuthClient
from .cache import QueryCache, QueryKey, Recorded, default_cache_dir, resolve_cache_dir
from .errors import LockfileError
from .session import TimeoutSession

FORMAT = 1


# -- writing ------------------------------------------------------------------------------------


def _entries(cache: QueryCache) -> list[dict[str, Any]]:
    """One entry per distinct (call, answer), in the order first made."""
    seen: dict[tuple[str, str | None], dict[str, Any]] = {}
    for record in cache.records:
        entry = record.as_json()
        if record.stored and record.hash is not None and not cache.store.has(record.hash):  # type: ignore[union-attr]
            entry.update(replayable=False, reason="its content was removed from the cache directory")
        seen.setdefault((record.call.digest, record.hash), entry)
    return list(seen.values())


def _services(client: Any) -> dict[str, Any]:
    """API and server versions of the sub-clients built so far, by class name: a replaying
    client builds its own with them, without asking a server."""
    from .framework import SERVICES

    services = {}
    for name in SERVICES:
        sub = getattr(client, f"_{name}", None)
        if sub is not None and hasattr(sub, "api_version"):
            server_version = getattr(sub, "server_version", None)
            services[_class_name(type(sub))] = {
                "api_version": sub.api_version,
                "server_version": None if server_version is None else str(server_version),
            }
    return services


def _class_name(cls: type) -> str:
    return cls.__name__.removeprefix("Offline")


def write_lockfile(client: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Write ``client``'s lockfile to ``path`` (see the module docstring); returns its content."""
    cache: QueryCache = client.query_cache
    if not cache.enabled:
        raise LockfileError(
            "client.lock needs the answers' content in a cache directory: make the client with "
            "CAVEclient(..., cache=True) (or cache='some/directory') and run the queries again"
        )
    datastack = client.datastack_name
    timestamp = getattr(client, "timestamp", None)
    content = {
        "opencave_lockfile": FORMAT,
        "opencave_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(),
        "server_address": cache.server,
        "datastack": datastack,
        "info": client.info.get_datastack_info() if datastack is not None else None,
        "client": {
            "version": getattr(client, "version", None),
            "timestamp": None if timestamp is None else timestamp.isoformat(),
            "desired_resolution": _plain_resolution(getattr(client, "desired_resolution", None)),
        },
        "services": _services(client),
        "cache_dir": str(cache.directory),
        "queries": _entries(cache),
    }
    text = json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False)
    Path(path).write_text(text + "\n", encoding="utf-8")
    return content


def _plain_resolution(resolution: Any) -> list[float] | None:
    return None if resolution is None else [float(x) for x in resolution]


def read_lockfile(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise LockfileError(f"cannot read the lockfile {path}: {error}") from error
    if not isinstance(content, dict) or content.get("opencave_lockfile") != FORMAT:
        raise LockfileError(f"{path} is not an opencave lockfile (format {FORMAT})")
    return content


# -- replaying ----------------------------------------------------------------------------------


def _describe(call: QueryKey) -> str:
    at = f"version {call.version}" if call.version is not None else (
        f"timestamp {call.timestamp}" if call.timestamp is not None else "the default version"
    )
    params = {k: v for k, v in call.params.items() if v is not None}
    return f"{call.service}.{call.method}({call.table!r}) of {call.datastack} at {at} with {json.dumps(params, sort_keys=True)}"


class ReplayCache(QueryCache):
    """Answers only the calls a lockfile recorded, from the store; never fetches."""

    def __init__(self, lockfile: dict[str, Any], path: str, directory: Path):
        super().__init__(lockfile["server_address"], directory)
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        for entry in lockfile["queries"]:  # a call recorded twice (default version moved): the last wins
            call = entry["call"]
            key = QueryKey(self.server, call["datastack"], call["service"], call["method"], call["table"],
                           call["version"], call["timestamp"], call["params"])
            self.entries[key.digest] = entry

    def _answer(self, call: QueryKey, fetch: Any) -> pd.DataFrame:
        entry = self.entries.get(call.digest)
        if entry is None:
            raise LockfileError(f"{_describe(call)} is not in the lockfile {self.path}; a replaying client answers only recorded calls")
        if not entry["replayable"]:
            raise LockfileError(
                f"{_describe(call)} is in the lockfile {self.path} but cannot be replayed: {entry.get('reason')}"
            )
        try:
            frame = self.store.read(entry["hash"], verify=True)  # type: ignore[union-attr]
        except ValueError as error:
            raise LockfileError(f"{_describe(call)}: {error}") from error
        if frame is None:
            raise LockfileError(
                f"{_describe(call)}: its answer {entry['hash'][:12]} is not in the cache directory {self.directory}"
            )
        resolved = entry["resolved"]
        self._record(Recorded(call, resolved["version"], resolved["timestamp"], entry["hash"], len(frame), False, True))
        return frame


class RefusingSession(TimeoutSession):
    """A session that sends nothing: a replaying client must not reach any server."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        raise LockfileError(
            f"this client replays a lockfile offline and makes no requests ({request.method} {request.url}); "
            "only the queries recorded in the lockfile can be answered"
        )


class OfflineAuthClient(AuthClient):
    def _get(self, endpoint: str, params: dict[str, Any] | None = None, **mapping: Any) -> Any:
        raise LockfileError(f"this client replays a lockfile offline and makes no requests (auth {endpoint})")


def offline_client(cls: type, recorded: dict[str, Any], **kwargs: Any) -> Any:
    """A ``cls`` sub-client built without a request, whose session refuses to send.

    The API version is the recorded one (else the newest the client knows), so nothing is
    negotiated; the server version is the recorded one instead of asked for.
    """
    if cls is AuthClient:
        return OfflineAuthClient(**kwargs)
    server_version = Version(recorded["server_version"]) if recorded.get("server_version") else None

    def _get_version(self: Any) -> Version | None:
        # Called at the end of construction, once the session exists: replace it first.
        self.session = RefusingSession(self.session.timeout)
        return server_version

    offline = type(f"Offline{cls.__name__}", (cls,), {"_get_version": _get_version})
    service = getattr(cls, "service", None)
    if "api_version" in inspect.signature(cls.__init__).parameters:
        api_version = recorded.get("api_version") or (max(service.versions) if service is not None else None)
        if api_version is not None:
            kwargs["api_version"] = api_version
    return offline(**kwargs)


def open_lockfile(path: str | os.PathLike[str], cache: bool | str | os.PathLike[str] | None = None) -> Any:
    """The replaying client of ``CAVEclient.from_lockfile`` (see there)."""
    from .framework import CAVEclientFull  # framework imports this module lazily

    lockfile = read_lockfile(path)
    if lockfile.get("datastack") is None or lockfile.get("info") is None:
        raise LockfileError(f"{path} records no datastack: only a datastack's client can be replayed")
    if cache is None:
        recorded = lockfile.get("cache_dir")
        directory = Path(recorded) if recorded and Path(recorded).is_dir() else default_cache_dir()
    else:
        directory = resolve_cache_dir(cache)
    if directory is None or not (directory / "index.sqlite").exists():
        raise LockfileError(f"no opencave cache in {directory}: give the directory holding the answers as cache=")

    class ReplayingClient(CAVEclientFull):
        """A ``CAVEclientFull`` that answers from a lockfile and never reaches a server."""

        def __init__(self) -> None:
            datastack = lockfile["datastack"]
            self._replay_services = lockfile.get("services", {})
            super().__init__(
                datastack_name=datastack,
                server_address=lockfile["server_address"],
                auth_token="offline-replay",
                info_cache={datastack: lockfile["info"]},
                desired_resolution=lockfile["client"].get("desired_resolution"),
            )
            self.query_cache = ReplayCache(lockfile, str(path), directory)
            pinned = lockfile["client"]
            self._version = pinned.get("version")
            self._timestamp = None if pinned.get("timestamp") is None else datetime.fromisoformat(pinned["timestamp"])

        def _make(self, cls: Any, **kwargs: Any) -> Any:
            return offline_client(cls, self._replay_services.get(_class_name(cls), {}), **kwargs)

        @property
        def version(self) -> int | None:
            return self._version

        @version.setter
        def version(self, version: int | None) -> None:
            if version is not None and version != lockfile["client"].get("version"):
                raise LockfileError(
                    f"this client replays {path}, recorded with version {lockfile['client'].get('version')}; "
                    "it cannot change version offline"
                )
            self._version = version

        def __repr__(self) -> str:
            return f"CAVEclient<datastack_name={self.datastack_name}, replaying={path}>"

    return ReplayingClient()


__all__ = ["LockfileError", "open_lockfile", "read_lockfile", "write_lockfile"]
