"""Which token a client uses, and where ``save_token`` puts it, are caveclient 8.2.1's: every
case runs both libraries, each in its own empty HOME, and compares tokens and token files."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import caveclient
import caveclient.auth
import pytest

import opencave
import opencave.client.auth

from .helpers import GLOBAL, OTHER_TOKEN, SERVER, THIRD_TOKEN, TOKEN, token_file, write_json

FOURTH_TOKEN = "d" * 32
OTHER_SERVER = "https://other.example.org"
LIBRARIES = {"caveclient": (caveclient, caveclient.auth), "opencave": (opencave, opencave.client.auth)}

# Token files present before a client is made: name -> (path in HOME, content).
FILES: dict[str, tuple[str, dict[str, str]]] = {
    "generic": (".cloudvolume/secrets/cave-secret.json", {"token": TOKEN}),
    "server": (str(token_file(Path(".cloudvolume/secrets"), SERVER)), {"token": OTHER_TOKEN, "alt": FOURTH_TOKEN}),
    "global": (str(token_file(Path(".cloudvolume/secrets"), GLOBAL)), {"token": THIRD_TOKEN}),
    "deprecated": (".cloudvolume/secrets/chunkedgraph-secret.json", {"token": FOURTH_TOKEN}),
    "custom": ("custom.json", {"token": THIRD_TOKEN, "alt": OTHER_TOKEN}),
}
# AuthClient arguments; "~" in a file name is the test's HOME.
ARGUMENTS: dict[str, dict[str, Any]] = {
    "default": {},
    "server": {"server_address": SERVER},
    "other-server": {"server_address": OTHER_SERVER},
    "server-key": {"server_address": SERVER, "token_key": "alt"},
    "custom-file": {"token_file": "~/custom.json"},
    "custom-file-key": {"token_file": "~/custom.json", "token_key": "alt", "server_address": SERVER},
    "token": {"token": "e" * 32, "server_address": SERVER},
}
FILE_SETS = [
    combination for size in range(len(FILES) + 1) for combination in itertools.combinations(sorted(FILES), size)
]
# Every file set with every argument set, except naming the custom file when it is missing
# (an error in opencave, see the last test).
CASES = [
    pytest.param(files, arguments, id=f"{'+'.join(files) or 'none'}-{arguments}")
    for files in FILE_SETS
    for arguments in sorted(ARGUMENTS)
    if "custom" in files or "token_file" not in ARGUMENTS[arguments] or "token" in ARGUMENTS[arguments]
]


def in_home(home: Path, monkeypatch: pytest.MonkeyPatch, files: tuple[str, ...]) -> None:
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in files:
        path, content = FILES[name]
        write_json(home / path, content)


def secrets_of(home: Path) -> dict[str, Any]:
    """Every file under HOME with its JSON content."""
    return {
        str(path.relative_to(home)): json.loads(path.read_text())
        for path in sorted(home.rglob("*"))
        if path.is_file()
    }


def both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: tuple[str, ...], run: Callable[..., Any]) -> None:
    """Run ``run(package, auth_module)`` with each library in a fresh HOME holding ``files``;
    the answers and the resulting files must be equal."""
    results = {}
    for name, (package, auth_module) in LIBRARIES.items():
        home = tmp_path / name
        in_home(home, monkeypatch, files)
        results[name] = (run(package, auth_module), secrets_of(home))
    assert results["opencave"] == results["caveclient"]


@pytest.mark.parametrize("files, arguments", CASES)
def test_auth_client_finds_the_same_token(tmp_path, monkeypatch, files, arguments):
    def run(package: Any, auth_module: Any) -> tuple[Any, str]:
        client = auth_module.AuthClient(**ARGUMENTS[arguments])
        return client.token, os.path.relpath(client._token_file, os.environ["HOME"])

    both(tmp_path, monkeypatch, files, run)


@pytest.mark.parametrize("server", [None, GLOBAL, SERVER], ids=["no-server", "global", "server"])
@pytest.mark.parametrize("files", [(), ("generic",), ("server",), ("global", "generic")], ids=lambda f: "+".join(f) or "none")
def test_saved_tokens_are_found_by_later_clients(tmp_path, monkeypatch, files, server):
    """``CAVEclient(...).auth.save_token(token=T)``, then what new clients of each server use."""

    def run(package: Any, auth_module: Any) -> list[Any]:
        saver = package.CAVEclient(server_address=server)
        saver.auth.save_token(token="f" * 32, overwrite=True)
        return [saver.auth.token] + [
            package.CAVEclient(server_address=address).auth.token for address in (None, GLOBAL, SERVER, OTHER_SERVER)
        ]

    both(tmp_path, monkeypatch, files, run)


def test_save_token_refuses_to_overwrite_alike(tmp_path, monkeypatch):
    def run(package: Any, auth_module: Any) -> str:
        with pytest.raises(ValueError) as info:
            package.CAVEclient(server_address=SERVER).auth.save_token(token="f" * 32)
        return str(info.value).replace(os.environ["HOME"], "~")

    both(tmp_path, monkeypatch, ("server", "generic"), run)


def test_token_setter_and_get_token_alike(tmp_path, monkeypatch):
    def run(package: Any, auth_module: Any) -> list[Any]:
        client = package.CAVEclient(server_address=SERVER)
        client.auth.token = "9" * 32
        seen = [client.auth.token, client.auth.request_header]
        client.auth.get_token("alt")
        return [*seen, client.auth.token]

    both(tmp_path, monkeypatch, ("server",), run)


def test_a_missing_auth_token_file_is_an_error_naming_it(tmp_path, monkeypatch):
    """The one deliberate difference: caveclient goes on without a token."""
    in_home(tmp_path / "typo-home", monkeypatch, ("generic",))
    missing = str(tmp_path / "typo.json")
    assert caveclient.CAVEclient(auth_token_file=missing).auth.token is None
    with pytest.raises(FileNotFoundError, match=f"auth_token_file {missing} does not exist"):
        opencave.CAVEclient(auth_token_file=missing)
    with pytest.raises(FileNotFoundError, match=missing):
        opencave.CAVEclient("any_datastack", server_address=SERVER, auth_token_file=missing)
