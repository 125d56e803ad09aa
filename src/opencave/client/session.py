"""HTTP session defaults: retries, connection pools and timeouts shared by every sub-client.

caveclient keeps six process-wide defaults (``set_session_defaults``); opencave adds a seventh,
``timeout``, because caveclient sends requests without one and a stalled server then hangs a
notebook forever. Defaults are read when a session is built, so changing them affects only
clients (and lazily built sub-clients) created afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

# A timeout as requests takes it: seconds for connect and read alike, or (connect, read).
# ``None`` inside the tuple means "wait forever" for that phase.
Timeout = float | tuple[float | None, float | None]

DEFAULT_TIMEOUT: tuple[float, float] = (10.0, 300.0)

SESSION_DEFAULTS: dict[str, Any] = {}

# What requests reads from the environment for an http(s) URL: its proxies (the CGI rule of
# ``REQUEST_METHOD`` included) and the CA bundle.
_ENVIRONMENT = tuple(
    name
    for base in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    for name in (base, base.upper())
) + ("REQUEST_METHOD", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")

# Only these are retried on a status in ``status_forcelist``: PUT and DELETE may have taken
# effect before a gateway error, and caveclient does not repeat them either.
RETRIED_METHODS = frozenset({"GET", "POST"})


def set_session_defaults(
    max_retries: int = 3,
    pool_block: bool = False,
    pool_maxsize: int = 10,
    backoff_factor: float = 0.1,
    backoff_max: float = 120,
    status_forcelist: Collection[int] | None = (502, 503, 504),
    timeout: Timeout = DEFAULT_TIMEOUT,
) -> None:
    """Set how clients created from now on talk to servers.

    Every call sets every key: an omitted argument goes back to its default, so
    ``set_session_defaults()`` restores them all. Client-level ``max_retries``, ``pool_maxsize``,
    ``pool_block`` and ``timeout`` arguments take precedence over these values.

    Parameters
    ----------
    max_retries
        Retries per request (connection errors, and statuses in ``status_forcelist`` for GET
        and POST). 0 fails on the first error.
    pool_block
        Whether a full connection pool blocks instead of opening extra connections.
    pool_maxsize
        Connections kept per pool.
    backoff_factor
        Sleep ``backoff_factor * 2 ** (retry - 1)`` seconds between retries (the first retry
        is immediate).
    backoff_max
        Upper bound of a single backoff sleep, in seconds.
    status_forcelist
        HTTP statuses that are retried.
    timeout
        Seconds to wait for a connection and for each read, as one number or a
        ``(connect, read)`` tuple. opencave extension; the default is 10 s to connect and
        300 s to read, long enough for large materialization queries. ``(None, None)``
        waits forever, as caveclient does.
    """
    SESSION_DEFAULTS.update(
        max_retries=max_retries,
        pool_block=pool_block,
        pool_maxsize=pool_maxsize,
        backoff_factor=backoff_factor,
        backoff_max=backoff_max,
        status_forcelist=status_forcelist,
        timeout=normalize_timeout(DEFAULT_TIMEOUT if timeout is None else timeout),
    )


def get_session_defaults() -> dict[str, Any]:
    """The live dictionary of session defaults (changing it changes the defaults)."""
    return SESSION_DEFAULTS


def normalize_timeout(timeout: Timeout | None) -> Timeout:
    """Validate a timeout; ``None`` means the session default."""
    if timeout is None:
        return SESSION_DEFAULTS.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool):
        raise TypeError("timeout must be a number of seconds or a (connect, read) tuple, not a bool")
    if isinstance(timeout, (int, float)):
        _check_seconds(timeout)
        return float(timeout)
    if isinstance(timeout, (tuple, list)) and len(timeout) == 2:
        for part in timeout:
            if part is not None:
                _check_seconds(part)
        return (timeout[0], timeout[1])
    raise TypeError(f"timeout must be a number of seconds or a (connect, read) tuple, got {timeout!r}")


def _check_seconds(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"timeout values must be positive numbers of seconds, got {value!r}")


class TimeoutSession(requests.Session):
    """A ``requests.Session`` that applies ``self.timeout`` to every request without one.

    The default is applied in ``send``, which every request (including redirects) goes
    through, so callers keep the usual ``session.get(url, timeout=...)`` override.
    """

    # Pickled and deep-copied with the session (requests keeps only the attributes listed here).
    __attrs__ = [*requests.Session.__attrs__, "timeout"]

    def __init__(self, timeout: Timeout | None = None):
        super().__init__()
        self.timeout: Timeout = normalize_timeout(timeout)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().send(request, **kwargs)

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> dict[str, Any]:
        """requests' answer, remembered per server while the environment it depends on stays
        the same: requests reads every environment variable on every request to find proxies,
        which costs more than a small request to a server on the same machine."""
        if not self.trust_env:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(str(url))
        key = (
            parts.scheme,
            parts.netloc,
            _frozen(proxies),
            stream,
            _frozen(verify),
            _frozen(cert),
            _frozen(self.proxies),
            _frozen(self.verify),
            _frozen(self.cert),
            self.stream,
            len(os.environ),
            tuple(os.environ.get(name) for name in _ENVIRONMENT),
        )
        remembered = self.__dict__.setdefault("_environment_settings", {})
        found = remembered.get(key)
        if found is None:
            found = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if len(remembered) > 64:
                remembered.clear()
            remembered[key] = found
        return dict(found, proxies=dict(found["proxies"]))


def _frozen(value: Any) -> Any:
    """``value`` as something hashable (dicts become sorted item tuples)."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


def make_retry(max_retries: int | None = None) -> Retry:
    """The urllib3 retry policy built from the defaults (``max_retries`` overrides the count).

    ``raise_on_status=False`` hands the last response back once retries run out, so the
    client's own status check (``base.raise_for_status``) produces the error message.
    """
    return Retry(
        total=SESSION_DEFAULTS["max_retries"] if max_retries is None else max_retries,
        backoff_factor=SESSION_DEFAULTS["backoff_factor"],
        backoff_max=SESSION_DEFAULTS["backoff_max"],
        status_forcelist=SESSION_DEFAULTS["status_forcelist"],
        allowed_methods=RETRIED_METHODS,
        raise_on_status=False,
    )


def patch_session(
    session: requests.Session,
    max_retries: int | None = None,
    pool_block: bool | None = None,
    pool_maxsize: int | None = None,
) -> None:
    """Mount a retrying, pooled adapter on ``http://`` and ``https://`` of ``session``."""
    adapter = HTTPAdapter(
        pool_maxsize=SESSION_DEFAULTS["pool_maxsize"] if pool_maxsize is None else pool_maxsize,
        pool_block=SESSION_DEFAULTS["pool_block"] if pool_block is None else pool_block,
        max_retries=make_retry(max_retries),
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)


def build_session(
    max_retries: int | None = None,
    pool_block: bool | None = None,
    pool_maxsize: int | None = None,
    timeout: Timeout | None = None,
    verify: bool | str = True,
) -> TimeoutSession:
    """A fresh session configured from the defaults and the given overrides."""
    session = TimeoutSession(timeout)
    patch_session(session, max_retries=max_retries, pool_block=pool_block, pool_maxsize=pool_maxsize)
    session.verify = verify
    return session


set_session_defaults()
