"""The data browser: the home page's datastacks, a datastack's page, a neuron page and search.

Thin: declared, bounded query strings; the page contents come from ``services.browse``. Pages
are for people, so they answer HTML even when something is wrong: a visitor without a session is
sent to the login page, one who has not accepted the dataset's terms of service to the terms page
(and back), one without view permission on the datastack gets a 403 page, and bad input a 4xx
page that says what to fix. Every value reaches the page through Jinja2's
autoescaping. Nothing here changes state.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from opencave.errors import BadRequest, Forbidden, OpencaveError
from opencave.server.params import Name, text
from opencave.server.security import runtime_of
from opencave.server.web.mat_views import HtmlErrorRoute
from opencave.server.web.gate import NAMESPACE, to_terms, visible_datastacks, visitor
from opencave.server.web.pages import _render, to_login
from opencave.services.auth import AuthContext
from opencave.services.browse import BrowseService, Moment
from opencave.services.browse.service import SEARCH_KINDS

# pages for people, not API operations: out of the OpenAPI document, bad input answered as a page
router = APIRouter(tags=["data browser"], route_class=HtmlErrorRoute, include_in_schema=False)
PREFIX = "/browse/{datastack}"
VersionText = Annotated[text(12) | None, Query(description="a materialization version (default: the newest)")]
TimestampText = Annotated[text(40) | None, Query(description="an ISO 8601 time (UTC) instead of a version")]


def _browse(request: Request) -> BrowseService:
    runtime = runtime_of(request)
    return BrowseService(runtime.info, runtime.materialize, runtime.live, runtime.graphs)


def _readable(request: Request, context: AuthContext):
    """Whether the visitor may read a table, by the permission its owner set on it."""
    access = runtime_of(request).annotations.access

    def readable(metadata: dict) -> bool:
        try:
            access.require(context.identity, metadata, "read")
        except Forbidden:
            return False
        return True

    return readable


def _error_page(request: Request, context: AuthContext | None, error: OpencaveError) -> HTMLResponse:
    titles = {400: "Check the request", 403: "Not allowed", 404: "Not found"}
    return _render(
        request, "message.html", status=error.status, identity=context.identity if context else None, title=titles.get(error.status, "Error"), message=error.message
    )


def _page(request: Request, datastack: str | None, make) -> Response:
    """Run ``make(context)`` for a visitor who may view ``datastack``, answering errors as pages."""
    context = visitor(request)
    if context is None:
        return to_login(request)
    try:
        if datastack is not None:
            runtime_of(request).identities.require(context, "view", NAMESPACE, datastack)
        return make(context)
    except Forbidden as error:
        return to_terms(request, error) or _error_page(request, context, error)
    except OpencaveError as error:
        return _error_page(request, context, error)


def _href(path: str, **params: str | int | None) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{path}?{query}" if query else path


def neuron_href(datastack: str, root_id: int, moment: Moment | None = None, **params) -> str:
    return _href(f"/browse/{datastack}/neuron/{root_id}", **((moment.query if moment else {}) | params))


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> HTMLResponse:
    """The datastacks the visitor may see (after logging in), and how to connect a client."""
    runtime = runtime_of(request)
    context = visitor(request)
    datastacks = visible_datastacks(request, context) if context is not None else []
    return _render(
        request,
        "browse/index.html",
        identity=context.identity if context else None,
        datastacks=datastacks,
        example=datastacks[0]["name"] if datastacks else (runtime.info.datastack_names() or ["DATASTACK"])[0],
    )


@router.get(PREFIX, response_class=HTMLResponse)
def datastack_page(request: Request, datastack: Name, version: VersionText = None, timestamp: TimestampText = None) -> Response:
    """A datastack's versions and tables at a moment, its cell types and the search form."""

    def make(context: AuthContext) -> Response:
        browse = _browse(request)
        moment = browse.moment(datastack, version, timestamp)
        page = browse.datastack_page(moment, _readable(request, context))
        return _render(request, "browse/datastack.html", identity=context.identity, page=page, kinds=SEARCH_KINDS, href=_href)

    return _page(request, datastack, make)


@router.get(PREFIX + "/neuron/{root_id}", response_class=HTMLResponse)
def neuron_page(request: Request, datastack: Name, root_id: text(24, 1), version: VersionText = None, timestamp: TimestampText = None) -> Response:
    """A root at a moment: cell types, nucleus, proofreading, partners, lineage and links."""

    def make(context: AuthContext) -> Response:
        browse = _browse(request)
        moment = browse.moment(datastack, version, timestamp)
        root = browse.check_root(datastack, root_id)
        page = browse.neuron(moment, root, _readable(request, context), runtime_of(request).settings.server_url)
        return _render(
            request,
            "browse/neuron.html",
            identity=context.identity,
            page=page,
            neuron_href=neuron_href,
            href=_href,
        )

    return _page(request, datastack, make)


@router.get(PREFIX + "/search", response_class=HTMLResponse)
def search(
    request: Request,
    datastack: Name,
    kind: Annotated[text(16), Query(description="what q is: root, nucleus or cell_type")] = "root",
    q: Annotated[text(200), Query(description="a root id, a nucleus id or a cell type")] = "",
    table: Annotated[text(255) | None, Query(description="the cell-type table to search (default: the datastack's)")] = None,
    page: Annotated[text(8) | None, Query(description="page of a cell-type search, from 1")] = None,
    version: VersionText = None,
    timestamp: TimestampText = None,
) -> Response:
    """Root and nucleus ids lead to the neuron page; a cell type lists its neurons, a page at a time."""

    def make(context: AuthContext) -> Response:
        if kind not in SEARCH_KINDS:
            raise BadRequest(f"kind must be one of {sorted(SEARCH_KINDS)}; got {kind[:20]!r}.", code="bad_parameter")
        browse = _browse(request)
        moment = browse.moment(datastack, version, timestamp)
        readable = _readable(request, context)
        if kind == "root":
            root = browse.check_root(datastack, q)
            return RedirectResponse(neuron_href(datastack, root, moment), status_code=303)
        if kind == "nucleus":
            return RedirectResponse(neuron_href(datastack, browse.nucleus_root(moment, readable, q), moment), status_code=303)
        found = browse.cell_type_search(moment, readable, q, table, page)
        return _render(
            request, "browse/search.html", identity=context.identity, moment=moment, found=found, datastack=datastack, neuron_href=neuron_href, href=_href
        )

    return _page(request, datastack, make)
