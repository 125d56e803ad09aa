"""Service routers wrapped in ``PrefixedRouter`` route exactly as plain included routers do:
same matches, same 405s and 404s, same OpenAPI document; only the lookup is shorter."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from opencave.server.routing import PrefixedRouter, _prefix


def _routers() -> list[APIRouter]:
    a = APIRouter()

    @a.get("/alpha/items/{item}")
    def item(item: int) -> dict:
        return {"item": item}

    @a.post("/alpha/items")
    def add() -> dict:
        return {"added": True}

    b = APIRouter(prefix="/beta")

    @b.get("/ping")
    def ping() -> str:
        return "pong"

    anything = APIRouter()

    @anything.get("/{name}/page")
    def page(name: str) -> str:
        return name

    return [a, b, anything]


def _app(wrapped: bool) -> FastAPI:
    app = FastAPI()
    for router in _routers():
        app.include_router(PrefixedRouter(router) if wrapped else router)
    return app


def test_prefixes_are_first_segments_or_anything():
    assert _prefix("/materialize/api/v3/x") == "/materialize/"
    assert _prefix("/health") == "/health"
    assert _prefix("/{name}/page") == ""
    assert _prefix("/") == ""


def test_wrapped_routers_answer_as_plain_ones():
    plain, wrapped = TestClient(_app(False)), TestClient(_app(True))
    for method, path in [
        ("GET", "/alpha/items/3"),
        ("GET", "/alpha/items/x"),  # 422
        ("POST", "/alpha/items"),
        ("GET", "/alpha/items"),  # 405: the path is there, not for GET
        ("GET", "/beta/ping"),
        ("POST", "/beta/ping"),
        ("GET", "/gamma/page"),  # only the router whose first segment is a parameter
        ("GET", "/nowhere/at/all"),  # 404
    ]:
        ours, theirs = wrapped.request(method, path), plain.request(method, path)
        assert (ours.status_code, ours.content) == (theirs.status_code, theirs.content), (method, path)
    assert wrapped.get("/alpha/items/3").json() == {"item": 3}
    assert _app(True).openapi()["paths"] == _app(False).openapi()["paths"]


def test_a_path_outside_a_router_is_not_tried_against_its_routes(monkeypatch):
    from fastapi.routing import APIRoute

    tried: list[str] = []
    original = APIRoute.matches

    def counting(self, scope):
        tried.append(self.path)
        return original(self, scope)

    monkeypatch.setattr(APIRoute, "matches", counting)
    client = TestClient(_app(True))
    assert client.get("/beta/ping").json() == "pong"
    assert not any(path.startswith("/alpha/") for path in tried), tried
    tried.clear()
    plain = TestClient(_app(False))
    assert plain.get("/beta/ping").json() == "pong"
    assert any(path.startswith("/alpha/") for path in tried), "a plain router tries every route"
