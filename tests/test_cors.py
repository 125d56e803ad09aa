"""Browsers may call the API from another origin (Neuroglancer served from its own site loads
states, manifests, fragments and skeletons with a bearer token): preflights are answered and
every answer, errors included, carries the CORS headers."""

from __future__ import annotations

import requests

ORIGIN = "https://neuroglancer.example.org"


def test_preflight_allows_authorization_from_any_origin(server):
    response = requests.options(
        f"{server.url}/nglstate/api/v1/post",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == "*"
    assert "authorization" in response.headers["access-control-allow-headers"].lower()
    assert "POST" in response.headers["access-control-allow-methods"]


def test_answers_and_errors_carry_the_headers(server, admin_token):
    ok = requests.get(f"{server.url}/nglstate/api/v1/version", headers={"Origin": ORIGIN, "Authorization": f"Bearer {admin_token}"})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "*"
    denied = requests.get(f"{server.url}/skeletoncache/api/v1/opencave_demo/precomputed/skeleton/info", headers={"Origin": ORIGIN})
    assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == "*"
    assert "www-authenticate" in denied.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-credentials" not in denied.headers


def test_origins_can_be_restricted(server_factory):
    """(Storage plays no part here, so one engine is enough.)"""
    restricted = server_factory("sqlite", "--cors-origins", "https://viewer.example.org/")
    allowed = requests.get(f"{restricted.url}/health", headers={"Origin": "https://viewer.example.org"})
    assert allowed.headers["access-control-allow-origin"] == "https://viewer.example.org"
    other = requests.get(f"{restricted.url}/health", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in other.headers
