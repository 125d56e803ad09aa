"""Auth service semantics: tokens, identities, groups, permissions, terms of service."""

from __future__ import annotations

import re

import requests

API = "/auth/api/v1"


def _get(server, path, token, **kw):
    return requests.get(server.url + path, headers={"Authorization": f"Bearer {token}"}, **kw)


def test_token_create_prints_only_the_token(server):
    result = server.cli("token", "create", "admin@localhost")
    assert re.fullmatch(r"[0-9a-f]{32}\n", result.stdout)


def test_several_tokens_per_user_and_revocation(server):
    first, second = server.new_token(), server.new_token()
    assert first != second
    for token in (first, second):
        assert _get(server, API + "/user/cache", token).json()["email"] == "admin@localhost"
    server.cli("token", "revoke", first)
    assert _get(server, API + "/user/cache", first).status_code == 401
    assert _get(server, API + "/user/cache", second).status_code == 200
    revoked_again = server.cli("token", "revoke", first, check=False)
    assert revoked_again.returncode == 2 and "already revoked" in revoked_again.stderr


def test_tokens_are_stored_hashed(server):
    token = server.new_token()
    listed = _get(server, API + "/user/token", token).json()
    assert all(entry["token"] != token for entry in listed)
    assert any(entry["token"] == f"{token[:4]}…{token[-4:]}" for entry in listed)
    if server.database is None:
        database = (server.data_dir / "opencave.db").read_bytes()
        assert token.encode() not in database


def test_token_api_create_list_delete(server, admin_token):
    headers = {"Authorization": f"Bearer {admin_token}"}
    new = requests.post(server.url + API + "/user/token", json={"description": "laptop"}, headers=headers).json()
    assert re.fullmatch(r"[0-9a-f]{32}", new)
    entry = next(t for t in _get(server, API + "/user/token", new).json() if t["description"] == "laptop")
    assert set(entry) >= {"id", "token", "user_id"}
    assert requests.delete(server.url + API + f"/user/token/{entry['id']}", headers=headers).json() == "success"
    assert _get(server, API + "/user/token", new).status_code == 401
    missing = requests.delete(server.url + API + f"/user/token/{entry['id']}", headers=headers)
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_token"


def test_programmatic_create_token_and_refresh(server):
    server.cli("user", "add", "refresher@example.org")
    token = server.new_token("refresher@example.org")
    created = _get(server, API + "/create_token", token)
    assert created.status_code == 200 and re.fullmatch(r"[0-9a-f]{32}", created.json())
    refreshed = _get(server, API + "/refresh_token", created.json()).json()
    assert _get(server, API + "/user/cache", refreshed).status_code == 200
    assert _get(server, API + "/user/cache", token).status_code == 401, "refresh_token replaces older API tokens"


def test_user_cache_groups_and_permissions(server):
    server.cli("user", "add", "cache-user@example.org")
    server.cli("dataset", "add", "cache_ds")
    server.cli("group", "add", "cache_team")
    server.cli("group", "add-user", "cache_team", "cache-user@example.org")
    server.cli("permission", "grant", "cache_team", "cache_ds", "view")
    token = server.new_token("cache-user@example.org")
    cache = _get(server, API + "/user/cache", token).json()
    assert cache["groups"] == ["default", "cache_team"]
    assert cache["permissions_v2"]["cache_ds"] == ["view"]
    assert cache["permissions"]["cache_ds"] == 1
    server.cli("permission", "grant", "cache_team", "cache_ds", "edit")
    cache = _get(server, API + "/user/cache", token).json()
    assert cache["permissions_v2"]["cache_ds"] == ["view", "edit"], "grants apply at once"
    server.cli("permission", "revoke", "cache_team", "cache_ds", "view")
    assert _get(server, API + "/user/cache", token).json()["permissions_v2"]["cache_ds"] == ["edit"]


def test_group_users_and_user_information_need_an_admin(server, admin_token):
    server.cli("user", "add", "plain@example.org")
    plain = server.new_token("plain@example.org")
    assert _get(server, API + "/group/1/user", plain).status_code == 403
    members = _get(server, API + "/group/1/user", admin_token).json()
    assert {"id", "name", "admin"} <= set(members[0])
    assert _get(server, API + "/group/99999/user", admin_token).json() == []
    users = _get(server, API + "/user", admin_token, params={"id": "1"}).json()
    assert users[0]["email"] == "admin@localhost" and users[0]["admin"] is True


def test_terms_of_service_gate(server, admin_token):
    from tests.test_bad_input import _register_datastack

    server.cli("dataset", "add", "tos_ds")
    server.cli("permission", "grant", "default", "tos_ds", "view")
    server.cli("tos", "add", "tos_ds terms", "--text", "Cite the dataset.", "--dataset", "tos_ds")
    server.cli("user", "add", "reader@example.org", "--password", "reader-password")
    _register_datastack(server, "tos_stack", "tos_ds")
    token = server.new_token("reader@example.org")
    response = _get(server, "/info/api/v2/datastack/full/tos_stack", token)
    assert response.status_code == 403 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == "missing_tos"
    assert body["data"]["tos_form_url"].startswith(server.url + "/sticky_auth/api/v1/tos/")
    assert "tos_stack" in _get(server, "/info/api/v2/datastacks", token).json(), "listing ignores ToS, as upstream"

    session = requests.Session()
    _browser_login(session, server, "reader@example.org", "reader-password")
    page = session.get(body["data"]["tos_form_url"])
    assert "Cite the dataset." in page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    accepted = session.post(body["data"]["tos_form_url"], data={"csrf_token": csrf, "redirect": "/"})
    assert accepted.status_code == 200 and "Accepted" in accepted.text
    assert _get(server, "/info/api/v2/datastack/full/tos_stack", token).status_code == 200


def _browser_login(session: requests.Session, server, email: str, password: str) -> None:
    page = session.get(server.url + "/sticky_auth/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    response = session.post(
        server.url + "/sticky_auth/login", data={"email": email, "password": password, "csrf_token": csrf, "next": "/"}
    )
    assert response.status_code == 200, response.text


def test_forms_reject_missing_csrf(server):
    session = requests.Session()
    session.get(server.url + "/sticky_auth/login")
    response = session.post(server.url + "/sticky_auth/login", data={"email": "admin@localhost", "password": "x"})
    assert response.status_code == 403 and response.json()["error"] == "csrf_failed"


def test_login_cookie_is_httponly_and_wrong_password_fails(server):
    server.cli("user", "add", "cookie@example.org", "--password", "cookie-password")
    session = requests.Session()
    page = session.get(server.url + "/sticky_auth/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    wrong = session.post(server.url + "/sticky_auth/login", data={"email": "cookie@example.org", "password": "nope-nope", "csrf_token": csrf})
    assert wrong.status_code == 401 and "wrong password" in wrong.text
    response = session.post(
        server.url + "/sticky_auth/login",
        data={"email": "cookie@example.org", "password": "cookie-password", "csrf_token": csrf, "next": "https://evil.example/"},
        allow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/sticky_auth/settings/tokens", "no open redirects"
    cookie = response.headers["set-cookie"]
    assert "middle_auth_token=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie


def test_browser_create_token_page_requires_login(server):
    response = requests.get(server.url + "/auth/api/v1/create_token", headers={"Accept": "text/html"}, allow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/sticky_auth/login?next=")
    api = requests.get(server.url + "/auth/api/v1/create_token")
    assert api.status_code == 401 and api.json()["error"] == "no_token"
