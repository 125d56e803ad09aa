"""The login hands tokens only to allowed origins, no GET a browser can be made to send changes
tokens, auth and info ids beyond int64 answer 400, and tokens never reach the access log."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
import requests

from tests.support.postgres import free_port
from tests.test_auth_service import _browser_login

API = "/auth/api/v1"
AUTHORIZE = "/sticky_auth/api/v1/authorize"
HTML = {"Accept": "text/html,application/xhtml+xml"}
TOO_BIG = str(2**63)

OFF_ORIGIN = [
    "///other.host/x",
    "//other.host/x",
    "/\\other.host/x",
    "\\\\other.host/x",
    "https:other.host/x",
    "/\t/other.host/x",
    "/\n/other.host/x",
    "http://127.0.0.1:{port}@other.host/",
    "http://user:pw@127.0.0.1:{port}/x",
    "http://ｏｔｈｅｒ.host/",
    "javascript:alert(document.cookie)",
    "data:text/html,<script>alert(1)</script>",
]


def _logged_in(server, email: str) -> requests.Session:
    server.cli("user", "add", email, "--password", "security-password", check=False)
    session = requests.Session()
    _browser_login(session, server, email, "security-password")
    return session


def _csrf(page: requests.Response) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


@pytest.mark.parametrize("target", OFF_ORIGIN)
def test_authorize_refuses_every_off_origin_form(server, target):
    session = _logged_in(server, "redirects@example.org")
    response = session.get(server.url + AUTHORIZE, params={"redirect": target.format(port=server.port)}, allow_redirects=False)
    assert response.status_code == 400 and "Redirect refused" in response.text
    assert "location" not in response.headers
    assert session.cookies["middle_auth_token"] not in response.text


def test_authorize_hands_the_token_to_this_server_and_the_viewer_sites(server):
    session = _logged_in(server, "redirects@example.org")
    token = session.cookies["middle_auth_token"]
    response = session.get(server.url + AUTHORIZE, params={"redirect": "/sticky_auth/settings/tokens?a=1#part"}, allow_redirects=False)
    assert response.status_code == 303 and response.headers["cache-control"] == "no-store"
    assert response.headers["location"] == f"/sticky_auth/settings/tokens?a=1&middle_auth_token={token}&middle_auth_url=127.0.0.1%3A{server.port}%2Fsticky_auth&token={token}#part"
    tricky = session.get(server.url + AUTHORIZE, params={"redirect": "/.//other.host/x"}, allow_redirects=False)
    assert tricky.headers["location"].startswith(server.url + "//other.host/x?"), "a path that looks protocol-relative stays absolute"
    viewer = session.get(server.url + AUTHORIZE, params={"redirect": server.url + "/neuroglancer/#!x"}, allow_redirects=False)
    assert viewer.status_code == 303, "the demo datastack's viewer site (the bundled viewer) is allowed"
    assert viewer.headers["location"].startswith("/neuroglancer/?middle_auth_token=")


def test_authorize_without_redirect_posts_only_to_allowed_origins(server):
    session = _logged_in(server, "redirects@example.org")
    page = session.get(server.url + AUTHORIZE)
    assert page.status_code == 200 and page.headers["x-frame-options"] == "DENY"
    targets = re.search(r"for \(const origin of (\[.*?\])\)", page.text).group(1)
    assert targets == f'["{server.url}"]', "the demo's viewer is this server's own"
    assert '"*"' not in page.text


def test_login_next_follows_the_same_rules(server):
    session = requests.Session()
    page = session.get(server.url + "/sticky_auth/login", params={"next": "/\t/other.host/"})
    assert 'name="next" value="/sticky_auth/settings/tokens"' in page.text


@pytest.mark.parametrize("path", [API + "/refresh_token", API + "/logout", API + "/create_token"])
def test_state_changing_gets_need_a_header_token(server, path):
    session = _logged_in(server, "csrf@example.org")
    bearer = server.new_token("csrf@example.org")
    login = session.cookies["middle_auth_token"]
    for credentials in ({"cookies": {"middle_auth_token": login}}, {"params": {"middle_auth_token": login}}):
        confirm = requests.get(server.url + path, headers=HTML, allow_redirects=False, **credentials)
        if "cookies" in credentials:
            assert confirm.status_code == 200 and 'id="confirm"' in confirm.text, "a browser session confirms first"
        refused = requests.get(server.url + path, **credentials)
        assert refused.status_code == 403 and refused.json()["error"] == "confirmation_required"
        assert "Authorization: Bearer" in refused.json()["message"]
    for token in (bearer, login):
        assert requests.get(server.url + API + "/user/cache", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_confirmation_forms_need_their_csrf_token(server):
    session = _logged_in(server, "csrf@example.org")
    bearer = server.new_token("csrf@example.org")
    page = session.get(server.url + API + "/refresh_token", headers=HTML)
    forged = session.post(server.url + API + "/refresh_token", data={"csrf_token": "0" * 64})
    assert forged.status_code == 403 and forged.json()["error"] == "csrf_failed"
    cross_site = session.post(server.url + API + "/refresh_token", data={"csrf_token": _csrf(page)}, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross_site.status_code == 403 and cross_site.json()["error"] == "csrf_failed"
    assert requests.get(server.url + API + "/user/cache", headers={"Authorization": f"Bearer {bearer}"}).status_code == 200

    confirmed = session.post(server.url + API + "/refresh_token", data={"csrf_token": _csrf(page)})
    assert confirmed.status_code == 201
    new = re.search(r'id="new-token">([0-9a-f]{32})<', confirmed.text).group(1)
    assert requests.get(server.url + API + "/user/cache", headers={"Authorization": f"Bearer {bearer}"}).status_code == 401
    assert requests.get(server.url + API + "/user/cache", headers={"Authorization": f"Bearer {new}"}).status_code == 200

    logout = session.get(server.url + API + "/logout", headers=HTML)
    assert 'action="/sticky_auth/logout"' in logout.text
    session.post(server.url + "/sticky_auth/logout", data={"csrf_token": _csrf(logout)})
    assert "/sticky_auth/login" in session.get(server.url + "/sticky_auth/settings/tokens").url


def test_bearer_refresh_and_logout_keep_working(server):
    server.cli("user", "add", "bearer@example.org", check=False)
    token = server.new_token("bearer@example.org")
    fresh = requests.post(server.url + API + "/refresh_token", headers={"Authorization": f"Bearer {token}"})
    assert fresh.status_code == 200 and re.fullmatch(r"[0-9a-f]{32}", fresh.json())
    headers = {"Authorization": f"Bearer {fresh.json()}"}
    assert requests.get(server.url + API + "/logout", headers=headers).json() == "success"
    assert requests.get(server.url + API + "/user/cache", headers=headers).status_code == 401


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", API + "/user/{big}"),
        ("get", API + "/group/{big}/user"),
        ("delete", API + "/user/token/{big}"),
        ("get", API + "/user?id=1,{big}"),
        ("get", API + "/username?id={big}"),
        ("get", "/info/api/v2/aligned_volume/id/{big}"),
    ],
)
@pytest.mark.parametrize("big", [2**31, 2**62, TOO_BIG])  # auth and info ids are 32-bit serials on every engine
def test_ids_beyond_int64_answer_400(server, admin_token, method, path, big):
    response = requests.request(method, server.url + path.format(big=big), headers={"Authorization": f"Bearer {admin_token}"})
    assert response.status_code == 400, response.text
    assert response.json()["error"] in ("bad_id", "invalid_ids") and "2147483647" in response.json()["message"]


def test_page_ids_beyond_int64_answer_400(server):
    session = _logged_in(server, "pages@example.org")
    assert session.get(server.url + f"/sticky_auth/api/v1/tos/{TOO_BIG}/accept").status_code == 400
    page = session.get(server.url + "/sticky_auth/settings/tokens")
    response = session.post(server.url + f"/sticky_auth/settings/tokens/{TOO_BIG}/revoke", data={"csrf_token": _csrf(page)})
    assert response.status_code == 400 and response.json()["error"] == "bad_id"


def test_service_dataset_lookup(server, admin_token):
    headers = {"Authorization": f"Bearer {admin_token}"}
    found = requests.get(server.url + API + "/service/datastack/table/opencave_demo/dataset", headers=headers)
    assert found.status_code == 200 and found.json() == "opencave_demo"
    missing = requests.get(server.url + API + "/service/datastack/table/no_such_stack/dataset", headers=headers)
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_resource"


def test_access_log_never_shows_a_token(tmp_path):
    """``opencave serve`` with its access log on: a token sent in the query string is redacted."""
    port = free_port()
    log_path = tmp_path / "serve.log"
    data = tmp_path / "data"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "opencave", "serve", "--port", str(port), "--data-dir", str(data), "--log-level", "info"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.time() + 180
            while True:
                assert process.poll() is None, log_path.read_text()
                try:
                    if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        break
                except (requests.ConnectionError, requests.Timeout):  # a loaded machine may answer slowly at first
                    pass
                assert time.time() < deadline, log_path.read_text()
                time.sleep(0.1)
            token = subprocess.run(
                [sys.executable, "-m", "opencave", "token", "create", "admin@localhost", "--data-dir", str(data)],
                capture_output=True, text=True, check=True,
            ).stdout.strip()
            url = f"http://127.0.0.1:{port}/info/api/v2/datastacks"
            assert requests.get(url, params={"middle_auth_token": token}).status_code == 200
            assert requests.get(url, params={"%6Diddle_auth_token": token, "token": token}).status_code in (200, 401)
            assert requests.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
            time.sleep(0.5)
        finally:
            process.terminate()
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    logged = log_path.read_text()
    assert "GET /info/api/v2/datastacks?middle_auth_token=[redacted]" in logged, logged[-2000:]
    assert token not in logged
