"""The MICrONS/V1DD set-up guides, run with only the import and the server address changed.

Each flow runs with the genuine caveclient 8.2.1 and with opencave's client against a real
``opencave serve``. Where the guides call keyword arguments that caveclient 8.2.1 lacks
(``save_token(server_address=…)``, ``auth.setup_token(server_address=…)``), the genuine client
runs the closest equivalent it supports, as noted per test.
"""

from __future__ import annotations

import json
import os
import re

import pytest
import requests

from tests.clients import flavour

DS = "opencave_demo"
SECRETS = ".cloudvolume/secrets"


@pytest.fixture
def browser(monkeypatch):
    """Records the pages the client opens instead of starting a browser."""
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url, *a, **k: opened.append(url) or True)
    return opened


def _type_at_prompts(monkeypatch, hidden: list[str], typed: list[str]) -> None:
    hidden_answers, typed_answers = iter(hidden), iter(typed)
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(hidden_answers))
    monkeypatch.setattr("builtins.input", lambda prompt="": next(typed_answers))


def test_a_new_user_setup_token(impl, server, monkeypatch, browser, capsys, isolated_home):
    token = server.new_token()
    _type_at_prompts(monkeypatch, hidden=["not-a-token", "0" * 32, token.upper()], typed=["y"])
    impl.setup_token(server.url)
    out = capsys.readouterr().out
    assert browser[0] == server.url + "/sticky_auth/settings/tokens"
    assert "Invalid token format" in out and "Token did not work" in out
    client = impl(datastack_name=DS)
    assert client.server_address == server.url
    assert client.auth.token == token
    assert client.info.get_datastack_info()["local_server"] == server.url
    cache = json.loads((isolated_home / SECRETS / "cave_datastack_to_server_map.json").read_text())
    assert cache[DS] == server.url


def test_b_existing_user_save_token(impl, server, isolated_home):
    token = server.new_token()
    if flavour(impl) == "opencave":
        client = impl()
        client.auth.save_token(server_address=server.url, token=token, overwrite=True)
        client = impl(DS)
    else:  # caveclient 8.2.1 has no save_token(server_address=…): the global client is pointed at the server instead
        impl(server_address=server.url).auth.save_token(token=token, overwrite=True)
        impl(DS, server_address=server.url)
        client = impl(DS)
    assert client.server_address == server.url
    assert client.auth.token == token
    assert DS in client.info.get_datastacks()
    netloc = server.url.split("://")[1]
    saved = json.loads((isolated_home / SECRETS / f"{netloc}-cave-secret.json").read_text())
    assert saved["token"] == token


def test_c_token_in_use(impl, server, monkeypatch, browser):
    token = server.new_token()
    _type_at_prompts(monkeypatch, hidden=[token], typed=["y"])
    impl.setup_token(server.url)
    assert impl().auth.token == token
    assert impl(DS).auth.token == token


def test_d_two_deployments_two_tokens(impl, server, server_factory, backend, monkeypatch):
    other = server_factory(backend)
    other.cli("dataset", "add", "v1dd")
    other.cli("datastack", "add", "v1dd_like", "--dataset", "v1dd", "--aligned-volume", "opencave_demo")
    other.cli("permission", "grant", "default", "v1dd", "view")
    token_1, token_2 = server.new_token(), other.new_token()
    monkeypatch.setenv("CAVE_TOKEN_1", token_1)
    monkeypatch.setenv("CAVE_TOKEN_2", token_2)
    impl(DS, server_address=server.url, auth_token=token_1)  # remembers the datastack's server
    first = impl(DS, auth_token=os.environ["CAVE_TOKEN_1"])
    second = impl("v1dd_like", server_address=other.url, auth_token=os.environ["CAVE_TOKEN_2"])
    assert DS in first.info.get_datastacks()
    assert second.info.get_datastacks() == [DS, "v1dd_like"]
    assert first.info.get_datastack_info()["local_server"] == server.url
    assert second.info.get_datastack_info()["local_server"] == other.url
    assert first.auth.token == token_1 and second.auth.token == token_2
    with pytest.raises(requests.HTTPError, match="401"):
        impl(DS, server_address=other.url, auth_token=token_1)


def test_e_older_setup_token_make_new(impl, server, browser, capsys):
    from tests.test_auth_service import _browser_login

    password = "flow-e-password"
    email = f"flow-e-{flavour(impl)}@example.org"
    server.cli("user", "add", email, "--password", password, check=False)
    if flavour(impl) == "opencave":
        client = impl()
        client.auth.setup_token(server_address=server.url, make_new=True)
    else:  # caveclient 8.2.1's auth.setup_token has no server_address: the client is pointed at the server
        client = impl(server_address=server.url)
        client.auth.setup_token(make_new=True)
    create_url = server.url + "/auth/api/v1/create_token"
    assert create_url in capsys.readouterr().out
    assert browser == [create_url]

    session = requests.Session()  # the person, in a browser, on the page the client opened
    _browser_login(session, server, email, password)
    page = session.get(create_url, headers={"Accept": "text/html"})
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    created = session.post(create_url, data={"csrf_token": csrf})
    token = re.search(r'id="new-token">([0-9a-f]{32})<', created.text).group(1)

    if flavour(impl) == "opencave":
        client.auth.save_token(server_address=server.url, token=token, overwrite=True)
    else:
        client.auth.save_token(token=token, overwrite=True)
    assert impl(server_address=server.url).auth.token == token
    me = requests.get(server.url + "/auth/api/v1/user/cache", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["email"] == email


def test_opencave_never_sends_a_token_to_another_server(server, server_factory, backend, isolated_home):
    from opencave import CAVEclient

    other = server_factory(backend)
    token = server.new_token()
    CAVEclient().auth.save_token(server_address=server.url, token=token, overwrite=True)
    assert CAVEclient(server_address=server.url).auth.token == token
    assert CAVEclient(server_address=other.url).auth.token is None
    with pytest.raises(requests.HTTPError, match="401"):
        CAVEclient(server_address=other.url).info.get_datastacks()


def test_setup_token_command_line(server, isolated_home):
    """``opencave setup-token SERVER`` runs the same dialogue from a terminal."""
    import subprocess
    import sys

    token = server.new_token()
    env = {**os.environ, "HOME": str(isolated_home)}
    result = subprocess.run(
        [sys.executable, "-m", "opencave", "setup-token", server.url, "--no-open"],
        input=f"{token}\ny\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "All datastacks are configured" in result.stdout
    netloc = server.url.split("://")[1]
    assert json.loads((isolated_home / SECRETS / f"{netloc}-cave-secret.json").read_text())["token"] == token
