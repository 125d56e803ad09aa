"""Machinery shared by every sub-client: sessions, API-version negotiation, server versions,
version gating and the translation of HTTP errors into exceptions.

Error messages match caveclient's word for word, because users (and their ``except`` /
string-matching code) know them.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import webbrowser
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlparse

import requests
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from ..wire.endpoints import DEFAULT_GLOBAL_SERVER, ServiceEndpoints
from ..wire.tokens import TOKEN_COOKIE
from .errors import AuthException, ServerIncompatibilityError
from .session import Timeout, build_session, normalize_timeout

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
Constraint = str | Iterable[str]


# --------------------------------------------------------------------------------------------
# Responses and errors


def _reason(response: requests.Response) -> str:
    reason = response.reason
    if isinstance(reason, bytes):
        # Some servers localise their reason phrase; try UTF-8 before Latin-1, as requests does.
        try:
            return reason.decode("utf-8")
        except UnicodeDecodeError:
            return reason.decode("iso-8859-1")
    return reason


def _json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None


def _open_terms_of_service(response: requests.Response) -> None:
    """Open the terms-of-service form a 403 ``missing_tos`` answer points to.

    middle_auth answers API calls by users who have not accepted a dataset's terms this way;
    showing the form is the only way for them to proceed.
    """
    content_type = response.headers.get("content-type", "")
    if content_type.split(";")[0].strip() != "application/json":
        return
    body = _json_or_none(response.content)
    if isinstance(body, dict) and body.get("error") == "missing_tos":
        url = (body.get("data") or {}).get("tos_form_url")
        if url:
            webbrowser.open(url)


def raise_for_status(response: requests.Response, log_warning: bool = True) -> None:
    """Raise ``requests.HTTPError`` for a 4xx/5xx answer, with the server's message in it.

    On success, log the ``Warning`` header if there is one (materialization uses it for table
    notices users should see).
    """
    status = response.status_code
    reason = _reason(response)
    if 400 <= status < 500:
        if status == 403:
            _open_terms_of_service(response)
        message = f"{status} Client Error: {reason} for url: {response.url} content: {response.content!r}"
        raise requests.HTTPError(message, response=response)
    if 500 <= status < 600:
        body = _json_or_none(response.content)
        if isinstance(body, dict):
            reason = body.get("message", reason)
        message = f"{status} Server Error: {reason} for url: {response.url} content:{response.content!r}"
        raise requests.HTTPError(message, response=response)
    if log_warning:
        warning = response.headers.get("Warning")
        if warning:
            logger.warning(warning)


def check_authorization_redirect(response: requests.Response) -> None:
    """Raise ``AuthException`` if the request was redirected.

    CAVE's auth proxy redirects unauthenticated browsers to a login page; an API call that
    followed such a redirect got a login page, not data.
    """
    if not response.history:
        return
    first_url = response.history[0].url
    parsed = urlparse(first_url)
    # Same text as caveclient's, trailing spaces included.
    raise AuthException(
        f"You have not setup a token to access\n{first_url}\nwith the current auth configuration.\n\n"
        "Read the documentation at \n"
        "https://caveconnectome.github.io/CAVEclient/tutorials/authentication/\n"
        "or follow instructions under \n"
        "client.auth.get_new_token() for how to set a valid API token.\n"
        "after initializing a global client with\n"
        f'client=CAVEclient(server_address="{parsed.scheme}://{parsed.netloc}")'
    )


def handle_response(response: requests.Response, as_json: bool = True, log_warning: bool = True) -> Any:
    """Status check, redirect check, then the JSON body (or the response if ``as_json`` is False)."""
    raise_for_status(response, log_warning=log_warning)
    check_authorization_redirect(response)
    return response.json() if as_json else response


# --------------------------------------------------------------------------------------------
# API-version negotiation


def fetch_api_versions(
    service: ServiceEndpoints,
    server_address: str,
    auth_header: Mapping[str, str],
    verify: bool | str = True,
    timeout: Timeout | None = None,
) -> list[int] | None:
    """The API versions a server says it offers, or None if the service has no such endpoint.

    A plain request (no retries, no cookie), as caveclient makes it: the probe must be cheap
    and its failure only means "fall back".
    """
    template = service.common.get("get_api_versions")
    if template is None:
        return None
    url = template.format_map({service.server_key: server_address})
    response = requests.get(url, headers=dict(auth_header), verify=verify, timeout=normalize_timeout(timeout))
    raise_for_status(response)
    return response.json()


def negotiate_api_version(
    api_version: int | str,
    service: ServiceEndpoints,
    server_address: str,
    auth_header: Mapping[str, str],
    fallback_version: int | None = None,
    verify: bool | str = True,
    probe: bool = True,
    timeout: Timeout | None = None,
) -> tuple[dict[str, str], int]:
    """Choose the API version to use and return ``(endpoint templates, version)``.

    ``"latest"`` asks the server (when ``probe`` is true and the service has a versions
    endpoint) and takes the newest version both sides know. If the server cannot say, the
    ``fallback_version`` is used, else the newest version the client knows.
    """
    known = set(service.versions)
    if api_version == "latest":
        offered: set[int] | None = None
        if probe:
            try:
                answer = fetch_api_versions(service, server_address, auth_header, verify, timeout)
                offered = None if answer is None else {int(v) for v in answer}
            except Exception:  # noqa: BLE001 - any failure means "the server did not say"
                offered = None
        if offered is None:
            api_version = fallback_version if fallback_version is not None else max(known)
        else:
            common = known & offered
            if not common:
                raise ServerIncompatibilityError(
                    f"The server at {server_address} offers API versions {sorted(offered)} of this "
                    f"service, but this client supports only {sorted(known)}."
                )
            api_version = max(common)
    return service.for_version(int(api_version)), int(api_version)


# --------------------------------------------------------------------------------------------
# Clients


class ClientBase:
    """One CAVE service at one server address, with an authenticated, retrying session.

    The server version is fetched on construction (``GET .../version``, 404 meaning "unknown"),
    because version-gated methods need it and caveclient fails early on other errors too.
    """

    def __init__(
        self,
        server_address: str,
        auth_header: Mapping[str, str],
        api_version: int,
        endpoints: Mapping[str, str],
        server_name: str,
        verify: bool | str = True,
        max_retries: int | None = None,
        pool_maxsize: int | None = None,
        pool_block: bool | None = None,
        over_client: Any = None,
        timeout: Timeout | None = None,
    ):
        self._server_address = server_address
        self._default_url_mapping: dict[str, Any] = {server_name: server_address}
        self.verify = verify
        self.session = build_session(
            max_retries=max_retries,
            pool_block=pool_block,
            pool_maxsize=pool_maxsize,
            timeout=timeout,
            verify=verify,
        )
        authorization = auth_header.get("Authorization")
        if authorization is not None:
            token = authorization.split(" ", 1)[1]
            # No domain: the cookie goes to every host the session talks to, like the header.
            self.session.cookies.set_cookie(requests.cookies.create_cookie(name=TOKEN_COOKIE, value=token))
        self.session.headers.update(auth_header)
        self._api_version = api_version
        self._endpoints = dict(endpoints)
        self._fc = over_client
        self._server_version = self._get_version()

    @property
    def fc(self) -> Any:
        """The CAVEclient this sub-client belongs to (None when built on its own)."""
        return self._fc

    @property
    def default_url_mapping(self) -> dict[str, Any]:
        """Values for the URL template placeholders (a copy, safe to extend per call)."""
        return dict(self._default_url_mapping)

    @property
    def server_address(self) -> str:
        return self._server_address

    @property
    def api_version(self) -> int:
        return self._api_version

    @property
    def server_version(self) -> Version | None:
        """The version of the software running the service (not of the datastack); None if the
        server does not report it."""
        return self._server_version

    @property
    def timeout(self) -> Timeout:
        """The timeout applied to this client's requests unless a call gives its own."""
        return self.session.timeout

    def _url(self, endpoint: str, **mapping: Any) -> str:
        """Fill the template ``endpoint`` from the default mapping plus ``mapping``."""
        return self._endpoints[endpoint].format_map({**self._default_url_mapping, **mapping})

    def _get_version(self) -> Version | None:
        if "get_version" not in self._endpoints:
            return None
        response = self.session.get(self._url("get_version"))
        if response.status_code == 404:  # servers that predate the endpoint
            return None
        return Version(handle_response(response))

    @staticmethod
    def raise_for_status(r: requests.Response, log_warning: bool = True) -> None:
        """Raise ``requests.HTTPError`` if the response is a 4xx/5xx."""
        raise_for_status(r, log_warning=log_warning)


class ServiceClient(ClientBase):
    """A sub-client of one service (``service``): it defaults the server to the global one and
    the auth client to the saved token, and negotiates the API version when it is built."""

    service: ServiceEndpoints
    fallback_version: int | None = None  # API version when the server does not say

    def __init__(
        self,
        server_address: str | None,
        auth_client: Any,
        api_version: int | str,
        *,
        verify: bool | str = True,
        max_retries: int | None = None,
        pool_maxsize: int | None = None,
        pool_block: bool | None = None,
        over_client: Any = None,
        timeout: Timeout | None = None,
    ):
        from .auth import AuthClient  # auth.py imports this module

        server_address = server_address or DEFAULT_GLOBAL_SERVER
        auth_header = (auth_client if auth_client is not None else AuthClient()).request_header
        endpoints, api_version = negotiate_api_version(
            api_version,
            self.service,
            server_address,
            auth_header,
            fallback_version=self.fallback_version,
            verify=verify,
            timeout=timeout,
        )
        super().__init__(
            server_address,
            auth_header,
            api_version,
            endpoints,
            self.service.server_key,
            verify=verify,
            max_retries=max_retries,
            pool_maxsize=pool_maxsize,
            pool_block=pool_block,
            over_client=over_client,
            timeout=timeout,
        )


class ClientBaseWithDatastack(ClientBase):
    """A client bound to one datastack, whose name fills ``{datastack_name}`` in templates."""

    def __init__(self, *args: Any, datastack_name: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._datastack_name = datastack_name
        self._default_url_mapping["datastack_name"] = datastack_name

    @property
    def datastack_name(self) -> str | None:
        return self._datastack_name


# --------------------------------------------------------------------------------------------
# Version gating


def _as_list(constraint: Constraint) -> list[str]:
    return [constraint] if isinstance(constraint, str) else list(constraint)


def version_fails_constraint(version: Version | None, constraint: Constraint | None) -> bool:
    """True if ``version`` satisfies none of the constraints (a list means "any of").

    An unknown version (None) fails every constraint: the feature cannot be shown to exist.
    """
    if constraint is None:
        return False
    if version is None:
        return True
    return all(version not in _specifiers(c) for c in _as_list(constraint))


@functools.lru_cache(maxsize=256)
def _specifiers(constraint: str) -> SpecifierSet:
    """A constraint parsed once: sub-client methods check theirs on every call."""
    return SpecifierSet(constraint)


def _passed_arguments(method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Arguments the caller gave, by name (positional ones included; ``**kwargs`` flattened)."""
    signature = _signature(method)
    try:
        given = dict(signature.bind_partial(*args, **kwargs).arguments)
    except TypeError:  # the call itself is wrong; let the method raise its own error
        return dict(kwargs)
    for name, param in signature.parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD and name in given:
            given.update(given.pop(name))
    return given


@functools.lru_cache(maxsize=1024)
def _signature(method: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(method)


def check_version_compatibility(
    method_constraint: Constraint | None = None,
    kwarg_use_constraints: Mapping[str, Constraint] | None = None,
    method_api_constraint: Constraint | None = None,
    kwarg_use_api_constraints: Mapping[str, Constraint] | None = None,
    method_constraint_message: str | None = None,
) -> Callable[[F], F]:
    """Decorate a sub-client method so it fails clearly on servers that lack the feature.

    Constraints are PEP 440 specifier sets (``">=4.3.1"``); a list passes if any element does.
    ``method_*`` constraints are checked on every call; ``kwarg_*`` constraints only when the
    caller passes that argument with a value other than None. Server-version constraints use
    ``self.server_version``, API constraints ``self.api_version``.

    Raises ``ServerIncompatibilityError``.
    """

    def decorate(method: F) -> F:
        name = method.__name__

        def method_failure(subject: str, constraint: Constraint, version: Any) -> ServerIncompatibilityError:
            return ServerIncompatibilityError(
                f"Use of method `{name}` is only permitted for {subject} version "
                f"{' or '.join(_as_list(constraint))}. Your {subject} version is {version}. "
                f"Contact your system administrator to update the {subject} version."
            )

        def kwarg_failure(kwarg: str, subject: str, constraint: Constraint, version: Any) -> ServerIncompatibilityError:
            return ServerIncompatibilityError(
                f"Use of keyword argument `{kwarg}` in `{name}` is only permitted for {subject} "
                f"version {' or '.join(_as_list(constraint))}. Your {subject} version is "
                f"{version}. Contact your system administrator to update the {subject} version."
            )

        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            server_version = self.server_version
            if method_constraint is not None and version_fails_constraint(server_version, method_constraint):
                if method_constraint_message is not None:
                    raise ServerIncompatibilityError(method_constraint_message)
                raise method_failure("server", method_constraint, server_version)

            given = None
            if kwarg_use_constraints:
                given = _passed_arguments(method, (self, *args), kwargs)
                for kwarg, constraint in kwarg_use_constraints.items():
                    if given.get(kwarg) is not None and version_fails_constraint(server_version, constraint):
                        raise kwarg_failure(kwarg, "server", constraint, server_version)

            if method_api_constraint is not None and version_fails_constraint(
                Version(str(self.api_version)), method_api_constraint
            ):
                raise method_failure("API", method_api_constraint, self.api_version)

            if kwarg_use_api_constraints:
                api_version = Version(str(self.api_version))
                if given is None:
                    given = _passed_arguments(method, (self, *args), kwargs)
                for kwarg, constraint in kwarg_use_api_constraints.items():
                    if given.get(kwarg) is not None and version_fails_constraint(api_version, constraint):
                        raise kwarg_failure(kwarg, "API", constraint, self.api_version)

            return method(self, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
