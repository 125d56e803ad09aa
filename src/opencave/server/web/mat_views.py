"""The materialize views pages (``/materialize/views/…``, CAVE's paths): datastacks, versions,
a version's tables and views, a table's rows with filters, Neuroglancer links and downloads.

Thin: declared inputs, the login / terms-of-service / permission gate, a call into
``services/materialize/pages.py``, a template. A first visit without a session is sent to the
login page and back; a dataset whose terms the user has not accepted sends them to the terms page
and back. Failures answer an HTML page with the status and what to fix. Every page only reads.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Coroutine, Iterator
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

import pyarrow as pa
from fastapi import APIRouter, Query, Request
from fastapi import Path as FastPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from starlette.background import BackgroundTask

from opencave.errors import OpencaveError
from opencave.server.errors import _describe_validation
from opencave.server.params import Flag, Name
from opencave.server.routers.materialize import Datastack
from opencave.server.routers.materialize import Version as VersionNumber
from opencave.server.security import runtime_of
from opencave.server.web.gate import admit, visible_datastacks
from opencave.server.web.pages import _render
from opencave.services.materialize import pages
from opencave.services.materialize.service import VersionTable
from opencave.services.materialize.versions import format_time

PREFIX = "/materialize/views"
MAX_PAGE_SIZE = 500
MAX_PAGE = 10_000_000
DOWNLOAD_CHUNK = 1 << 20


class HtmlErrorRoute(APIRoute):
    """Answers a page's bad input and refusals (4xx) as an HTML page rather than JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as error:
                status, _, message = _describe_validation(list(error.errors()))
                return _error_page(request, status, message)
            except OpencaveError as error:
                if error.status >= 500:
                    raise
                return _error_page(request, error.status, error.message)

        return answer


router = APIRouter(prefix=PREFIX, tags=["materialize views"], route_class=HtmlErrorRoute, include_in_schema=False)

TITLES = {400: "Bad request", 422: "Bad request", 401: "Not logged in", 403: "Access denied", 404: "Not found"}


def _error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return _render(request, "views/error.html", status=status, identity=None, title=TITLES.get(status, "Request refused"), message=message)


# -- pages ---------------------------------------------------------------------------------------
@router.get("/", response_class=HTMLResponse)
@router.get("/index", response_class=HTMLResponse)
def index(request: Request) -> Response:
    """The datastacks the caller may view (those under terms not yet accepted included)."""
    gate = admit(request, None)
    if isinstance(gate, Response):
        return gate
    visible = visible_datastacks(request, gate)
    return _render(request, "views/datastacks.html", identity=gate.identity, datastacks=visible)


@router.get("/datastack/{datastack}", response_class=HTMLResponse)
def datastack_page(
    request: Request, datastack: Datastack, show_all: Annotated[Flag, Query(alias="all", description="list expired versions too")] = False
) -> Response:
    gate = admit(request, datastack)
    if isinstance(gate, Response):
        return gate
    versions = pages.versions(runtime_of(request).materialize, datastack, show_all)
    return _render(
        request, "views/datastack.html", identity=gate.identity, datastack=datastack, versions=versions, show_all=show_all, format_time=format_time
    )


@router.get("/datastack/{datastack}/version/{version}", response_class=HTMLResponse)
def version_page(request: Request, datastack: Datastack, version: VersionNumber) -> Response:
    gate = admit(request, datastack)
    if isinstance(gate, Response):
        return gate
    contents = pages.version_contents(runtime_of(request).materialize, datastack, version)
    return _render(request, "views/version.html", identity=gate.identity, datastack=datastack, contents=contents, format_time=format_time)


Page = Annotated[int, Query(ge=1, le=MAX_PAGE, description="page of rows, from 1")]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"rows per page (at most {MAX_PAGE_SIZE})")]


Kind = Annotated[Literal["table", "view"], FastPath(description="a frozen table, or a view of the version")]
NameOf = Annotated[Name, FastPath(description="the table's or view's name")]


def _frozen(request: Request, datastack: str, version: int, kind: str, name: str) -> tuple[VersionTable, list, dict[str, str]]:
    found = runtime_of(request).materialize.frozen_table(datastack, version, name, kind=kind)
    filters, given = pages.parse_filters(found, request.query_params)
    return found, filters, given


@router.get("/datastack/{datastack}/version/{version}/{kind}/{name}", response_class=HTMLResponse)
def rows_page(
    request: Request, datastack: Datastack, version: VersionNumber, kind: Kind, name: NameOf, page: Page = 1, page_size: PageSize = 50
) -> Response:
    """A page of a table's or view's rows (tables in id order), filtered by ``f.<column>`` parameters."""
    gate = admit(request, datastack)
    if isinstance(gate, Response):
        return gate
    found, filters, given = _frozen(request, datastack, version, kind, name)
    runtime = runtime_of(request)
    rows = pages.rows_page(runtime.materialize, found, filters, page, page_size)
    info = runtime.info.cached_datastack_info(datastack, runtime.settings.server_url, gate.generations)
    records = rows.table.to_pylist()
    filter_query = {pages.FILTER_PREFIX + c: v for c, v in given.items()}
    base = f"{PREFIX}/datastack/{quote(datastack, safe='')}/version/{version}/{kind}/{quote(name, safe='')}"
    return _render(
        request,
        "views/table.html",
        identity=gate.identity,
        datastack=datastack,
        kind=kind,
        found=found,
        rows=rows,
        columns=rows.table.column_names,
        records=records,
        filterable=[column for column, _ in pages.filterable_columns(found)],
        given=given,
        base=base,
        page_url=lambda n: base + "?" + urlencode({**filter_query, "page": n, "page_size": page_size}),
        download_query=urlencode(filter_query),
        page_sizes=(25, 50, 100, 250, MAX_PAGE_SIZE),
        links=pages.row_links(info, found, records),
    )


def _download_name(datastack: str, version: int, name: str, suffix: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in f"{datastack}_v{version}_{name}")
    return f"{safe}.{suffix}"


def _download_rows(request: Request, datastack: str, version: int, kind: str, name: str) -> Response | tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Every row the ``f.<column>`` filters match, for a caller allowed to see them (else where to send them)."""
    gate = admit(request, datastack)
    if isinstance(gate, Response):
        return gate
    found, filters, _ = _frozen(request, datastack, version, kind, name)
    return pages.all_rows(runtime_of(request).materialize, found, filters)


@router.get("/datastack/{datastack}/version/{version}/{kind}/{name}/download.csv")
def download_csv(request: Request, datastack: Datastack, version: VersionNumber, kind: Kind, name: NameOf) -> Response:
    """Every row matching the ``f.<column>`` filters as CSV, streamed."""
    rows = _download_rows(request, datastack, version, kind, name)
    if isinstance(rows, Response):
        return rows
    schema, batches = rows
    filename = _download_name(datastack, version, name, "csv")
    return StreamingResponse(
        pages.csv_chunks(schema, batches), media_type="text/csv; charset=utf-8", headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )


@router.get("/datastack/{datastack}/version/{version}/{kind}/{name}/download.parquet")
def download_parquet(request: Request, datastack: Datastack, version: VersionNumber, kind: Kind, name: NameOf) -> Response:
    """Every row matching the ``f.<column>`` filters as one Parquet file (spooled to disk when large)."""
    rows = _download_rows(request, datastack, version, kind, name)
    if isinstance(rows, Response):
        return rows
    schema, batches = rows
    spool = tempfile.SpooledTemporaryFile(max_size=64 << 20)
    pages.write_parquet(schema, batches, spool)
    size = spool.tell()
    spool.seek(0)

    def chunks():
        while chunk := spool.read(DOWNLOAD_CHUNK):
            yield chunk

    filename = _download_name(datastack, version, name, "parquet")
    return StreamingResponse(
        chunks(),
        media_type="application/vnd.apache.parquet",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Content-Length": str(size)},
        background=BackgroundTask(spool.close),
    )
