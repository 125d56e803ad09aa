"""The datastack -> global-server cache, ``~/.cloudvolume/secrets/cave_datastack_to_server_map.json``.

It lets ``CAVEclient("my_datastack")`` find the server without ``server_address``. The file is
shared with caveclient (same name, a flat JSON object), so either library can fill it.
An unreadable cache is treated as empty, as caveclient does: it is only a convenience.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping

from ..wire.tokens import DATASTACK_CACHE_FILE
from .files import atomic_write_json

logger = logging.getLogger(__name__)


def _path(filename: str | None) -> str:
    return os.path.expanduser(filename or DATASTACK_CACHE_FILE)


def read_map(filename: str | None = None) -> dict[str, str]:
    """The cached mapping; ``{}`` if the file is missing or unreadable."""
    try:
        with open(_path(filename)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_writable(filename: str | None = None) -> bool:
    """Whether the cache file can be written (its directory is created if missing).

    Unlike caveclient, this does not create an empty cache file to find out.
    """
    path = _path(filename)
    if os.path.exists(path):
        return os.access(path, os.W_OK)
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK)


def write_map(data: Mapping[str, str], filename: str | None = None) -> bool:
    """Write the whole mapping; False (logged at debug level) if the file is not writable."""
    path = _path(filename)
    if not is_writable(filename):
        logger.debug(f"Did not write cache — file {path} is not writeable")
        return False
    try:
        atomic_write_json(path, dict(data))
    except OSError as err:
        logger.debug(f"Did not write cache — file {path}: {err}")
        return False
    return True


def handle_server_address(
    datastack: str | None,
    server_address: str | None,
    filename: str | None = None,
    write: bool = False,
    do_log: bool = True,
) -> str | None:
    """Resolve the server of a datastack.

    With both given, return ``server_address`` and (if ``write``) remember it for the datastack.
    Otherwise return the cached server for the datastack, or None.
    """
    data = read_map(filename)
    if server_address is None or datastack is None:
        return data.get(datastack) if datastack is not None else None
    if write and data.get(datastack) != server_address:
        data[datastack] = server_address
        if write_map(data, filename) and do_log:
            logger.warning(
                f"Updated datastack-to-server cache — '{server_address}' will now be used by default "
                f"for datastack '{datastack}'"
            )
    return server_address


def record_datastacks(datastacks: Iterable[str], server_address: str, filename: str | None = None) -> bool:
    """Remember ``server_address`` for many datastacks with a single write."""
    data = read_map(filename)
    changed = False
    for datastack in datastacks:
        if data.get(datastack) != server_address:
            data[datastack] = server_address
            changed = True
    return write_map(data, filename) if changed else True


def get_datastack_cache(filename: str | None = None) -> dict[str, str]:
    """The cached mapping (same as ``read_map``)."""
    return read_map(filename)


def reset_server_address_cache(datastack: str | Iterable[str], filename: str | None = None) -> None:
    """Forget the server of one datastack or of several."""
    data = read_map(filename)
    for name in [datastack] if isinstance(datastack, str) else datastack:
        data.pop(name, None)
        logger.warning(f"Wiping '{name}' from datastack-to-server cache")
    write_map(data, filename)
