"""Request authentication: finds the presented token and resolves it to an identity.

The token is taken, in middle_auth's order, from ``Authorization: Bearer``, the
``middle_auth_token`` query parameter, then the ``middle_auth_token`` cookie. API calls without a
usable token get a 401 JSON answer, never a redirect to a login page.
"""

from __future__ import annotations

from fastapi import Request

from opencave.errors import BadRequest, Forbidden, Unauthorized
from opencave.runtime import Runtime
from opencave.services.auth import AUTH_DISABLED_IDENTITY, AuthContext, Identity
from opencave.wire.tokens import TOKEN_COOKIE, TOKEN_QUERY_PARAM, is_valid_token


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime


HEADER, QUERY, COOKIE = "header", "query", "cookie"


def presented_credential(request: Request, cookie_only: bool = False) -> tuple[str | None, str | None]:
    """The presented token and where it came from (``HEADER``, ``QUERY`` or ``COOKIE``).

    Where matters for state-changing GETs: a cross-site navigation makes the browser send the
    cookie, and the login's redirect can put the token in a same-origin URL's query, but nothing
    a page can make a browser do sets an ``Authorization`` header.
    """
    if not cookie_only:
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise BadRequest(
                    "The Authorization header must be 'Bearer <token>'.", code="bad_auth_header"
                )
            return value.strip(), HEADER
        query_token = request.query_params.get(TOKEN_QUERY_PARAM)
        if query_token:
            return query_token, QUERY
    cookie = request.cookies.get(TOKEN_COOKIE)
    return (cookie, COOKIE) if cookie else (None, None)


def presented_token(request: Request, cookie_only: bool = False) -> str | None:
    return presented_credential(request, cookie_only)[0]


def authenticate(request: Request, token: str | None) -> AuthContext:
    runtime = runtime_of(request)
    if not runtime.settings.auth_enabled:
        return runtime.identities.unauthenticated(AUTH_DISABLED_IDENTITY)
    if token is None:
        raise Unauthorized(
            "Unauthorized - No Token Provided: get a token at "
            f"{runtime.settings.server_url}/sticky_auth/settings/tokens and send it as 'Authorization: Bearer <token>'.",
            code="no_token",
        )
    if not is_valid_token(token):
        raise Unauthorized(
            "Unauthorized - Token is malformed: a token is 32 lowercase hexadecimal characters (0-9, a-f).",
            code="invalid_token",
        )
    return runtime.identities.authenticate(token)


async def current_context(request: Request) -> AuthContext:
    """FastAPI dependency: the caller's identity and generation snapshot, or a 401.

    Async on purpose: the check is one indexed lookup, cheaper than a hop to the thread pool.
    """
    return authenticate(request, presented_token(request))


async def current_identity(request: Request) -> Identity:
    """FastAPI dependency: the caller's identity, or a 401."""
    return authenticate(request, presented_token(request)).identity


def require_some_admin(identity: Identity) -> None:
    """middle_auth's "some admin": a superadmin, a dataset or group admin, or a service account."""
    if identity.admin or identity.datasets_admin or identity.groups_admin or identity.parent_id is not None:
        return
    raise Forbidden("Requires an administrator (superadmin, dataset admin or group admin).", code="missing_role")


def require_superadmin(identity: Identity) -> None:

    if not identity.admin:
        raise Forbidden("Requires superadmin privilege.", code="missing_role")
