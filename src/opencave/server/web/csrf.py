"""Signed double-submit CSRF protection for the HTML forms.

A random value lives in an HttpOnly, SameSite=Strict cookie; each form carries its HMAC under the
server secret. A cross-site page can neither read the cookie nor compute the HMAC, and every
server process shares the secret through the store, so no server-side session is needed. As a
second line, a form a browser labels as sent from another site (``Sec-Fetch-Site: cross-site``)
is refused whatever it carries.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request, Response

from opencave.errors import Forbidden

CSRF_COOKIE = "opencave_csrf"
CSRF_FIELD = "csrf_token"


def _sign(secret: str, value: str) -> str:
    return hmac.new(secret.encode(), value.encode(), hashlib.sha256).hexdigest()


def issue(request: Request, secret: str) -> tuple[str, str | None]:
    """The form token for this request, and a new cookie value when the browser has none."""
    value = request.cookies.get(CSRF_COOKIE)
    fresh = None
    if not value:
        value = fresh = secrets.token_hex(16)
    return _sign(secret, value), fresh


def set_cookie(response: Response, value: str | None, secure: bool) -> None:
    if value:
        response.set_cookie(CSRF_COOKIE, value, httponly=True, samesite="strict", secure=secure, path="/")


def verify(request: Request, secret: str, form_token: str | None) -> None:
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise Forbidden("A form sent from another site is refused; use the form on this server's own page.", code="csrf_failed")
    value = request.cookies.get(CSRF_COOKIE)
    if not value or not form_token or not hmac.compare_digest(_sign(secret, value), form_token):
        raise Forbidden(
            "The form's security token is missing or stale; reload the page and submit it again.",
            code="csrf_failed",
        )
