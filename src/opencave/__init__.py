"""opencave: a complete, self-hostable CAVE — server, client and demo datastack in one package.

``from opencave import CAVEclient`` gives the client. The client is imported on first access,
so ``import opencave.wire`` (used by the server) does not pull in requests and numpy.
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any

try:
    __version__ = metadata.version("opencave")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["CAVEclient", "set_session_defaults", "get_session_defaults", "__version__"]

_CLIENT_EXPORTS = {"CAVEclient", "set_session_defaults", "get_session_defaults"}

if TYPE_CHECKING:
    from .client import CAVEclient, get_session_defaults, set_session_defaults


def __getattr__(name: str) -> Any:
    if name in _CLIENT_EXPORTS:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'opencave' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _CLIENT_EXPORTS)
