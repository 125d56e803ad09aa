"""Route lookup that skips a whole service when the path is not under it.

Starlette and FastAPI find a request's route by trying every route in order, and FastAPI tries
each included router's routes twice (to match, then to handle). With some 250 routes that
costs 0.1–0.3 ms per request, more than the rest of a small request's routing. A
``PrefixedRouter`` wraps one service's router and answers "no match" at once for a path outside
the first path segments of its routes, so a request only walks the routes of its own service.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter
from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match


def _paths(routes: list[BaseRoute]) -> Iterator[str]:
    for route in routes:
        inner = getattr(route, "original_router", None)  # a router included in this one
        if inner is not None:
            yield from _paths(inner.routes)
        else:
            yield getattr(route, "path", "")


def _prefix(path: str) -> str:
    """What every path a route of ``path`` matches starts with: its first segment ("" when that
    segment is a parameter, so the route may match anything)."""
    first, slash, _ = path.lstrip("/").partition("/")
    if not first or "{" in first:
        return ""
    return f"/{first}{slash}"


class PrefixedRouter(APIRouter):
    """One service's router (included in it), tried only for paths under its routes' prefixes."""

    def __init__(self, router: APIRouter, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.include_router(router)
        self._prefixes: tuple[str, ...] | None = None

    def matches(self, scope: Any) -> tuple[Match, dict]:
        if self._prefixes is None:
            self._prefixes = tuple(sorted({_prefix(path) for path in _paths(self.routes)}))
        if scope["type"] == "http" and not get_route_path(scope).startswith(self._prefixes):
            return Match.NONE, {}
        return super().matches(scope)
