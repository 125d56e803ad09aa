"""A materialized version of a remote CAVE deployment, read through its materialization API (v3).

Only the calls a mirror needs: version and table metadata, row counts of an id range
(``count=true`` queries) and the rows of an id range as Arrow. Requests go through opencave's
client, so tokens follow caveclient's rules (an explicit token, else the server's token file).
HTTP failures become ``OpencaveError``s that say what to fix.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.ipc as ipc
import requests

from opencave.client.base import handle_response
from opencave.client.errors import AuthException, ServerIncompatibilityError
from opencave.client.query_frames import _TRUNCATION, ANSWER_READ_BYTES, _Pieces, answer_encoding, response_warnings
from opencave.errors import BadRequest, Forbidden, NotFound, OpencaveError, Unauthorized

T = TypeVar("T")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
QUERY_RETRIES = 4
RETRY_STATUSES = {429, 502, 503, 504}


@dataclass(frozen=True)
class Bound:
    """Rows whose ``column`` lies in ``(lo, hi]``."""

    column: str
    lo: int
    hi: int


@dataclass(frozen=True)
class Answer:
    rows: pa.Table
    truncated: bool  # the server said it capped the answer


class Unreachable(OpencaveError):
    status, default_code = 502, "server_unreachable"


class RemoteVersion:
    """One datastack of a CAVE deployment, as its materialization API shows it."""

    def __init__(self, server_url: str, datastack: str, token: str | None = None, pool: int = 8) -> None:
        from opencave.client import CAVEclient
        from opencave.client.auth import AuthClient
        from opencave.client.errors import TokenFileError

        self.server_url = server_url.rstrip("/")
        self.datastack = datastack
        try:
            auth = AuthClient(token=token, server_address=self.server_url)
        except (TokenFileError, OSError) as error:
            raise BadRequest(f"cannot read the token for {self.server_url}: {error}", code="bad_token_file") from None
        if token is not None:
            self.token_used = "the token given with --token"
        elif auth.token is not None:
            self.token_used = f"the token in {getattr(auth, '_token_file', 'the token file')}"
        else:
            self.token_used = f"a request without a token (none given with --token, and no token file for {self.server_url})"
        self.client = self._call(
            f"looking up datastack {datastack}",
            lambda: CAVEclient(
                datastack,
                server_address=self.server_url,
                auth_token=auth.token,
                write_server_cache=False,
                pool_maxsize=pool,
                max_retries=3,
            ),
        )
        self._materialize: Any = None

    # -- errors -----------------------------------------------------------------------------
    def _problem(self, error: BaseException, doing: str) -> OpencaveError:
        """``error`` (from requests or the client) as one clear line naming the server."""
        where = self.server_url
        if isinstance(error, (requests.ConnectionError, requests.Timeout)):
            return Unreachable(f"cannot reach {where} while {doing} ({type(error).__name__}); check the address and that the server is up")
        how_to = f"pass --token TOKEN or save one with `opencave setup-token {where}`"
        if isinstance(error, AuthException):
            return Unauthorized(f"{where} sent a login page while {doing}: it did not accept {self.token_used}; {how_to}")
        response = getattr(error, "response", None)
        if isinstance(error, requests.HTTPError) and response is not None:
            status = response.status_code
            message = _server_message(response)
            if status == 401:
                return Unauthorized(f"{where} did not accept {self.token_used} while {doing} ({message}); {how_to}")
            if status == 403:
                return Forbidden(f"{where} does not let {self.token_used} read this while {doing} ({message}); ask its administrators for access, or {how_to}")
            if status in (404, 410):
                return NotFound(f"{where}: {message} (while {doing})", code="remote_not_found")
            return BadRequest(f"{where} answered {status} while {doing}: {message}", code="remote_error")
        return BadRequest(f"{where} while {doing}: {error}", code="remote_error")

    def _call(self, doing: str, work: Callable[[], T], retries: int = 0) -> T:
        """``work()``, its failure as an ``OpencaveError``. Queries are tried ``retries`` more
        times after a dropped connection or a busy server (429, 502-504), waiting as it asks
        or 1, 2, 4… s: a mirror of hours should not stop at one hiccup of a cloud service."""
        for attempt in range(retries + 1):
            try:
                return work()
            except OpencaveError:
                raise
            except (requests.RequestException, AuthException, ServerIncompatibilityError, ValueError, KeyError) as error:
                response = getattr(error, "response", None)
                status = getattr(response, "status_code", None)
                transient = isinstance(error, (requests.ConnectionError, requests.Timeout)) or status in RETRY_STATUSES
                if not transient or attempt == retries:
                    raise self._problem(error, doing) from None
                wait = (response.headers.get("Retry-After") if response is not None else None) or ""
                time.sleep(min(float(wait) if wait.isdigit() else 2.0**attempt, 60.0))
        raise AssertionError("unreachable")

    @property
    def materialize(self) -> Any:
        """The client of the datastack's materialization service (found through the info service)."""
        if self._materialize is None:
            self._materialize = self._call(f"looking up datastack {self.datastack}", lambda: self.client.materialize)
            self._call(f"looking up datastack {self.datastack}", lambda: self._materialize.api_version)
        return self._materialize

    def _get(self, endpoint: str, doing: str, **mapping: Any) -> Any:
        mat = self.materialize
        return self._call(doing, lambda: mat._get_json(mat._url(endpoint, datastack_name=self.datastack, **mapping), log_warning=False))

    # -- metadata -----------------------------------------------------------------------------
    def versions(self) -> list[int]:
        return sorted(int(v) for v in self._get("versions", f"listing the versions of {self.datastack}"))

    def version_metadata(self, version: int) -> dict[str, Any]:
        return self._get("version_metadata", f"reading version {version} of {self.datastack}", version=version)

    def tables_metadata(self, version: int) -> list[dict[str, Any]]:
        """Every table's metadata at the version, as the server sends it (``voxel_resolution_x/y/z``).
        CAVE answers 404 for a version without tables, so that (after the version was found) is none."""
        try:
            return self._get("all_tables_metadata", f"reading the tables of version {version}", version=version) or []
        except NotFound:
            return []

    def views(self, version: int) -> dict[str, dict[str, Any]]:
        """``{view: metadata}`` of the version (none when the server answers 404, as CAVE may)."""
        try:
            return self._get("get_views", f"reading the views of version {version}", version=version) or {}
        except NotFound:
            return {}

    def view_schema(self, version: int, view: str) -> dict[str, dict[str, str]]:
        return self._get("view_schema", f"reading the columns of view {view}", version=version, view_name=view)

    # -- rows ------------------------------------------------------------------------------------
    def _post(self, version: int, kind: str, name: str, bounds: tuple[Bound, ...], columns: list[str] | None, count: bool, limit: int | None = None) -> requests.Response:
        mat = self.materialize
        if kind == "view":
            url = mat._url("view_query", datastack_name=self.datastack, version=version, view_name=name)
        else:
            url = mat._url("simple_query", datastack_name=self.datastack, version=version, table_name=name)
        body: dict[str, Any] = {}
        if bounds:
            body["filter_greater_dict"] = {name: {b.column: b.lo for b in bounds}}
            body["filter_less_equal_dict"] = {name: {b.column: b.hi for b in bounds}}
        if columns is not None:
            body["select_columns"] = columns
        if limit is not None:
            body["limit"] = limit
        params = {"return_pyarrow": True, "arrow_format": True, "split_positions": True, "direct_sql_pandas": True}
        if count:
            params["count"] = True
        return mat.session.post(
            url,
            data=json.dumps(body),
            params=params,
            headers={"Content-Type": "application/json", "Accept-Encoding": answer_encoding(mat.server_address)},
            stream=True,
        )

    def _read(self, response: requests.Response) -> pa.Table:
        handle_response(response, as_json=False, log_warning=False)
        media = _media(response)
        if media != "data.arrow":
            raise BadRequest(f"{self.server_url} answered a query with {media or 'no content type'}, not an Arrow stream; it is not a CAVE materialization service of version 5.13 or newer", code="remote_error")
        reader = io.BufferedReader(_Pieces(response.iter_content(chunk_size=ANSWER_READ_BYTES)), buffer_size=1 << 16)
        return ipc.open_stream(reader).read_all()

    def count(self, version: int, kind: str, name: str, bounds: tuple[Bound, ...] = ()) -> int:
        """Rows of the table (or view) within ``bounds``."""
        doing = f"counting rows of {name} {describe(bounds)}"

        def work() -> int:
            with self._post(version, kind, name, bounds, None, count=True) as response:
                if _media(response) == "application/json":  # a count some servers send as JSON records
                    handle_response(response, as_json=False, log_warning=False)
                    body = response.json()
                    records = [body] if isinstance(body, dict) else body if isinstance(body, list) else []
                    values = [body] if isinstance(body, int) else [row.get("count") for row in records if isinstance(row, dict)]
                else:
                    table = self._read(response)
                    values = table.column("count").to_pylist() if "count" in table.column_names else []
            if len(values) != 1 or not isinstance(values[0], int):
                raise BadRequest(f"{self.server_url} answered a count query on {name} without one count", code="remote_error")
            return values[0]

        return self._call(doing, work, QUERY_RETRIES)

    def rows(
        self, version: int, kind: str, name: str, bounds: tuple[Bound, ...] = (), columns: list[str] | None = None, limit: int | None = None
    ) -> Answer:
        """The rows within ``bounds`` (``truncated`` if the server said it capped them)."""

        def work() -> Answer:
            with self._post(version, kind, name, bounds, columns, count=False, limit=limit) as response:
                truncated = any(_TRUNCATION.search(line) for line in response_warnings(response))
                return Answer(self._read(response), truncated)

        return self._call(f"reading rows of {name} {describe(bounds)}", work, QUERY_RETRIES)


def describe(bounds: tuple[Bound, ...]) -> str:
    """``bounds`` as the range a user reads in an error: ``id in (0, 10000]``."""
    if not bounds:
        return "(all rows)"
    return " and ".join(f"{b.column} in ({b.lo}, {b.hi}]" for b in bounds)


def _media(response: requests.Response) -> str:
    return (response.headers.get("Content-Type") or "").split(";")[0].strip()


def _server_message(response: requests.Response) -> str:
    """The server's own words: the JSON ``message`` (opencave, CAVE) or the first line of text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    text = (response.text or "").strip().splitlines()
    return text[0][:300] if text else response.reason or str(response.status_code)
