"""Browser pages: local-account login, the token manager, token creation and terms of service.

A browser session is a ``login`` token in the HttpOnly ``middle_auth_token`` cookie, the same
cookie CAVE services read, so a logged-in browser can also open API URLs directly. Forms are
CSRF-protected (``csrf.py``); only these pages ever redirect, API calls never do.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from opencave.errors import OpencaveError, Unauthorized
from opencave.server.security import authenticate, presented_token, runtime_of
from opencave.server.web import csrf
from opencave.services.auth import API, LOGIN, Identity
from opencave.services.auth.passwords import verify_password
from opencave.wire.endpoints import AUTH, route_path
from opencave.wire.tokens import TOKEN_COOKIE

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
V1 = AUTH.for_version(1)
LOGIN_PATH = route_path(V1["login_page"])
LOGOUT_PATH = route_path(V1["logout_page"])
TOKENS_PATH = route_path(V1["user_tokens_page"])
CREATE_TOKEN_PATH = route_path(V1["create_token"])
TOS_PATH = route_path(V1["tos_accept"])
AUTHORIZE_PATH = route_path(V1["authorize"])


def _secure(request: Request) -> bool:
    return runtime_of(request).settings.server_url.startswith("https://")


def _browser_identity(request: Request) -> Identity | None:
    token = presented_token(request, cookie_only=True)
    if token is None:
        return None
    try:
        return authenticate(request, token).identity
    except OpencaveError:
        return None


def _render(request: Request, template: str, status: int = 200, **context) -> HTMLResponse:
    runtime = runtime_of(request)
    form_token, fresh_cookie = csrf.issue(request, runtime.secret_key)
    response = templates.TemplateResponse(
        request, template, {"csrf_token": form_token, "server_url": runtime.settings.server_url, **context}, status_code=status
    )
    csrf.set_cookie(response, fresh_cookie, _secure(request))
    return response


def _safe_next(target: str | None) -> str:
    """Only same-site relative paths: a login must not bounce the browser to another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return TOKENS_PATH
    return target


def _to_login(request: Request) -> RedirectResponse:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{LOGIN_PATH}?next={quote(here, safe='')}", status_code=303)


def _wants_html(request: Request) -> bool:
    return "authorization" not in request.headers and "text/html" in request.headers.get("accept", "")


@router.get("/")
def home(request: Request) -> HTMLResponse:
    runtime = runtime_of(request)
    identity = _browser_identity(request)
    return _render(request, "index.html", identity=identity, datastacks=runtime.info.datastack_names())


@router.get(LOGIN_PATH)
def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    return _render(request, "login.html", next=_safe_next(next), error=None)


@router.post(LOGIN_PATH)
def login(
    request: Request,
    email: str = Form(""),
    password: str = Form(""),
    next: str = Form(""),
    csrf_token: str = Form(""),
) -> Response:
    runtime = runtime_of(request)
    csrf.verify(request, runtime.secret_key, csrf_token)
    found = runtime.accounts.password_hash(email)
    if found is None or not verify_password(found[1], password):
        return _render(request, "login.html", status=401, next=_safe_next(next), error="Unknown e-mail or wrong password.")
    token = runtime.tokens.create(found[0].id, LOGIN, "browser login")
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="lax", secure=_secure(request), path="/", max_age=7 * 86400)
    return response


@router.post(LOGOUT_PATH)
def logout(request: Request, csrf_token: str = Form("")) -> Response:
    runtime = runtime_of(request)
    csrf.verify(request, runtime.secret_key, csrf_token)
    token = presented_token(request, cookie_only=True)
    if token:
        try:
            runtime.tokens.revoke(token)
        except OpencaveError:
            pass
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    response.delete_cookie(TOKEN_COOKIE, path="/")
    return response


def _tokens_page(request: Request, identity: Identity, new_token: str | None = None, status: int = 200) -> HTMLResponse:
    tokens = runtime_of(request).tokens.list_api_tokens(identity.id)
    return _render(request, "tokens.html", status=status, identity=identity, tokens=tokens, new_token=new_token)


@router.get(TOKENS_PATH)
def tokens_page(request: Request) -> Response:
    identity = _browser_identity(request)
    if identity is None:
        return _to_login(request)
    return _tokens_page(request, identity)


@router.post(TOKENS_PATH)
def create_token_form(request: Request, description: str = Form(""), csrf_token: str = Form("")) -> Response:
    runtime = runtime_of(request)
    csrf.verify(request, runtime.secret_key, csrf_token)
    identity = _browser_identity(request)
    if identity is None:
        return _to_login(request)
    token = runtime.tokens.create(identity.id, API, description.strip()[:200])
    return _tokens_page(request, identity, new_token=token, status=201)


@router.post(TOKENS_PATH + "/{token_id}/revoke")
def revoke_token_form(token_id: int, request: Request, csrf_token: str = Form("")) -> Response:
    runtime = runtime_of(request)
    csrf.verify(request, runtime.secret_key, csrf_token)
    identity = _browser_identity(request)
    if identity is None:
        return _to_login(request)
    runtime.tokens.revoke_by_id(identity.id, token_id)
    return RedirectResponse(TOKENS_PATH, status_code=303)


@router.get(CREATE_TOKEN_PATH)
def create_token(request: Request) -> Response:
    """Programmatic callers get a new token as a JSON string; browsers get a confirmation page."""
    if not _wants_html(request):
        identity = authenticate(request, presented_token(request)).identity
        if identity.id == 0:
            raise Unauthorized("Authentication is switched off on this server; no token can be issued.", code="auth_disabled")
        return JSONResponse(runtime_of(request).tokens.create(identity.id, API, "create_token"))
    identity = _browser_identity(request)
    if identity is None:
        return _to_login(request)
    return _render(request, "create_token.html", identity=identity, new_token=None)


@router.post(CREATE_TOKEN_PATH)
def create_token_confirmed(request: Request, csrf_token: str = Form("")) -> Response:
    runtime = runtime_of(request)
    csrf.verify(request, runtime.secret_key, csrf_token)
    identity = _browser_identity(request)
    if identity is None:
        return _to_login(request)
    token = runtime.tokens.create(identity.id, API, "create_token")
    return _render(request, "create_token.html", status=201, identity=identity, new_token=token)


@router.get(TOS_PATH)
def tos_page(tos_id: int, request: Request, redirect: str | None = None) -> Response:
    identity = _browser_identity(request)
    if identity is None:
        return _to_login(request)
    tos = runtime_of(request).access.tos(tos_id)
    return _render(request, "tos.html", identity=identity, tos=tos, redirect=_safe_next(redirect), accepted=False)


@router.post(TOS_PATH)
def accept_tos(tos_id: int, request: Request, redirect: str = Form(""), csrf_token: str = Form("")) -> Response:
    runtime = runtime_of(request)
    csrf.verify(request, runtime.secret_key, csrf_token)
    identity = _browser_identity(request)
    if identity is None:
        return _to_login(request)
    runtime.access.accept_tos(identity.id, tos_id)
    tos = runtime.access.tos(tos_id)
    return _render(request, "tos.html", identity=identity, tos=tos, redirect=_safe_next(redirect), accepted=True)


@router.get(AUTHORIZE_PATH)
def authorize(request: Request, redirect: str | None = None) -> Response:
    """Hands the browser's token to a same-origin page, as middle_auth's OAuth flow ends."""
    identity = _browser_identity(request)
    if identity is None:
        return _to_login(request)
    target = redirect or TOKENS_PATH
    server = urlsplit(runtime_of(request).settings.server_url)
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        if (parts.scheme, parts.netloc) != (server.scheme, server.netloc):
            return _render(
                request,
                "message.html",
                status=400,
                title="Redirect refused",
                message="Login can only hand a token to pages of this server.",
            )
    token = presented_token(request, cookie_only=True)
    separator = "&" if parts.query else "?"
    query = urlencode({"middle_auth_token": token, "middle_auth_url": f"{server.netloc}/sticky_auth", "token": token})
    return RedirectResponse(f"{target}{separator}{query}", status_code=303)
