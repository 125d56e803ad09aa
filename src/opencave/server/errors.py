"""Turns every failure into a JSON error body with a real 4xx/5xx status — never a redirect."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from opencave.errors import OpencaveError
from opencave.server.faults import fault_answer
from opencave.server.params import CODES
from opencave.wire.errors import error_body

log = logging.getLogger("opencave.server")

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def error_response(status: int, error: str, message: str, data: dict | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, error, message, data), status_code=status, headers=headers)


def _authenticate_header(request: Request, error: OpencaveError) -> dict[str, str] | None:
    if error.status != 401:
        return None
    realm = f'Bearer realm="{request.app.state.runtime.settings.server_url}/sticky_auth/api/v1/authorize"'
    if error.code == "invalid_token":
        realm += ', error="invalid_token", error_description="Invalid/Expired Token"'
    return {"WWW-Authenticate": realm}


def _describe_validation(errors: list[dict]) -> tuple[int, str, str]:
    """400 with the validator's own code for the declared types of ``server/params.py``;
    422 ``invalid_request`` naming each failing field otherwise."""
    for err in errors:
        if err.get("type") == "json_invalid":
            detail = (err.get("ctx") or {}).get("error", "malformed JSON")
            return 400, "invalid_json", f"Request body is not valid JSON ({detail}); send a JSON document."
    for err in errors:
        if err.get("type") in CODES:
            where = _where(err)
            message = err.get("msg", "")
            return 400, err["type"], message if where in message else f"{where}: {message}"
    parts = [f"{_where(err)}: {err.get('msg')}" for err in errors[:10]]
    return 422, "invalid_request", "Invalid request — " + "; ".join(parts)


def _where(err: dict) -> str:
    """``query.bounds``, ``path.root_id``, ``node_ids.3`` — the place of a failing input."""
    return ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OpencaveError)
    async def _domain(request: Request, exc: OpencaveError):
        return error_response(exc.status, exc.code, exc.message, exc.data, _authenticate_header(request, exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError):
        status, code, message = _describe_validation(list(exc.errors()))
        return error_response(status, code, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404 and exc.detail == "Not Found":
            message = f"No endpoint at {request.url.path}; see the service guides in docs/ for valid URLs."
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}."
        elif exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            # FastAPI's answer to a body that is not UTF-8 or nests too deeply to decode
            message = "Request body is not valid JSON (not UTF-8, or nested too deeply); send a JSON document."
            return error_response(400, "invalid_json", message)
        else:
            message = str(exc.detail)
        return error_response(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), message, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        """Errors raised in a middleware (``FaultMiddleware`` answers those of the endpoints)."""
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        status, payload = fault_answer(exc)
        return JSONResponse(payload, status_code=status)
