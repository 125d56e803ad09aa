"""Who may see a web page: the visitor's session, the dataset's terms of service, its permission.

Shared by every data page (materialize views, data browser): a visitor without a usable session
goes to the login page and comes back; one who has not accepted a dataset's terms goes to the
terms page and comes back; one without permission gets the page's 403.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import RedirectResponse

from opencave.errors import Forbidden, NotFound, Unauthorized
from opencave.server.security import authenticate, presented_token, runtime_of
from opencave.server.web.pages import TOS_PATH, to_login
from opencave.services.auth import AuthContext

NAMESPACE = "datastack"


def here(request: Request) -> str:
    """The page asked for, to come back to."""
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def visitor(request: Request) -> AuthContext | None:
    """The visitor's identity from a header, query or cookie token; None when there is none
    usable (a stale session cookie included: log in again)."""
    if not runtime_of(request).settings.auth_enabled:
        return authenticate(request, None)
    token = presented_token(request)
    if token is None:
        return None
    try:
        return authenticate(request, token)
    except Unauthorized:
        return None


def to_terms(request: Request, refused: Forbidden) -> RedirectResponse | None:
    """The terms page, then back here, when ``refused`` says only the terms are missing."""
    if refused.code != "missing_tos" or not refused.data:
        return None
    target = TOS_PATH.format(tos_id=refused.data["tos_id"]) + "?" + urlencode({"redirect": here(request)})
    return RedirectResponse(target, status_code=303)


def admit(request: Request, datastack: str | None) -> AuthContext | RedirectResponse:
    """The visitor, allowed to view ``datastack`` (any visitor with a session when None), or
    where to send them first: the login page or the terms page. Forbidden when not allowed."""
    context = visitor(request)
    if context is None:
        return to_login(request)
    if datastack is not None:
        try:
            runtime_of(request).identities.require(context, "view", NAMESPACE, datastack)
        except Forbidden as refused:
            sent = to_terms(request, refused)
            if sent is None:
                raise
            return sent
    return context


def visible_datastacks(request: Request, context: AuthContext) -> list[dict[str, str]]:
    """The datastacks ``context`` may view, with their descriptions (those whose terms are not
    accepted yet included: their pages lead to the terms first)."""
    runtime = runtime_of(request)
    out = []
    for name in runtime.info.datastack_names():
        try:
            runtime.identities.require(context, "view", NAMESPACE, name)
        except Forbidden as refused:
            if refused.code != "missing_tos":
                continue
        except NotFound:
            continue
        info = runtime.info.datastack_info(name, runtime.settings.server_url)
        out.append({"name": name, "description": info.get("description") or (info.get("aligned_volume") or {}).get("description") or ""})
    return out
