"""The bundled Neuroglancer under ``/neuroglancer/``, the credentials it asks for, and ``/auth_info``.

The client is static and public (it holds no data). It is Neuroglancer's Python-integration
build (``services/viewer/bundle.py``), so it runs at ``/neuroglancer/v/<id>/`` and asks
``/neuroglancer/credentials/<id>`` for the token of each ``middleauth+`` source: opencave
answers with the token of the browser's login, for this server's sources only. A viewer of
another site reaches the same token through ``/auth_info`` and the login pop-up instead.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from opencave.errors import BadRequest, Forbidden, NotFound, OpencaveError, Unauthorized
from opencave.server.params import json_text_body
from opencave.server.security import authenticate, presented_token, runtime_of
from opencave.server.web.redirects import origin_of
from opencave.services.viewer.bundle import ViewerBundle

router = APIRouter(tags=["viewer"])
VIEWER_PATH = "/neuroglancer"
VIEWER_ID = "opencave"  # the one viewer id the client's URL carries (``/v/<id>/``)
APP_PATH = f"{VIEWER_PATH}/v/{VIEWER_ID}/"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
LOGIN_PATH = "/sticky_auth"
CREDENTIALS_GENERATION = 1  # a token is handed once per page; a rejected one ends the exchange

ViewerId = Annotated[str, Path(max_length=64, pattern=r"^[\w-]+$", description="the viewer id in the client's URL")]


@cache
def bundle() -> ViewerBundle:
    return ViewerBundle.installed()


@router.get(VIEWER_PATH, include_in_schema=False)
@router.get(VIEWER_PATH + "/", summary="The Neuroglancer viewer (a datastack's default viewer_site)")
def viewer_entry() -> RedirectResponse:
    """The client runs at ``/neuroglancer/v/opencave/``; the browser keeps the link's ``#!`` state."""
    return RedirectResponse(APP_PATH, status_code=307)


@router.get(VIEWER_PATH + "/version.json", summary="The viewer's build: a current Neuroglancer")
@router.get(VIEWER_PATH + "//version.json", include_in_schema=False)  # caveclient with a viewer_site ending in '/'
def viewer_version() -> JSONResponse:
    return JSONResponse(bundle().version_info(), headers={"Cache-Control": REVALIDATE})


@router.get(VIEWER_PATH + "/v/{viewer}/", response_class=Response, summary="The viewer's page")
def viewer_index(viewer: ViewerId) -> Response:
    _check_viewer(viewer)
    return _answer("index.html")


@router.get(VIEWER_PATH + "/v/{viewer}/{asset}", response_class=Response, summary="A file of the viewer")
def viewer_asset(
    viewer: ViewerId,
    asset: Annotated[str, Path(max_length=200, pattern=r"^[\w.-]+$", description="a file name of the client")],
) -> Response:
    _check_viewer(viewer)
    return _answer(asset)


class CredentialsRequest(BaseModel):
    key: str = Field(max_length=100, description="the kind of credentials: 'middleauthapp' for middleauth+ sources")
    parameters: Any = Field(None, description="for 'middleauthapp': the origin of the source")
    invalid: int | None = Field(None, description="the generation of credentials the source rejected")


CREDENTIALS_BODY = json_text_body("JSON (the viewer sends it as text/plain)", CredentialsRequest.model_json_schema())


@router.post(
    VIEWER_PATH + "/credentials/{viewer}", summary="The login's token for the viewer's middleauth+ sources", openapi_extra=CREDENTIALS_BODY
)
async def viewer_credentials(viewer: ViewerId, request: Request) -> dict:
    """Answers the viewer page of this server only (its ``Origin``), with the browser's login token,
    for sources on this server only: the token is never handed to another site."""
    _check_viewer(viewer)
    try:
        body = CredentialsRequest.model_validate_json(await request.body())
    except ValidationError as error:
        raise BadRequest(f"A credentials request is JSON {{key, parameters, invalid}}: {error.errors()[0]['msg']}.", code="bad_credentials_request") from None
    return await run_in_threadpool(_credentials, request, body)


def _credentials(request: Request, body: CredentialsRequest) -> dict:
    settings = runtime_of(request).settings
    origin = origin_of(settings.server_url)
    ours = {origin, origin_of(str(request.base_url))}  # the public address and the one this browser uses
    sent_from = request.headers.get("origin")
    if sent_from is not None and sent_from not in ours:
        raise Forbidden(f"Only the viewer served by {origin} may ask for credentials.", code="foreign_viewer")
    if body.key != "middleauthapp":
        raise NotFound(f"The viewer has no '{body.key}' credentials; it reads such sources anonymously.", code="no_credentials")
    if not isinstance(body.parameters, str) or body.parameters not in ours:
        raise Forbidden(
            f"The viewer gets a token for this server ({origin}) only, not for {body.parameters!r}.", code="foreign_source"
        )
    login = f"log in at {settings.server_url}{LOGIN_PATH}/login and reload the viewer"
    token = presented_token(request, cookie_only=True)
    if token is None:
        raise Unauthorized(f"Not logged in: {login}.", code="no_token")
    if body.invalid == CREDENTIALS_GENERATION:
        raise Unauthorized(f"The login's token was refused: {login}.", code="invalid_token")
    try:
        authenticate(request, token)
    except OpencaveError as error:
        raise Unauthorized(f"{error.message} ({login}).", code="invalid_token") from None
    credentials = {"tokenType": "Bearer", "accessToken": token, "url": settings.server_url + LOGIN_PATH, "appUrls": [body.parameters]}
    return {"generation": CREDENTIALS_GENERATION, "credentials": credentials}


@router.get("/auth_info", summary="Where Neuroglancer's middleauth logs in for this server")
def auth_info(request: Request) -> dict:
    """A Neuroglancer of another site asks each ``middleauth+`` origin for its login, then opens
    ``{login_url}/api/v1/authorize`` in a pop-up, which posts the user's token back."""
    return {"login_url": runtime_of(request).settings.server_url + LOGIN_PATH}


def _check_viewer(viewer: str) -> None:
    if viewer != VIEWER_ID:
        raise NotFound(f"No viewer '{viewer}'; open {VIEWER_PATH}/ for the viewer.", code="unknown_viewer")


def _answer(name: str) -> Response:
    asset = bundle().asset(name)
    if asset is None:
        raise NotFound(f"The viewer has no file '{name}'; open {VIEWER_PATH}/ for the viewer.", code="unknown_viewer_file")
    return Response(asset.content, media_type=asset.media_type, headers={"Cache-Control": IMMUTABLE if asset.immutable else REVALIDATE})
