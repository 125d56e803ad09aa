"""A real headless Chromium logs in, creates a token on the tokens page and revokes it there."""

from __future__ import annotations

import shutil

import caveclient
import pytest
import requests

import opencave

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium is not installed (Debian: apt-get install chromium); .ci/run installs it")
    return path


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=_chromium(), headless=True, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


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
