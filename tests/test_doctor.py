"""``opencave doctor`` against a real ``opencave serve`` (SQLite): good, wrong and missing
tokens, an unreachable server, terms of service not accepted, versions about to expire, a
datastack without versions, token files of the generic, deprecated and local-server kinds, and
``--json``. Token files are written into each test's isolated HOME; every output is checked
never to hold a whole token.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from opencave.client.doctor import run_doctor
from tests.support.postgres import free_port
from tests.support.server import ServerProcess

SECRETS = Path(".cloudvolume/secrets")
WRONG_TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server of its own (its datasets, terms and versions are changed here), with users:
    ``good`` sees the demo, ``tos`` also a datastack under unaccepted terms, ``soon`` a
    datastack whose only version expires in 3 days and one without versions, ``far`` a
    datastack whose local server is this server under another name. Set up through the store
    in this process (as the administration commands do), the versions with the command."""
    server = ServerProcess(tmp_path_factory.mktemp("doctor-server") / "data", None).start()  # SQLite: no PostgreSQL needed
    try:
        server.tokens = _populate(server)
        server.cli("materialize", "create", "soon_stack", "--expires-after", "3")
        server.cli("materialize", "create", "far_stack")
        yield server
    finally:
        server.stop()


def _populate(server: ServerProcess) -> dict[str, str]:
    """Datasets, datastacks, terms, groups and users; returns each user's token by name."""
    from opencave.config import resolve_settings
    from opencave.runtime import Runtime

    stacks_of = {
        "tos_ds": {"tos_stack": server.url},
        "soon_ds": {"soon_stack": server.url, "bare_stack": server.url},
        "far_ds": {"far_stack": f"http://localhost:{server.port}"},
    }
    runtime = Runtime.open(resolve_settings(str(server.data_dir), server.database))
    try:
        for dataset, stacks in stacks_of.items():
            runtime.access.create_dataset(dataset)
            runtime.accounts.create_group(dataset + "_team")
            runtime.access.grant(dataset + "_team", dataset, "view")
            for name, local_server in stacks.items():
                runtime.info.add_datastack(name, "opencave_demo", local_server=local_server, viewer_site=runtime.settings.viewer_site)
                runtime.access.map_resource("datastack", name, dataset)
        runtime.access.create_tos("Doctor terms", "Cite the dataset.", "tos_ds")
        tokens = {}
        for name, team in (("good", None), ("tos", "tos_ds_team"), ("soon", "soon_ds_team"), ("far", "far_ds_team")):
            user = runtime.accounts.create_user(f"{name}@example.org", None)
            if team:
                runtime.accounts.add_member(team, user.email)
            tokens[name] = runtime.tokens.create(user.id)
        return tokens
    finally:
        runtime.close()


def _save(home: Path, name: str, token: str) -> Path:
    path = home / SECRETS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"token": token}))
    return path


def _server_file(home: Path, url: str, token: str) -> Path:
    return _save(home, url.split("://")[1] + "-cave-secret.json", token)


def _shown(path: Path, home: Path) -> str:
    """A path as the text output shows it (relative to ~)."""
    return "~/" + str(path.relative_to(home))


def _doctor(capsys, server: str | None, *tokens: str, as_json: bool = False) -> tuple[int, str]:
    status = run_doctor(server, as_json=as_json, timeout=(5, 60))
    out = capsys.readouterr().out
    for token in tokens:
        assert token not in out, "a whole token was printed"
    return status, out


def _caveclient_token(url: str) -> str | None:
    """The token caveclient 8.2.1 sends to ``url``: the doctor must name the same one."""
    from caveclient.auth import AuthClient

    return AuthClient(server_address=url).token


def _versions(served, token: str, datastack: str) -> list[int]:
    response = requests.get(
        f"{served.url}/materialize/api/v3/datastack/{datastack}/versions", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    return sorted(response.json())


def test_good_token(served, isolated_home, capsys):
    token = served.tokens["good"]
    path = _server_file(isolated_home, served.url, token)
    _save(isolated_home, "cave-secret.json", WRONG_TOKEN)  # not sent: the server has a file of its own
    status, out = _doctor(capsys, served.url, token, WRONG_TOKEN)
    assert status == 0, out
    assert f"{token[:4]}… (32 characters) from the server file {_shown(path, isolated_home)}" in out
    assert _caveclient_token(served.url) == token
    assert "accepted: good <good@example.org>" in out
    versions = _versions(served, token, "opencave_demo")
    assert versions, "the demo has versions"
    assert f"opencave_demo: versions {', '.join(map(str, versions))} (none expires)" in out
    assert "PROBLEM" not in out and "WARNING" not in out


def test_wrong_token_names_the_fix(served, isolated_home, capsys):
    _server_file(isolated_home, served.url, WRONG_TOKEN)
    status, out = _doctor(capsys, served.url, WRONG_TOKEN)
    assert status == 1
    assert f"PROBLEM: {served.url} does not accept the token 0123… from" in out
    assert f"fix: create a token at {served.url}/sticky_auth/settings/tokens and save it with `opencave setup-token {served.url}`" in out
    assert "datastacks:" not in out, "nothing is asked with a refused token"


def test_no_token(served, isolated_home, capsys):
    status, out = _doctor(capsys, served.url)
    assert status == 1
    assert "token:       none" in out
    assert f"PROBLEM: no token is saved for {served.url}" in out
    assert f"fix: run `opencave setup-token {served.url}`" in out


def test_unreadable_token_file(served, isolated_home, capsys):
    path = _server_file(isolated_home, served.url, "")
    path.write_text('{"token": ')
    status, out = _doctor(capsys, served.url)
    assert status == 1
    assert f"token:       none: the server file {_shown(path, isolated_home)} cannot be read" in out
    assert "server:      reachable; no token sent" in out
    assert f"PROBLEM: Token file {_shown(path, isolated_home)} is not valid JSON" in out
    assert f"fix: fix or delete {_shown(path, isolated_home)}, then run `opencave setup-token {served.url}`" in out


def test_unreachable_server_is_a_finding(isolated_home, capsys):
    url = f"http://127.0.0.1:{free_port()}"
    _server_file(isolated_home, url, WRONG_TOKEN)
    status, out = _doctor(capsys, url, WRONG_TOKEN)
    assert status == 1
    assert "server:      unreachable" in out
    assert f"PROBLEM: {url} cannot be reached: connection refused" in out


def test_terms_of_service_to_accept(served, isolated_home, capsys):
    token = served.tokens["tos"]
    _server_file(isolated_home, served.url, token)
    status, out = _doctor(capsys, served.url, token)
    assert status == 1
    assert "tos_stack: terms of service not accepted" in out
    refused = requests.get(f"{served.url}/info/api/v2/datastack/full/tos_stack", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert refused.status_code == 403, refused.text
    url = refused.json()["data"]["tos_form_url"]
    assert "PROBLEM: terms of service 'Doctor terms' not accepted: datastack(s) tos_stack refuse the token" in out
    assert f"fix: open {url} in a browser, log in and accept them" in out
    assert "opencave_demo: versions" in out, "the other datastacks are still checked"


def test_version_expiring_soon_and_datastack_without_versions(served, isolated_home, capsys):
    token = served.tokens["soon"]
    _server_file(isolated_home, served.url, token)
    status, out = _doctor(capsys, served.url, token)
    assert status == 0, "warnings are not problems"
    (version,) = _versions(served, token, "soon_stack")
    (meta,) = requests.get(
        f"{served.url}/materialize/api/v3/datastack/soon_stack/metadata", headers={"Authorization": f"Bearer {token}"}, timeout=30
    ).json()
    expires = dt.datetime.fromisoformat(meta["expires_on"]).strftime("%Y-%m-%d %H:%M UTC")
    assert re.search(rf"soon_stack: versions {version} — {version} expires {expires} \(in (2\.9|3\.0) days, SOON\)", out), out
    assert re.search(rf"WARNING: version {version} of soon_stack expires in (2\.9|3\.0) days", out), out
    assert f"`opencave materialize keep soon_stack {version} --until DATE`" in out
    assert "bare_stack: no versions" in out
    assert "WARNING: datastack bare_stack has no materialized version" in out


def test_json_document(served, isolated_home):
    """Through the command line, as a user runs it: one JSON document."""
    token = served.tokens["soon"]
    _server_file(isolated_home, served.url, token)
    result = subprocess.run(
        [sys.executable, "-m", "opencave", "doctor", served.url, "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(isolated_home)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert token not in result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["ok"] is True and document["problems"] == 0 and document["warnings"] == 2
    (report,) = document["servers"]
    assert report["server"] == served.url and report["reachable"] is True
    assert report["token"] == {"source": "server file", "file": str(isolated_home / SECRETS / f"127.0.0.1:{served.port}-cave-secret.json"), "prefix": token[:4], "length": 32}
    assert report["user"]["email"] == "soon@example.org"
    stacks = {ds["name"]: ds for ds in report["datastacks"]}
    assert set(stacks) == {"opencave_demo", "soon_stack", "bare_stack"}
    assert [v["version"] for v in stacks["soon_stack"]["versions"]] == _versions(served, token, "soon_stack")
    assert 2.5 < stacks["soon_stack"]["versions"][0]["days_left"] <= 3
    assert stacks["bare_stack"]["versions"] == []
    assert sorted(f["code"] for f in report["findings"]) == ["no_versions", "version_expiring"]


def test_every_configured_server_and_the_generic_file(served, isolated_home, monkeypatch, capsys):
    """Without SERVER: the default server, the servers of the datastack map and of token files.
    The generic file's token goes where caveclient sends it — to servers without a file of
    their own — and the report says so."""
    token = served.tokens["good"]
    generic = _save(isolated_home, "cave-secret.json", token)
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("OPENCAVE_SERVER_ADDRESS", served.url)
    _save(isolated_home, "cave_datastack_to_server_map.json", "")
    (isolated_home / SECRETS / "cave_datastack_to_server_map.json").write_text(json.dumps({"opencave_demo": served.url, "gone_stack": served.url, "other_stack": dead}))
    status, out = _doctor(capsys, None, token)
    assert status == 1, "the dead server is a problem"
    first, second = out.split("\n\n")[:2]
    assert first.startswith(served.url) and "the default server ($OPENCAVE_SERVER_ADDRESS); 2 datastack(s) mapped to it" in first
    assert f"from the generic file {_shown(generic, isolated_home)}" in first and "accepted: good <good@example.org>" in first
    assert _caveclient_token(served.url) == _caveclient_token(dead) == token
    assert "NOTE: " in first and "is sent to it (caveclient and opencave send that file to every server without its own file)" in first
    assert "WARNING: datastack gone_stack is mapped to" in first
    assert second.startswith(dead) and "cannot be reached" in second
    assert f"WARNING: the generic token file's token is sent to 2 servers ({served.url}, {dead})" in out
    assert out.rstrip().endswith("2 server(s) checked: 1 problem(s), 3 warning(s)"), out


def test_deprecated_file(served, isolated_home, capsys):
    token = served.tokens["good"]
    path = _save(isolated_home, "chunkedgraph-secret.json", token)
    status, out = _doctor(capsys, served.url, token)
    assert status == 0
    assert f"from the deprecated file {_shown(path, isolated_home)}" in out
    assert _caveclient_token(served.url) == token
    assert f"WARNING: the token comes from the deprecated file {_shown(path, isolated_home)}" in out


def test_local_server_token_file(served, isolated_home, monkeypatch, capsys):
    """A datastack whose local server is another host: materialize is asked there (with the
    token, as CAVEclient sends it), and its token file — what cloud-volume sends — is checked."""
    token = served.tokens["far"]
    _server_file(isolated_home, served.url, token)
    local = f"http://localhost:{served.port}"
    status, out = _doctor(capsys, served.url, token)
    assert status == 0
    assert f"far_stack: versions {', '.join(map(str, _versions(served, token, 'far_stack')))} (none expires) (materialize at {local})" in out
    assert f"WARNING: the local server {local} of far_stack has no token file" in out

    _server_file(isolated_home, local, token)
    monkeypatch.setenv("OPENCAVE_SERVER_ADDRESS", served.url)
    status, out = _doctor(capsys, None, token)
    assert status == 0 and "WARNING" not in out
    assert out.count("why checked") == 1, "the local server's file is checked with its global server, not as a server"
