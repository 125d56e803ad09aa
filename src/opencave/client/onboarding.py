"""First-time set-up of a token for a server: ``CAVEclient.setup_token`` and what
``client.auth.save_token(server_address=...)`` does after saving.

Setting up a server means: save the token in the server's token file, record every datastack
the server lists in the datastack-to-server cache (so ``CAVEclient("<datastack>")`` finds the
server), and give each datastack's local server the token too (cloud-volume reads
``<local-host>-cave-secret.json`` for ``graphene://`` sources).
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from requests import HTTPError, RequestException

from ..wire.tokens import is_valid_token
from .auth import AuthClient, default_token_key, load_token, same_server, server_token_filename, write_token
from .datastack_lookup import handle_server_address, record_datastacks
from .default_server import remember_default_server
from .errors import AuthException
from .session import Timeout

if TYPE_CHECKING:
    from .info import InfoServiceClient

Report = Callable[[str], None]

logger = logging.getLogger(__name__)

COMPLETE_MESSAGE = (
    "You will not need to specify a server address when initializing a client for configured "
    "datastacks in the future.\nSetup complete!"
)


def share_token_with_local_server(
    info: InfoServiceClient,
    server_address: str,
    datastack: str,
    token: str,
    overwrite: bool,
    token_key: str = default_token_key,
) -> None:
    """Save ``token`` in the token file of ``datastack``'s local server, if it has another one.

    Raises ValueError if that file holds a different token and ``overwrite`` is False.
    """
    local_server = info.get_datastack_info(datastack).get("local_server")
    if not local_server or same_server(local_server, server_address):
        return
    path = server_token_filename(local_server)
    if load_token(path, token_key) != token:
        write_token(token, path, token_key, overwrite=overwrite, ignore_readonly=True)


def configure_datastack(
    info: InfoServiceClient,
    server_address: str,
    datastack: str,
    token: str,
    overwrite: bool,
    report: Report = print,
    token_key: str = default_token_key,
) -> None:
    """Make ``datastack`` use ``server_address`` by default and share the token with its local
    server; a token that cannot be saved is reported, not raised."""
    handle_server_address(datastack, server_address, write=True, do_log=False)
    try:
        share_token_with_local_server(info, server_address, datastack, token, overwrite, token_key)
    except (RequestException, AuthException, ValueError) as err:
        report(f"Could not save token for {datastack}: {err}")


def register_server(
    server_address: str,
    token: str,
    overwrite: bool = True,
    token_key: str = default_token_key,
    timeout: Timeout | None = None,
    report: Report | None = None,
) -> list[str]:
    """Record every datastack ``server_address`` lists (asked with ``token``) and share the token
    with their local servers. Returns the datastack names.

    Listing failures raise (``requests`` errors, ``AuthException``); a datastack whose record
    cannot be read is reported and skipped.
    """
    from .info import InfoServiceClient  # info -> auth -> (lazily) here

    report = report or logger.warning
    info = InfoServiceClient(
        server_address=server_address,
        auth_client=AuthClient(token=token, server_address=server_address, timeout=timeout),
        timeout=timeout,
    )
    names = sorted(info.get_datastacks())
    record_datastacks(names, server_address)
    for datastack in names:
        try:
            share_token_with_local_server(info, server_address, datastack, token, overwrite, token_key)
        except (RequestException, AuthException, ValueError) as err:
            report(f"Could not save token for {datastack}: {err}")
    return names


def _read_token(server_address: str) -> str:
    """Prompt until a well-formed token that the server accepts is pasted."""
    from .framework import CAVEclientGlobal

    while True:
        token = getpass.getpass("Paste your auth token (input will be hidden): ").strip().lower()
        if not is_valid_token(token):
            print("Invalid token format. Please ensure it is a 32-character hexadecimal (0-9, a-f) string.")
            continue
        try:
            CAVEclientGlobal(server_address=server_address, auth_token=token).info.get_datastacks()
        except (HTTPError, RequestException, AuthException):
            print("Token did not work for login — check the token and your internet connectivity and try again!")
            continue
        return token


def interactive_setup_token(server_address: str, overwrite: bool = True, open: bool = True) -> None:
    """The dialogue behind ``CAVEclient.setup_token`` (prompts and texts as in caveclient)."""
    from .framework import CAVEclientGlobal

    global_client = CAVEclientGlobal(server_address=server_address)
    page_url = global_client.auth.get_token_page(open=open)
    print(f"Visit {page_url} and copy an existing token or create a new one.")
    token = _read_token(server_address)
    global_client.auth.save_token(token=token, overwrite=overwrite)
    remember_default_server(server_address)

    client = CAVEclientGlobal(server_address=server_address)
    datastacks = sorted(client.info.get_datastacks())
    if not datastacks:
        print("No datastacks found. Setup complete!")
        return

    def configure(datastack: str) -> None:
        configure_datastack(client.info, server_address, datastack, token, overwrite)

    while True:
        answer = input(
            "Set all of your datastacks to use this token and server ('Y', recommended), specify "
            "individual datastacks ('n'), or finish now ('exit'). (Y/n/exit) "
        ).lower()
        if answer in ("y", "yes", ""):
            for datastack in datastacks:
                configure(datastack)
            print("All datastacks are configured to use this server address.")
            print(COMPLETE_MESSAGE)
            return
        if answer in ("n", "no"):
            listing = "".join(f"\t{ds}\n" for ds in datastacks)
            print(f"Found datastacks:\n{listing}")
            while True:
                entry = input("Enter the name of a datastack to use this server automatically or 'exit' to finish: ")
                if entry.lower() == "exit":
                    break
                datastack = entry.strip()
                if datastack not in datastacks:
                    print(f"Datastack '{datastack}' not found.")
                    continue
                configure(datastack)
                print(f"Token set up for datastack: {entry}.")
            print(COMPLETE_MESSAGE)
            return
        if answer == "exit":
            print(f"Finished setting up token for {server_address} with no datasets configured.")
            return
        print("Invalid input. Please try again.")
