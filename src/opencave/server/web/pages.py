"""Browser pages: local-account login, the token manager, token creation and terms of service.

A browser session is a ``login`` token in the HttpOnly ``middle_auth_token`` cookie, the same
cookie CAVE services read, so a logged-in browser can also open API URLs directly. Forms are
CSRF-protected (``csrf.py``); only these pages ever redirect, API calls never do.

Nothing a cross-site page can make a browser do changes state: the GETs that do (``create_token``,
``refresh_token``, ``logout``) act only on a token in an ``Authorization`` header, which no
navigation or form can set; a browser session gets a confirmation page whose form POSTs with a
CSRF token. Redirect targets are resolved as the browser resolves them (``redirects.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import quote, urlsplit

from ada_url import URL
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from opencave.errors import Forbidden, OpencaveError, Unauthorized
from opencave.server.params import SerialId, text
from opencave.server.security import HEADER, authenticate, presented_credential, presented_token, runtime_of
from opencave.server.web import csrf, redirects
from opencave.services.auth import API, LOGIN, Identity
from opencave.services.auth.passwords import verify_password
from opencave.wire.endpoints import AUTH, route_path
from opencave.wire.tokens import TOKEN_COOKIE

router = APIRouter(tags=["web pages"])
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
V1 = AUTH.for_version(1)
LOGIN_PATH = route_path(V1["login_page"])
LOGOUT_PATH = route_path(V1["logout_page"])
TOKENS_PATH = route_path(V1["user_tokens_page"])
CREATE_TOKEN_PATH = route_path(V1["create_token"])
REFRESH_TOKEN_PATH = route_path(V1["refresh_token"])
API_LOGOUT_PATH = route_path(V1["logout"])
TOS_PATH = route_path(V1["tos_accept"])
AUTHORIZE_PATH = route_path(V1["authorize"])

MAX_URL = 4096
UrlText = text(MAX_URL)
FormToken = Annotated[text(128), Form(description="the CSRF token of the page that holds the form")]
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


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
    response.headers["X-Frame-Options"] = "DENY"
    return response


# -- redirect targets --------------------------------------------------------------------------
def _origins(request: Request) -> list[str]:
    """Where a browser may be sent: this server, ``--redirect-origins``, the viewer sites."""
    runtime = runtime_of(request)
    settings = runtime.settings
    return redirects.allowed_origins(settings.server_url, settings.redirect_origins, runtime.info.viewer_sites(settings.server_url))


def _resolve(request: Request, target: str | None) -> URL | None:
    if not target:
        return None
    return redirects.resolve(target, runtime_of(request).settings.server_url + "/", _origins(request))


def _location(request: Request, href: str) -> str:
    """A same-origin target as a path (the browser stays on the host name it uses), else absolute."""
    origin = redirects.origin_of(runtime_of(request).settings.server_url)
    if origin and href.startswith(origin + "/"):
        path = href[len(origin) :]
        if not path.startswith("//"):
            return path
    return href


def _safe_next(request: Request, target: str | None) -> str:
    """Where to continue after a login or an accepted ToS: an allowed target, else the tokens page."""
    url = _resolve(request, target)
    return _location(request, url.href) if url is not None else TOKENS_PATH


def to_login(request: Request) -> RedirectResponse:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{LOGIN_PATH}?next={quote(here, safe='')}", status_code=303)


def _wants_html(request: Request) -> bool:
    return "authorization" not in request.headers and "text/html" in request.headers.get("accept", "")


# -- pages -------------------------------------------------------------------------------------
@router.get(LOGIN_PATH, response_class=HTMLResponse)
def login_page(request: Request, next: Annotated[UrlText | None, Query(description="where to go after logging in")] = None) -> HTMLResponse:
    return _render(request, "login.html", next=_safe_next(request, next), error=None)


@router.post(LOGIN_PATH, response_class=HTMLResponse)
def login(
    request: Request,
    email: Annotated[text(320), Form()] = "",
    password: Annotated[text(1024), Form()] = "",
    next: Annotated[UrlText, Form()] = "",
    csrf_token: FormToken = "",
) -> Response:
    runtime = runtime_of(request)
    csrf.verify(request, runtime.secret_key, csrf_token)
    found = runtime.accounts.password_hash(email)
    if found is None or not verify_password(found[1], password):
        return _render(request, "login.html", status=401, next=_safe_next(request, next), error="Unknown e-mail or wrong password.")
    token = runtime.tokens.create(found[0].id, LOGIN, "browser login")
    response = RedirectResponse(_safe_next(request, next), status_code=303)
    response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="lax", secure=_secure(request), path="/", max_age=7 * 86400)
    return response


@router.post(LOGOUT_PATH, response_class=HTMLResponse)
def logout(request: Request, csrf_token: FormToken = "") -> Response:
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


@router.get(TOKENS_PATH, response_class=HTMLResponse)
def tokens_page(request: Request) -> Response:
    identity = _browser_identity(request)
    if identity is None:
        return to_login(request)
    return _tokens_page(request, identity)


@router.post(TOKENS_PATH, response_class=HTMLResponse)
def create_token_form(request: Request, description: Annotated[text(200), Form()] = "", csrf_token: FormToken = "") -> Response:
    runtime = runtime_of(request)
    csrf.verify(request, runtime.secret_key, csrf_token)
    identity = _browser_identity(request)
    if identity is None:
        return to_login(request)
    token = runtime.tokens.create(identity.id, API, description.strip())
    return _tokens_page(request, identity, new_token=token, status=201)


@router.post(TOKENS_PATH + "/{token_id}/revoke", response_class=HTMLResponse)
def revoke_token_form(token_id: SerialId, request: Request, csrf_token: FormToken = "") -> Response:
    runtime = runtime_of(request)
    csrf.verify(request, runtime.secret_key, csrf_token)
    identity = _browser_identity(request)
    if identity is None:
        return to_login(request)
    runtime.tokens.revoke_by_id(identity.id, token_id)
    return RedirectResponse(TOKENS_PATH, status_code=303)


# -- state-changing GETs of the API: act on a header token, else confirm in a form ---------------
def _header_identity(request: Request) -> Identity | None:
    """The caller's identity when the request can only come from a program (a Bearer header, or
    authentication switched off); None when a browser could have been made to send it."""
    token, source = presented_credential(request)
    if source == HEADER or not runtime_of(request).settings.auth_enabled:
        return authenticate(request, token).identity
    if source is None and not _wants_html(request):
        return authenticate(request, None).identity  # raises: 401 no_token
    return None


def _confirm(request: Request, action: str, title: str, explanation: str, button: str) -> Response:
    """A browser gets a page whose form POSTs ``action``; anything else is told how to call it."""
    if not _wants_html(request):
        raise Forbidden(
            f"{request.url.path} changes your tokens, so a GET acts only with the token in an "
            "'Authorization: Bearer <token>' header; in a browser, open it and confirm.",
            code="confirmation_required",
        )
    identity = _browser_identity(request)
    if identity is None:
        return to_login(request)
    return _render(request, "confirm.html", identity=identity, action=action, title=title, explanation=explanation, button=button)


def _issue_api_token(request: Request, identity: Identity, description: str) -> str:
    if identity.id == 0:
        raise Unauthorized("Authentication is switched off on this server; no token can be issued.", code="auth_disabled")
    return runtime_of(request).tokens.create(identity.id, API, description)


def _confirmed_identity(request: Request, csrf_token: str) -> Identity | None:
    """For a POST: the Bearer caller, or the browser session after its form token is checked."""
    identity = _header_identity(request)
    if identity is not None:
        return identity
    csrf.verify(request, runtime_of(request).secret_key, csrf_token)
    return _browser_identity(request)


@router.get(CREATE_TOKEN_PATH, response_class=HTMLResponse)
def create_token(request: Request) -> Response:
    """Programs get a new token as a JSON string; browsers get a confirmation page."""
    identity = _header_identity(request)
    if identity is not None:
        return JSONResponse(_issue_api_token(request, identity, "create_token"), headers=NO_STORE)
    return _confirm(request, CREATE_TOKEN_PATH, "Create an API token", "Your existing tokens stay valid.", "Create token")


@router.post(CREATE_TOKEN_PATH, response_class=HTMLResponse)
def create_token_confirmed(request: Request, csrf_token: FormToken = "") -> Response:
    identity = _confirmed_identity(request, csrf_token)
    if identity is None:
        return to_login(request)
    token = _issue_api_token(request, identity, "create_token")
    if request.headers.get("authorization"):
        return JSONResponse(token, headers=NO_STORE)
    return _render(request, "create_token.html", status=201, identity=identity, new_token=token)


def _refresh(request: Request, identity: Identity) -> str:
    if identity.id == 0:
        raise Unauthorized("Authentication is switched off on this server; no token can be issued.", code="auth_disabled")
    return runtime_of(request).tokens.replace_api_tokens(identity.id, "refresh_token")


@router.get(REFRESH_TOKEN_PATH, response_class=HTMLResponse)
def refresh_token(request: Request) -> Response:
    """Deprecated upstream: replaces all of the caller's API tokens with one new token."""
    identity = _header_identity(request)
    if identity is not None:
        return JSONResponse(_refresh(request, identity), headers=NO_STORE)
    return _confirm(
        request,
        REFRESH_TOKEN_PATH,
        "Replace all your API tokens",
        "Every API token you hold stops working and one new token replaces them.",
        "Replace my tokens",
    )


@router.post(REFRESH_TOKEN_PATH, response_class=HTMLResponse)
def refresh_token_confirmed(request: Request, csrf_token: FormToken = "") -> Response:
    identity = _confirmed_identity(request, csrf_token)
    if identity is None:
        return to_login(request)
    token = _refresh(request, identity)
    if request.headers.get("authorization"):
        return JSONResponse(token, headers=NO_STORE)
    return _render(request, "create_token.html", status=201, identity=identity, new_token=token)


@router.get(API_LOGOUT_PATH, response_class=HTMLResponse)
def api_logout(request: Request) -> Response:
    """Revokes the presented token; a browser session confirms on a page that posts to the logout."""
    identity = _header_identity(request)
    if identity is not None:
        if identity.token_id is not None:
            runtime_of(request).tokens.revoke_by_id(identity.id, identity.token_id)
        return JSONResponse("success")
    return _confirm(request, LOGOUT_PATH, "Log out", "This ends your browser session.", "Log out")


# -- terms of service and the login hand-over --------------------------------------------------
@router.get(TOS_PATH, response_class=HTMLResponse)
def tos_page(tos_id: SerialId, request: Request, redirect: Annotated[UrlText | None, Query()] = None) -> Response:
    identity = _browser_identity(request)
    if identity is None:
        return to_login(request)
    tos = runtime_of(request).access.tos(tos_id)
    return _render(request, "tos.html", identity=identity, tos=tos, redirect=_safe_next(request, redirect), accepted=False)


@router.post(TOS_PATH, response_class=HTMLResponse)
def accept_tos(tos_id: SerialId, request: Request, redirect: Annotated[UrlText, Form()] = "", csrf_token: FormToken = "") -> Response:
    runtime = runtime_of(request)
    csrf.verify(request, runtime.secret_key, csrf_token)
    identity = _browser_identity(request)
    if identity is None:
        return to_login(request)
    runtime.access.accept_tos(identity.id, tos_id)
    tos = runtime.access.tos(tos_id)
    return _render(request, "tos.html", identity=identity, tos=tos, redirect=_safe_next(request, redirect), accepted=True)


@router.get(AUTHORIZE_PATH, response_class=HTMLResponse)
def authorize(
    request: Request,
    redirect: Annotated[UrlText | None, Query(description="a page of this server or of an allowed site to receive the token")] = None,
) -> Response:
    """Hands the browser's token to an allowed page, as middle_auth's login ends.

    With ``redirect``: a 303 to it with ``middle_auth_token`` (and ``token``, ``middle_auth_url``)
    added to its query. Without: a page that posts ``{"token", "app_urls"}`` to the window that
    opened it (Neuroglancer's login pop-up), addressed to the allowed origins only.
    """
    identity = _browser_identity(request)
    if identity is None:
        return to_login(request)
    token = presented_token(request, cookie_only=True)
    settings = runtime_of(request).settings
    origins = _origins(request)
    if not redirect:
        return _render(
            request, "authorized.html", identity=identity, message={"token": token, "app_urls": [settings.server_url]}, origins=origins
        )
    target = _resolve(request, redirect)
    if target is None:
        return _render(
            request,
            "message.html",
            status=400,
            identity=identity,
            title="Redirect refused",
            message="Login hands a token only to pages of this server and of these sites: "
            + ", ".join(origins)
            + ". An operator adds a site with `opencave serve --redirect-origins`.",
        )
    sticky = urlsplit(settings.server_url).netloc + "/sticky_auth"
    href = redirects.with_params(target, {"middle_auth_token": token, "middle_auth_url": sticky, "token": token})
    return RedirectResponse(_location(request, href), status_code=303, headers=NO_STORE)
