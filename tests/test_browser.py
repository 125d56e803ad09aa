"""A real headless Chromium logs in, creates a token on the tokens page and revokes it there."""

from __future__ import annotations


import caveclient
import pytest
import requests

import opencave
from tests.support.chromium import headless_chromium

@pytest.fixture(scope="module")
def browser():
    with headless_chromium() as instance:
        yield instance


@pytest.mark.browser
def test_login_create_use_and_revoke_token(browser, server):
    email, password = "browser-user@example.org", "browser-password"
    server.cli("user", "add", email, "--password", password, check=False)
    page = browser.new_context().new_page()

    page.goto(server.url + "/sticky_auth/settings/tokens")
    assert "/sticky_auth/login" in page.url, "the tokens page asks for a login first"
    page.fill("#email", email)
    page.fill("#password", "wrong-password")
    page.click("#login")
    assert "wrong password" in page.inner_text("#login-error")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#login")
    assert page.url.endswith("/sticky_auth/settings/tokens")

    page.fill("#description", "made in a browser")
    page.click("#create-token")
    token = page.inner_text("#new-token").strip()
    assert len(token) == 32

    for client in (
        opencave.CAVEclient("opencave_demo", server_address=server.url, auth_token=token),
        caveclient.CAVEclient("opencave_demo", server_address=server.url, auth_token=token),
    ):
        assert "opencave_demo" in client.info.get_datastacks()
    row = page.locator("tr", has_text="made in a browser")
    assert token[:4] in row.inner_text() and token not in row.inner_text(), "the list shows only a hint"

    page.goto(server.url + "/sticky_auth/settings/tokens")
    page.locator("tr", has_text="made in a browser").locator("button.revoke").click()
    assert page.locator("tr", has_text="made in a browser").count() == 0
    for module in (opencave, caveclient):
        with pytest.raises(requests.HTTPError, match="401"):
            module.CAVEclient(server_address=server.url, auth_token=token).info.get_datastacks()

    page.click("#logout")
    page.goto(server.url + "/sticky_auth/settings/tokens")
    assert "/sticky_auth/login" in page.url, "logging out ends the browser session"


# -- another site must not get the token nor change it -------------------------------------------
AUTHORIZE = "/sticky_auth/api/v1/authorize"


@pytest.fixture
def other_site():
    """A second site on another loopback address (another origin and site for the browser):
    serves the pages put in ``pages`` and records every path it is asked for."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread
    from types import SimpleNamespace
    from urllib.parse import urlsplit

    site = SimpleNamespace(pages={}, seen=[])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            site.seen.append(self.path)
            body = site.pages.get(urlsplit(self.path).path, "<p>other site</p>").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
    Thread(target=httpd.serve_forever, daemon=True).start()
    site.url = f"http://127.0.0.2:{httpd.server_address[1]}"
    site.netloc = site.url.removeprefix("http://")
    yield site
    httpd.shutdown()
    httpd.server_close()


def _logged_in_page(browser, server, email: str):
    password = "browser-password"
    server.cli("user", "add", email, "--password", password, check=False)
    context = browser.new_context()
    page = context.new_page()
    page.goto(server.url + "/sticky_auth/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#login")
    assert page.url.endswith("/sticky_auth/settings/tokens")
    return context, page


def _valid(server, token: str) -> bool:
    response = requests.get(server.url + "/auth/api/v1/user/cache", headers={"Authorization": f"Bearer {token}"})
    return response.status_code == 200


@pytest.mark.browser
def test_off_origin_redirects_keep_the_token_here(browser, server, other_site):
    from urllib.parse import quote

    context, page = _logged_in_page(browser, server, "redirect-victim@example.org")
    login_token = next(c["value"] for c in context.cookies() if c["name"] == "middle_auth_token")
    host = other_site.netloc
    forms = [
        f"///{host}/x",
        f"//{host}/x",
        f"/\\{host}/x",
        f"\\\\{host}/x",
        f"http:/\\{host}/x",
        f"/\t/{host}/x",
        f"/\n/{host}/x",
        f"http://127.0.0.1:{server.port}@{host}/x",
        f"http://u:p@{host}/x",
        f"{other_site.url}/x",
        "javascript:document.title='pwned'",
    ]
    for form in forms:
        page.goto(f"{server.url}{AUTHORIZE}?redirect={quote(form, safe='')}")
        assert page.url.startswith(server.url + AUTHORIZE), (form, page.url)
        assert "Redirect refused" in page.content(), form
    assert not any(login_token in path for path in other_site.seen), other_site.seen

    page.goto(f"{server.url}{AUTHORIZE}?redirect={quote('/?from=login', safe='')}")
    assert page.url.startswith(server.url + "/?from=login&middle_auth_token=" + login_token), "this server's own pages get it"
    context.close()


@pytest.mark.browser
def test_login_popup_posts_the_token_to_allowed_openers_only(browser, server, other_site):
    context, page = _logged_in_page(browser, server, "popup-victim@example.org")
    other_site.pages["/opener"] = f"""<script>
      window.received = [];
      window.addEventListener("message", (event) => window.received.push(JSON.stringify(event.data)));
      window.popup = window.open("{server.url}{AUTHORIZE}");
    </script>"""
    with context.expect_page() as opened:  # listening before the page opens it: no event missed
        page.goto(other_site.url + "/opener")
    popup = opened.value
    popup.wait_for_selector("#authorized")
    page.wait_for_timeout(1000)
    assert page.evaluate("window.received") == [], "an opener of another origin receives nothing"

    page.goto(server.url + "/")  # an allowed origin (this server's own) does receive it
    page.evaluate(
        """() => { window.received = [];
                   window.addEventListener("message", (event) => window.received.push(event.data));
                   window.open("%s"); }"""
        % (server.url + AUTHORIZE)
    )
    page.wait_for_function("window.received.length > 0")
    login_token = next(c["value"] for c in context.cookies() if c["name"] == "middle_auth_token")
    assert page.evaluate("window.received") == [{"token": login_token, "app_urls": [server.url]}]
    context.close()


@pytest.mark.browser
def test_cross_site_pages_cannot_revoke_tokens_or_log_out(browser, server, other_site):
    email = "csrf-victim@example.org"
    context, page = _logged_in_page(browser, server, email)
    api_token = server.new_token(email)
    api = server.url + "/auth/api/v1"
    for path in ("/refresh_token", "/logout", "/create_token"):
        other_site.pages["/go"] = f'<script>location = "{api}{path}";</script>'
        page.goto(other_site.url + "/go")
        page.wait_for_url(api + path)
        assert page.locator("#confirm").count() == 1, f"{path}: a confirmation page, nothing done"
    for target in (f"{api}/refresh_token", f"{api}/create_token"):  # through the login hand-over too
        from urllib.parse import quote

        other_site.pages["/go"] = f'<script>location = "{server.url}{AUTHORIZE}?redirect={quote(target, safe="")}";</script>'
        page.goto(other_site.url + "/go")
        page.wait_for_url(target + "?*")
        assert page.locator("#confirm").count() == 1
    for action in (f"{api}/refresh_token", f"{api}/create_token", server.url + "/sticky_auth/logout"):
        other_site.pages["/form"] = f"""<form method="post" action="{action}">
            <input name="csrf_token" value="forged"></form><script>document.forms[0].submit();</script>"""
        page.goto(other_site.url + "/form")
        page.wait_for_url(action)
        assert "csrf_failed" in page.content(), action
    assert _valid(server, api_token), "the API token survived every attempt"
    assert len(requests.get(api + "/user/token", headers={"Authorization": f"Bearer {api_token}"}).json()) == 1, "no token was created"
    page.goto(server.url + "/sticky_auth/settings/tokens")
    assert page.url.endswith("/sticky_auth/settings/tokens"), "still logged in"

    page.goto(api + "/refresh_token")  # the user's own confirmation does act
    page.click("#confirm")
    new_token = page.inner_text("#new-token").strip()
    assert _valid(server, new_token) and not _valid(server, api_token)
    context.close()
