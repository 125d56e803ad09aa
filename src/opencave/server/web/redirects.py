"""Where the login pages may send a browser, decided by resolving the target as the browser will.

A redirect target is parsed with the WHATWG URL standard (ada, the reference implementation),
relative to this server's URL — the same way the browser resolves a ``Location`` header. Strings
a naive check lets through (``///host``, ``/\\host``, ``/<TAB>/host``, ``https:host``,
``http://this-server@evil/``) resolve to another host there and are refused here. The answer is
the resolved URL, serialized, so the browser receives exactly the URL that was checked.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlencode

from ada_url import URL

WEB_SCHEMES = ("http:", "https:")


def origin_of(url: str) -> str | None:
    """The serialized origin (``https://host[:port]``) of an absolute http(s) URL, else None."""
    try:
        parsed = URL(url.strip())
    except ValueError:
        return None
    return parsed.origin if parsed.protocol in WEB_SCHEMES else None


def allowed_origins(server_url: str, configured: Iterable[str], viewer_sites: Iterable[str]) -> list[str]:
    """This server's origin, the configured ones and the viewer sites', normalized, in that order."""
    origins: list[str] = []
    for candidate in (server_url, *configured, *viewer_sites):
        origin = origin_of(candidate) if candidate else None
        if origin is not None and origin not in origins:
            origins.append(origin)
    return origins


def resolve(target: str, base: str, origins: Iterable[str]) -> URL | None:
    """``target`` resolved against ``base`` if it lands on one of ``origins``, else None.

    Refused too: anything that is not http(s) (``javascript:``, ``data:``) and URLs carrying user
    names or passwords, which no legitimate target needs and which serve to disguise a host.
    """
    try:
        url = URL(target, base=base)
    except ValueError:
        return None
    if url.protocol not in WEB_SCHEMES or url.username or url.password:
        return None
    return url if url.origin in set(origins) else None


def with_params(url: URL, params: dict[str, str]) -> str:
    """The URL with ``params`` appended to its query (before any fragment), serialized."""
    existing = url.search[1:]
    added = urlencode(params)
    url.search = f"{existing}&{added}" if existing else added
    return url.href
