"""Token lookup, token files and the auth service calls of ``AuthClient``."""

from __future__ import annotations

import logging
import os
import stat

import pytest
import responses

from opencave import CAVEclient
from opencave.client import auth as auth_module
from opencave.client.auth import AuthClient, write_token
from opencave.client.datastack_lookup import read_map
from opencave.client.errors import TokenFileError

from .helpers import (
    DATASTACK,
    GLOBAL,
    LOCAL,
    OTHER_TOKEN,
    SERVER,
    THIRD_TOKEN,
    TOKEN,
    datastack_record,
    mock_info_service,
    read_json,
    token_file,
    write_json,
)

# ----------------------------------------------------------------------------------------------
# Lookup order


def test_no_files_means_no_token(secrets):
    client = AuthClient()
    assert client.token is None
    assert client.request_header == {}


def test_default_server_reads_generic_file(secrets):
    write_json(secrets / "cave-secret.json", {"token": TOKEN})
    assert AuthClient().token == TOKEN


def test_default_server_prefers_its_own_file(secrets):
    write_json(secrets / "cave-secret.json", {"token": TOKEN})
    write_json(token_file(secrets, GLOBAL), {"token": OTHER_TOKEN})
    client = AuthClient()
    assert client.token == OTHER_TOKEN
    assert client.request_header == {"Authorization": f"Bearer {OTHER_TOKEN}"}


def test_default_server_reads_deprecated_file_with_warning(secrets, caplog):
    write_json(secrets / "chunkedgraph-secret.json", {"token": TOKEN})
    with caplog.at_level(logging.WARNING):
        assert AuthClient().token == TOKEN
    assert "deprecated" in caplog.text


def test_explicit_token_beats_files(secrets):
    write_json(token_file(secrets, GLOBAL), {"token": OTHER_TOKEN})
    assert AuthClient(token=TOKEN).token == TOKEN


def test_explicit_file_and_key_beat_server_file(secrets, tmp_path):
    write_json(token_file(secrets, SERVER), {"token": OTHER_TOKEN})
    mine = write_json(tmp_path / "mine.json", {"token": THIRD_TOKEN, "alt": TOKEN})
    assert AuthClient(token_file=str(mine), server_address=SERVER).token == THIRD_TOKEN
    assert AuthClient(token_file=str(mine), token_key="alt", server_address=SERVER).token == TOKEN


def test_explicit_file_without_the_key_falls_back_to_deprecated_file_only(secrets, tmp_path):
    write_json(token_file(secrets, SERVER), {"token": OTHER_TOKEN})
    mine = write_json(tmp_path / "mine.json", {"other": TOKEN})
    assert AuthClient(token_file=str(mine), server_address=SERVER).token is None
    write_json(secrets / "chunkedgraph-secret.json", {"token": THIRD_TOKEN})
    assert AuthClient(token_file=str(mine), server_address=SERVER).token == THIRD_TOKEN


def test_missing_explicit_file_is_an_error_naming_it(secrets, tmp_path):
    write_json(token_file(secrets, SERVER), {"token": OTHER_TOKEN})
    missing = tmp_path / "nowhere" / "token.json"
    with pytest.raises(FileNotFoundError, match="auth_token_file .*token.json does not exist") as info:
        AuthClient(token_file=str(missing), server_address=SERVER)
    assert info.value.filename == str(missing)
    with pytest.raises(FileNotFoundError, match=str(missing)):
        CAVEclient(server_address=SERVER, auth_token_file=str(missing))
    # A token given with the file needs no file: it is only where save_token writes.
    assert AuthClient(token_file=str(missing), token=TOKEN).token == TOKEN


def test_other_server_uses_its_own_file(secrets):
    write_json(secrets / "cave-secret.json", {"token": TOKEN})
    write_json(token_file(secrets, SERVER), {"token": OTHER_TOKEN})
    assert AuthClient(server_address=SERVER).token == OTHER_TOKEN


def test_generic_file_serves_servers_without_their_own_file(secrets, caplog):
    write_json(secrets / "cave-secret.json", {"token": TOKEN})
    write_json(secrets / "chunkedgraph-secret.json", {"token": OTHER_TOKEN})
    with caplog.at_level(logging.WARNING):
        client = AuthClient(server_address=SERVER)
    assert client.token == TOKEN
    assert client.request_header == {"Authorization": f"Bearer {TOKEN}"}
    assert caplog.records == []


def test_no_warning_without_a_generic_token(secrets, caplog):
    with caplog.at_level(logging.WARNING):
        AuthClient(server_address=SERVER)
    assert caplog.records == []


def test_server_comparison_ignores_trailing_slash_and_case(secrets):
    write_json(secrets / "cave-secret.json", {"token": TOKEN})
    assert AuthClient(server_address="https://GLOBAL.daf-apis.com/").token == TOKEN


def test_local_server_file_is_not_used_for_the_token(secrets):
    write_json(token_file(secrets, SERVER), {"token": TOKEN})
    write_json(token_file(secrets, LOCAL), {"token": OTHER_TOKEN})
    client = AuthClient(server_address=SERVER, local_server=LOCAL)
    assert client.token == TOKEN
    assert client.local_server_filepath == str(token_file(secrets, LOCAL))


def test_get_token_reloads_with_key(secrets):
    path = write_json(token_file(secrets, SERVER), {"token": TOKEN, "alt": OTHER_TOKEN})
    client = AuthClient(server_address=SERVER)
    assert client.get_token("alt") == OTHER_TOKEN
    assert client.token == OTHER_TOKEN
    assert client.get_token() == TOKEN  # None means the default key
    write_json(path, {"token": THIRD_TOKEN})
    assert client.get_token() == THIRD_TOKEN


def test_token_setter(secrets):
    client = AuthClient()
    client.token = TOKEN
    assert client.request_header == {"Authorization": f"Bearer {TOKEN}"}


# ----------------------------------------------------------------------------------------------
# Broken files


def test_broken_server_file_names_the_file(secrets):
    path = token_file(secrets, SERVER)
    path.parent.mkdir(parents=True)
    path.write_text('{"token": ')
    with pytest.raises(ValueError, match="is not valid JSON") as info:
        AuthClient(server_address=SERVER)
    assert isinstance(info.value, TokenFileError)
    assert str(path) in str(info.value)
    assert "fix or delete it" in str(info.value)


def test_token_file_must_hold_an_object(secrets):
    write_json(secrets / "cave-secret.json", ["not", "an", "object"])
    with pytest.raises(TokenFileError, match="JSON object"):
        AuthClient()


def test_broken_generic_file_names_the_file(secrets):
    (secrets).mkdir(parents=True)
    (secrets / "cave-secret.json").write_text("not json")
    with pytest.raises(TokenFileError, match="cave-secret.json"):
        AuthClient(server_address=SERVER)
    write_json(token_file(secrets, SERVER), {"token": TOKEN})
    assert AuthClient(server_address=SERVER).token == TOKEN  # the server's own file wins


def test_write_token_refuses_to_clobber_a_broken_file(secrets):
    path = token_file(secrets, SERVER)
    path.parent.mkdir(parents=True)
    path.write_text("{")
    with pytest.raises(TokenFileError):
        write_token(TOKEN, str(path), "token")
    assert path.read_text() == "{"


# ----------------------------------------------------------------------------------------------
# write_token


def test_write_token_creates_private_file_and_keeps_other_keys(secrets):
    path = secrets / "x.json"
    write_token(TOKEN, "~/.cloudvolume/secrets/x.json", "token")
    assert read_json(path) == {"token": TOKEN}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    write_token(OTHER_TOKEN, str(path), "alt")
    assert read_json(path) == {"token": TOKEN, "alt": OTHER_TOKEN}


def test_write_token_overwrite_rules(secrets):
    path = write_json(secrets / "x.json", {"token": TOKEN})
    write_token(TOKEN, str(path), "token", overwrite=False)  # same token: nothing to refuse
    with pytest.raises(ValueError) as info:
        write_token(OTHER_TOKEN, str(path), "token", overwrite=False)
    assert str(info.value) == f'Key "token" already exists in token file "{path}"'
    write_token(OTHER_TOKEN, str(path), "token", overwrite=True)
    assert read_json(path) == {"token": OTHER_TOKEN}


def test_write_token_readonly_directory(secrets, monkeypatch):
    secrets.mkdir(parents=True)
    monkeypatch.setattr(auth_module.os, "access", lambda path, mode: False)
    write_token(TOKEN, str(secrets / "x.json"), "token", ignore_readonly=True)
    assert not (secrets / "x.json").exists()
    with pytest.raises(PermissionError):
        write_token(TOKEN, str(secrets / "x.json"), "token", ignore_readonly=False)


# ----------------------------------------------------------------------------------------------
# save_token


def test_save_token_for_default_server_writes_generic_and_server_file(secrets):
    client = AuthClient()
    client.save_token(TOKEN)
    assert read_json(secrets / "cave-secret.json") == {"token": TOKEN}
    assert read_json(token_file(secrets, GLOBAL)) == {"token": TOKEN}
    assert client.token == TOKEN
    assert AuthClient().token == TOKEN


def test_save_token_for_a_new_server_writes_its_file_and_the_generic_file(secrets):
    client = AuthClient(server_address=SERVER)
    client.save_token(TOKEN)
    assert read_json(token_file(secrets, SERVER)) == {"token": TOKEN}
    assert read_json(secrets / "cave-secret.json") == {"token": TOKEN}  # as caveclient
    assert AuthClient(server_address=SERVER).token == TOKEN
    assert AuthClient().token == TOKEN
    # Once the server has its own file, its tokens stay there.
    AuthClient(server_address=SERVER).save_token(OTHER_TOKEN, overwrite=True)
    assert read_json(token_file(secrets, SERVER)) == {"token": OTHER_TOKEN}
    assert read_json(secrets / "cave-secret.json") == {"token": TOKEN}


def test_save_token_syncs_local_server_without_switching_file(secrets):
    client = AuthClient(server_address=SERVER, local_server=LOCAL)
    client.save_token(TOKEN)
    assert read_json(token_file(secrets, LOCAL)) == {"token": TOKEN}
    client.save_token(OTHER_TOKEN, overwrite=True)
    assert read_json(token_file(secrets, SERVER)) == {"token": OTHER_TOKEN}
    assert read_json(token_file(secrets, LOCAL)) == {"token": OTHER_TOKEN}
    assert client._token_file == str(secrets / "cave-secret.json")
    client.save_token(THIRD_TOKEN, overwrite=True, local_server=False)
    assert read_json(token_file(secrets, LOCAL)) == {"token": OTHER_TOKEN}


def test_save_token_overwrite_protection(secrets):
    write_json(token_file(secrets, SERVER), {"token": TOKEN})
    client = AuthClient(server_address=SERVER)
    with pytest.raises(ValueError, match="already exists"):
        client.save_token(OTHER_TOKEN)
    client.save_token(OTHER_TOKEN, overwrite=True)
    assert client.token == OTHER_TOKEN
    assert read_json(token_file(secrets, SERVER)) == {"token": OTHER_TOKEN}


def test_save_token_with_explicit_file_client(secrets, tmp_path):
    mine = write_json(tmp_path / "mine.json", {})
    client = AuthClient(token_file=str(mine), server_address=SERVER)
    client.save_token(TOKEN)  # caveclient raises AttributeError here
    assert read_json(mine) == {"token": TOKEN}
    assert read_json(token_file(secrets, SERVER)) == {"token": TOKEN}


def test_save_token_to_given_file_only(secrets, tmp_path):
    client = AuthClient(server_address=SERVER)
    client.save_token(TOKEN, token_file=str(tmp_path / "t.json"), write_to_server_file=False, token_key="k")
    assert read_json(tmp_path / "t.json") == {"k": TOKEN}
    assert not token_file(secrets, SERVER).exists()
    assert client.token == TOKEN


def test_save_token_without_switch(secrets):
    client = AuthClient(server_address=SERVER, token=OTHER_TOKEN)
    client.save_token(TOKEN, switch_token=False)
    assert client.token == OTHER_TOKEN
    assert read_json(token_file(secrets, SERVER)) == {"token": TOKEN}


def test_save_token_needs_a_token(secrets):
    with pytest.raises(ValueError, match="No token"):
        AuthClient().save_token()


def test_save_token_for_another_server_registers_its_datastacks(secrets, rsps):
    mock_info_service(
        rsps, SERVER, {DATASTACK: datastack_record(LOCAL), "other_stack": datastack_record(SERVER)}, token=TOKEN
    )
    client = CAVEclient()  # the default global server, as in the MICrONS/V1DD guides
    client.auth.save_token(server_address=SERVER, token=TOKEN, overwrite=True)

    assert read_json(token_file(secrets, SERVER)) == {"token": TOKEN}
    assert read_json(token_file(secrets, LOCAL)) == {"token": TOKEN}
    assert not (secrets / "cave-secret.json").exists()
    assert not token_file(secrets, GLOBAL).exists()
    assert client.auth.token is None  # a token for SERVER is not this client's
    assert read_map() == {DATASTACK: SERVER, "other_stack": SERVER}

    ds_client = CAVEclient(DATASTACK)
    assert ds_client.server_address == SERVER
    assert ds_client.auth.token == TOKEN
    assert ds_client.info.session.headers["Authorization"] == f"Bearer {TOKEN}"
    assert ds_client.local_server == LOCAL


def test_save_token_for_default_server_from_another_client(secrets, rsps):
    mock_info_service(rsps, GLOBAL, {"minnie": datastack_record(GLOBAL, "minnie")}, token=TOKEN)
    client = CAVEclient(server_address=SERVER)
    client.auth.save_token(server_address=GLOBAL, token=TOKEN)
    assert read_json(token_file(secrets, GLOBAL)) == {"token": TOKEN}
    assert read_json(secrets / "cave-secret.json") == {"token": TOKEN}
    assert read_map() == {"minnie": GLOBAL}


def test_save_token_for_own_server_with_address_registers_too(secrets, rsps):
    mock_info_service(rsps, SERVER, token=TOKEN)
    client = CAVEclient(server_address=SERVER)
    client.auth.save_token(server_address=SERVER, token=TOKEN)
    assert client.auth.token == TOKEN
    assert read_map() == {DATASTACK: SERVER}


def test_save_token_for_unreachable_server_still_saves(secrets, rsps, caplog):
    with caplog.at_level(logging.WARNING):
        AuthClient().save_token(server_address=SERVER, token=TOKEN)
    assert read_json(token_file(secrets, SERVER)) == {"token": TOKEN}
    assert "could not be listed" in caplog.text
    assert read_map() == {}


def test_save_token_with_rejected_token_still_saves(secrets, rsps, caplog):
    mock_info_service(rsps, SERVER, token=OTHER_TOKEN)
    with caplog.at_level(logging.WARNING):
        AuthClient().save_token(server_address=SERVER, token=TOKEN)
    assert read_json(token_file(secrets, SERVER)) == {"token": TOKEN}
    assert "401 Client Error" in caplog.text


# ----------------------------------------------------------------------------------------------
# Instructions, pages and auth service calls


def test_token_page_and_instructions(capsys, browser):
    client = AuthClient()
    assert client.get_token_page(open=False) == f"{GLOBAL}/sticky_auth/settings/tokens"
    assert browser == []
    client.get_token_page()
    assert browser == [f"{GLOBAL}/sticky_auth/settings/tokens"]

    client.setup_token(make_new=False, open=False)
    out = capsys.readouterr().out
    assert f"{GLOBAL}/sticky_auth/settings/tokens" in out
    assert 'client.auth.save_token(token="PASTE_YOUR_TOKEN_HERE")' in out

    client.setup_token(make_new=True, open=True, server_address=SERVER)
    out = capsys.readouterr().out
    assert f"{SERVER}/auth/api/v1/create_token" in out
    assert f'server_address="{SERVER}"' in out
    assert "invalidate the previous token" in out
    assert browser[-1] == f"{SERVER}/auth/api/v1/create_token"

    client.get_new_token(no_text=True)
    assert capsys.readouterr().out == ""


def test_auth_service_calls(rsps):
    base = f"{SERVER}/auth/api/v1"
    rsps.add(responses.GET, f"{base}/user/token", json=[{"id": 1, "token": TOKEN, "user_id": 7}])
    rsps.add(responses.GET, f"{base}/user", json=[{"id": 1}, {"id": 2}])
    rsps.add(responses.GET, f"{base}/group/5/user", json=[])
    client = AuthClient(token=TOKEN, server_address=SERVER)

    assert client.get_tokens() == [{"id": 1, "token": TOKEN, "user_id": 7}]
    assert client.get_user_information([1, 2]) == [{"id": 1}, {"id": 2}]
    assert client.get_group_users(5) == []

    tokens_call, users_call, _ = rsps.calls
    assert tokens_call.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert "Cookie" not in tokens_call.request.headers
    assert users_call.request.url == f"{base}/user?id=1%2C2"


def test_auth_service_errors_are_http_errors(rsps):
    rsps.add(responses.GET, f"{SERVER}/auth/api/v1/user/token", status=401, json={"code": 401, "message": "no"})
    import requests

    with pytest.raises(requests.HTTPError, match="401 Client Error"):
        AuthClient(server_address=SERVER).get_tokens()


def test_change_auth_to_a_missing_file_leaves_the_client_as_it_was(secrets, tmp_path):
    write_json(token_file(secrets, SERVER), {"token": TOKEN})
    client = CAVEclient(server_address=SERVER)
    auth = client.auth
    with pytest.raises(FileNotFoundError, match="typo.json"):
        client.change_auth(auth_token_file=str(tmp_path / "typo.json"))
    assert client.auth is auth and client.auth.token == TOKEN
    client.change_auth(auth_token=OTHER_TOKEN)
    assert client.auth.token == OTHER_TOKEN
