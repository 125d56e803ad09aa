"""The ``CAVEclient`` factory, lazy sub-clients, change_auth, versions and ``setup_token``."""

from __future__ import annotations

import logging

import pytest

import opencave
from opencave import CAVEclient
from opencave.client import framework
from opencave.client.__main__ import main as cli_main
from opencave.client.datastack_lookup import read_map
from opencave.client.errors import GlobalClientError
from opencave.client.state import JSONService
from opencave.client.framework import CAVEclientFull, CAVEclientGlobal

from .helpers import (
    DATASTACK,
    GLOBAL,
    LOCAL,
    OTHER_TOKEN,
    SERVER,
    TOKEN,
    datastack_record,
    mock_info_service,
    read_json,
    token_file,
    write_json,
)


def test_package_exports():
    assert opencave.CAVEclient is CAVEclient
    assert callable(opencave.set_session_defaults) and callable(opencave.get_session_defaults)
    assert opencave.__version__
    with pytest.raises(AttributeError):
        getattr(opencave, "nothing_here")  # noqa: B009


def test_global_client_makes_no_requests(rsps):
    client = CAVEclient()
    assert type(client) is CAVEclientGlobal
    assert not isinstance(client, CAVEclient)
    assert client.server_address == GLOBAL
    assert client.datastack_name is None
    assert repr(client) == f"CAVEclient<datastack=None, server_address={GLOBAL}>"
    assert len(rsps.calls) == 0


def test_global_client_local_services(rsps):
    client = CAVEclient(server_address=SERVER)
    for name in ("annotation", "chunkedgraph"):
        with pytest.raises(GlobalClientError, match="global-only mode"):
            getattr(client, name)
    rsps.get(f"{SERVER}/nglstate/api/v1/version", json="0.7.2")
    assert isinstance(client.state, JSONService)  # the state service is a global one
    assert client.state.ngl_url is None  # no datastack, no viewer site (as caveclient)
    assert not hasattr(client, "materialize")


def test_global_only_with_datastack(rsps):
    client = CAVEclient(DATASTACK, server_address=SERVER, global_only=True)
    assert type(client) is CAVEclientGlobal
    assert read_map() == {}


def test_full_client(rsps, caplog):
    mock_info_service(rsps)
    with caplog.at_level(logging.WARNING):
        client = CAVEclient(DATASTACK, server_address=SERVER, desired_resolution=[4, 4, 40])
    assert type(client) is CAVEclientFull
    assert repr(client) == f"CAVEclient<datastack_name={DATASTACK}, server_address={SERVER}>"
    assert client.desired_resolution == [4, 4, 40]
    assert client.version is None and client.timestamp is None
    assert read_map() == {DATASTACK: SERVER}
    assert "will now be used by default" in caplog.text


def test_server_cache_lookup_and_opt_out(rsps):
    mock_info_service(rsps)
    CAVEclient(DATASTACK, server_address=SERVER, write_server_cache=False)
    assert read_map() == {}
    CAVEclient(DATASTACK, server_address=SERVER)
    assert CAVEclient(DATASTACK).server_address == SERVER


def test_unknown_datastack_defaults_to_global_server(rsps):
    mock_info_service(rsps, GLOBAL)
    assert CAVEclient(DATASTACK).server_address == GLOBAL


def test_version_setter(rsps):
    # Setting versions through the materialization engine: tests/client/test_materialize.py.
    mock_info_service(rsps)
    client = CAVEclient(DATASTACK, server_address=SERVER)
    with pytest.raises(TypeError, match="Version must be an integer or None."):
        client.version = "3"
    with pytest.raises(TypeError, match="Version must be an integer or None."):
        client.version = True
    client.version = None
    assert client.version is None
    assert len([c for c in rsps.calls if "/materialize/" in c.request.url]) == 0


def test_sub_clients_are_built_once_and_share_auth(rsps):
    mock_info_service(rsps)
    rsps.get(f"{SERVER}/schema/versions", json=[2])
    client = CAVEclient(DATASTACK, server_address=SERVER, auth_token=TOKEN, timeout=(2, 5))
    assert client.info is client.info
    assert client.schema is client.schema
    assert client.schema.fc is client and client.info.fc is client
    assert client.schema.session.timeout == (2, 5)
    assert client.schema.session.headers["Authorization"] == f"Bearer {TOKEN}"


def test_change_auth_rebuilds_and_keeps_file(rsps, secrets, tmp_path):
    mock_info_service(rsps)
    mine = write_json(tmp_path / "mine.json", {"token": TOKEN, "alt": OTHER_TOKEN})
    client = CAVEclient(DATASTACK, server_address=SERVER, auth_token_file=str(mine))
    info_before = client.info
    assert client.auth.token == TOKEN

    client.change_auth(auth_token_key="alt")
    assert client.auth.token == OTHER_TOKEN  # same file, new key
    assert client.info is not info_before
    assert client.info.session.headers["Authorization"] == f"Bearer {OTHER_TOKEN}"
    assert client.auth.local_server == LOCAL

    client.change_auth(auth_token=TOKEN)
    assert client.auth.token == TOKEN


def test_local_services_use_the_global_token(rsps, secrets):
    write_json(token_file(secrets, SERVER), {"token": TOKEN})
    write_json(token_file(secrets, LOCAL), {"token": OTHER_TOKEN})
    mock_info_service(rsps)
    client = CAVEclient(DATASTACK, server_address=SERVER)
    assert client.auth.request_header == {"Authorization": f"Bearer {TOKEN}"}


# ----------------------------------------------------------------------------------------------
# CAVEclient.setup_token


@pytest.fixture
def prompts(monkeypatch):
    """Feed answers to getpass (tokens) and input (menu choices); record the prompts."""
    tokens: list[str] = []
    answers: list[str] = []
    asked: list[str] = []

    def next_of(queue: list[str]):
        def ask(prompt: str = "") -> str:
            asked.append(prompt)
            return queue.pop(0)

        return ask

    monkeypatch.setattr("getpass.getpass", next_of(tokens))
    monkeypatch.setattr("builtins.input", next_of(answers))
    return tokens, answers, asked


def _two_stacks() -> dict:
    return {"alpha": datastack_record(LOCAL, "alpha"), "beta": datastack_record(SERVER, "beta")}


def test_setup_token_all_datastacks(rsps, secrets, prompts, capsys, browser):
    tokens, answers, asked = prompts
    mock_info_service(rsps, SERVER, _two_stacks(), token=TOKEN)
    tokens += ["not-a-token", OTHER_TOKEN, f"  {TOKEN.upper()}  "]
    answers += ["maybe", "Y"]

    CAVEclient.setup_token(SERVER)

    out = capsys.readouterr().out
    assert f"Visit {SERVER}/sticky_auth/settings/tokens and copy an existing token or create a new one." in out
    assert "Invalid token format. Please ensure it is a 32-character hexadecimal (0-9, a-f) string." in out
    assert "Token did not work for login — check the token and your internet connectivity and try again!" in out
    assert "Invalid input. Please try again." in out
    assert "All datastacks are configured to use this server address." in out
    assert "Setup complete!" in out
    assert asked[0] == "Paste your auth token (input will be hidden): "
    assert browser == [f"{SERVER}/sticky_auth/settings/tokens"]

    assert read_json(token_file(secrets, SERVER)) == {"token": TOKEN}
    assert read_json(token_file(secrets, LOCAL)) == {"token": TOKEN}
    assert read_json(secrets / "cave-secret.json") == {"token": TOKEN}  # as caveclient's setup_token
    assert read_map() == {"alpha": SERVER, "beta": SERVER}
    assert CAVEclient("alpha").auth.token == TOKEN


def test_setup_token_pick_datastacks(rsps, secrets, prompts, capsys):
    tokens, answers, _ = prompts
    mock_info_service(rsps, SERVER, _two_stacks(), token=TOKEN)
    tokens += [TOKEN]
    answers += ["n", "gamma", "beta", "exit"]

    CAVEclient.setup_token(SERVER, open=False)

    out = capsys.readouterr().out
    assert "Found datastacks:\n\talpha\n\tbeta\n" in out
    assert "Datastack 'gamma' not found." in out
    assert "Token set up for datastack: beta." in out
    assert read_map() == {"beta": SERVER}
    assert not token_file(secrets, LOCAL).exists()


def test_setup_token_exit_and_empty_server(rsps, secrets, prompts, capsys):
    tokens, answers, _ = prompts
    mock_info_service(rsps, SERVER, _two_stacks(), token=TOKEN)
    tokens += [TOKEN]
    answers += ["exit"]
    CAVEclient.setup_token(SERVER, open=False)
    assert f"Finished setting up token for {SERVER} with no datasets configured." in capsys.readouterr().out
    assert read_map() == {}
    assert read_json(token_file(secrets, SERVER)) == {"token": TOKEN}


def test_setup_token_without_datastacks(rsps, prompts, capsys):
    tokens, _, _ = prompts
    mock_info_service(rsps, SERVER, {})
    tokens += [TOKEN]
    CAVEclient.setup_token(SERVER, open=False)
    assert "No datastacks found. Setup complete!" in capsys.readouterr().out


def test_setup_token_without_overwrite_reports_conflicts(rsps, secrets, prompts, capsys):
    tokens, answers, _ = prompts
    write_json(token_file(secrets, LOCAL), {"token": OTHER_TOKEN})
    mock_info_service(rsps, SERVER, _two_stacks(), token=TOKEN)
    tokens += [TOKEN]
    answers += [""]
    CAVEclient.setup_token(SERVER, overwrite=False, open=False)
    assert "Could not save token for alpha: Key" in capsys.readouterr().out
    assert read_json(token_file(secrets, LOCAL)) == {"token": OTHER_TOKEN}


def test_cli(monkeypatch, capsys):
    calls: list[tuple] = []
    monkeypatch.setattr(framework, "interactive_setup_token", lambda *a, **k: calls.append((a, k)))
    cli_main(["setup-token", SERVER, "--no-open"])
    cli_main(["setup-token", SERVER, "--no-overwrite"])
    assert calls == [((SERVER,), {"overwrite": True, "open": False}), ((SERVER,), {"overwrite": False, "open": True})]
    cli_main([])
    assert "setup-token" in capsys.readouterr().out
