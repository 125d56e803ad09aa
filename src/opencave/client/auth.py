"""Tokens: where they are found, where they are saved, and the auth service's user endpoints.

Token files and lookup are caveclient's (``~/.cloudvolume/secrets``), so a token saved by
either library is found by the other and every client sends the same token:
explicit ``token`` > explicit ``token_file`` > ``<host>-cave-secret.json`` of the server if
that file exists, else the generic ``cave-secret.json`` > the deprecated
``chunkedgraph-secret.json``. One difference: an explicit ``token_file`` that does not exist is
an error naming it (caveclient goes on without a token).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import webbrowser
from collections.abc import Iterable
from typing import Any

import requests

from ..wire.endpoints import AUTH, DEFAULT_GLOBAL_SERVER
from .default_server import remember_default_server
from ..wire.tokens import DEFAULT_TOKEN_FILE, DEPRECATED_TOKEN_FILE, SECRETS_DIR, server_netloc, server_token_file
from .base import handle_response
from .errors import AuthException, TokenFileError
from .files import atomic_write_json
from .session import Timeout, build_session

logger = logging.getLogger(__name__)

default_token_location = SECRETS_DIR
default_token_key = "token"
default_token_file = DEFAULT_TOKEN_FILE
deprecated_token_files = [DEPRECATED_TOKEN_FILE]

_AUTH_ENDPOINTS = AUTH.for_version(1)


# --------------------------------------------------------------------------------------------
# Token files


def server_token_filename(server_address: str) -> str:
    """The expanded path of the token file kept for one server."""
    return os.path.expanduser(server_token_file(server_address))


def same_server(a: str | None, b: str | None) -> bool:
    """Whether two addresses name the same server (token files are keyed by host[:port])."""
    if not a or not b:
        return False
    return server_netloc(a).lower() == server_netloc(b).lower()


def is_default_global_server(server_address: str | None) -> bool:
    return same_server(server_address, DEFAULT_GLOBAL_SERVER)


def _read_token_file(path: str) -> dict[str, Any]:
    """The JSON object in a token file; a clear error instead of a bare JSONDecodeError."""
    try:
        with open(path) as f:
            data = json.load(f)
    except ValueError as err:
        raise TokenFileError(f"Token file {path} is not valid JSON: {err}; fix or delete it") from err
    if not isinstance(data, dict):
        raise TokenFileError(
            f'Token file {path} must hold a JSON object such as {{"token": "..."}}, '
            f"not {type(data).__name__}; fix or delete it"
        )
    return data


def load_token(token_file: str | None, token_key: str | None = default_token_key) -> str | None:
    """The token stored under ``token_key`` in ``token_file``; None if the file or key is missing."""
    if token_file is None:
        return None
    path = os.path.expanduser(token_file)
    if not os.path.isfile(path):
        return None
    return _read_token_file(path).get(token_key or default_token_key)


def write_token(
    token: str,
    filepath: str,
    key: str,
    overwrite: bool = True,
    ignore_readonly: bool = False,
) -> None:
    """Store ``token`` under ``key`` in the JSON file ``filepath``, keeping its other keys.

    Raises ValueError if the key holds a different token and ``overwrite`` is False. With
    ``ignore_readonly``, an unwritable directory skips the write (with a warning) instead of
    raising. New files are readable by their owner only, since they hold a secret.
    """
    path = os.path.expanduser(filepath)
    secrets = _read_token_file(path) if os.path.exists(path) else {}
    if secrets.get(key) == token:
        return
    if not overwrite and key in secrets:
        raise ValueError(f'Key "{key}" already exists in token file "{filepath}"')
    secrets[key] = token
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        writable = os.access(directory, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        if ignore_readonly:
            logger.warning(f"Token not saved to {path}: {directory} is not writable")
            return
        raise PermissionError(f"Cannot save the token to {path}: {directory} is not writable")
    atomic_write_json(path, secrets, mode=0o600)


def _unique_paths(paths: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for path in paths:
        full = os.path.expanduser(path)
        if full not in seen:
            seen.append(full)
    return seen


# --------------------------------------------------------------------------------------------
# The client


class AuthClient:
    """Finds, saves and sends the token for one CAVE (global) server.

    Sub-clients of local services of a datastack use this token too: CAVE deployments accept
    the global server's token on their local servers.

    Parameters
    ----------
    token_file
        JSON file holding the token; ``FileNotFoundError`` if it does not exist (unless
        ``token`` is given). Default: the server's own token file if it exists, else
        ``cave-secret.json`` (see the module docstring for the full lookup order).
    token_key
        Key of the token in that file; default ``"token"``.
    token
        The token itself; overrides every file.
    server_address
        The global server the token is for; default ``https://global.daf-apis.com``.
    local_server
        The local server of the client's datastack, whose token file ``save_token`` keeps in
        step (cloud-volume reads it for ``graphene://`` sources).
    timeout
        Timeout of the auth service calls (opencave extension); default from the session
        defaults.
    """

    def __init__(
        self,
        token_file: str | None = None,
        token_key: str | None = None,
        token: str | None = None,
        server_address: str = DEFAULT_GLOBAL_SERVER,
        local_server: str | None = None,
        timeout: Timeout | None = None,
    ):
        self._server_address = server_address or DEFAULT_GLOBAL_SERVER
        self._local_server = local_server
        self._timeout = timeout
        self._server_file_path = server_token_filename(self._server_address)
        self._token_key: str | None = token_key or default_token_key
        if token_file is None:
            self._token_file = self._default_token_file()
        else:
            self._token_file = os.path.expanduser(token_file)
            if token is None and not os.path.isfile(self._token_file):
                # caveclient silently goes on without a token (or with the deprecated file's).
                raise FileNotFoundError(
                    errno.ENOENT,
                    f"auth_token_file {token_file} does not exist; give the path of a JSON file "
                    'such as {"token": "..."}, or leave auth_token_file out to use the saved token',
                    self._token_file,
                )
        self._token = token if token is not None else self._find_token()
        self._default_endpoint_mapping = {AUTH.server_key: self._server_address}

    # -- lookup --------------------------------------------------------------------------

    def _default_token_file(self) -> str:
        """Where the token is read from and saved to: the server's own file once it exists,
        else the generic ``cave-secret.json``."""
        if os.path.isfile(self._server_file_path):
            return self._server_file_path
        return os.path.expanduser(default_token_file)

    def _find_token(self) -> str | None:
        """The token under the key in the token file, else in a deprecated file (with a
        warning)."""
        token = load_token(self._token_file, self._token_key)
        if token is not None:
            return token
        for path in _unique_paths(deprecated_token_files):
            token = load_token(path, self._token_key)
            if token is not None:
                logger.warning(
                    f"file location {path} is deprecated,\n"
                    "rename to 'cave-secret.json' or 'SERVER_ADDRESS-cave-secret.json"
                )
                return token
        return None

    # -- properties ----------------------------------------------------------------------

    @property
    def token(self) -> str | None:
        """Secret token used to authenticate yourself to the CAVE services."""
        return self._token

    @token.setter
    def token(self, new_token: str | None) -> None:
        self._token = new_token
        self._token_key = None

    @property
    def server_address(self) -> str:
        """The global server this client's token is for."""
        return self._server_address

    @property
    def request_header(self) -> dict[str, str]:
        """``{"Authorization": "Bearer <token>"}``, or ``{}`` without a token."""
        return {} if self._token is None else {"Authorization": f"Bearer {self._token}"}

    @property
    def local_server(self) -> str | None:
        return self._local_server

    @local_server.setter
    def local_server(self, new_val: str | None) -> None:
        self._local_server = new_val

    @property
    def local_server_filepath(self) -> str | None:
        """The token file of the local server, or None without a local server."""
        return server_token_filename(self._local_server) if self._local_server else None

    def get_token(self, token_key: str | None = None) -> str | None:
        """Reload the token from the current token file, under ``token_key`` (default "token")."""
        self._token_key = token_key or default_token_key
        self._token = load_token(self._token_file, self._token_key)
        return self._token

    # -- instructions and pages ----------------------------------------------------------

    def _page(self, endpoint: str, server_address: str | None) -> str:
        return _AUTH_ENDPOINTS[endpoint].format_map({AUTH.server_key: server_address or self._server_address})

    def _save_hint(self, server_address: str | None) -> str:
        if server_address and not same_server(server_address, self._server_address):
            return f'client.auth.save_token(token="PASTE_YOUR_TOKEN_HERE", server_address="{server_address}")'
        return 'client.auth.save_token(token="PASTE_YOUR_TOKEN_HERE")'

    def get_token_page(self, open: bool = True, server_address: str | None = None) -> str:
        """The URL of the page listing your tokens (opened in a browser if ``open``).

        ``server_address`` (opencave extension) selects another server than the client's.
        """
        url = self._page("user_tokens_page", server_address)
        if open:
            webbrowser.open(url)
        return url

    def setup_token(self, make_new: bool = True, open: bool = True, server_address: str | None = None) -> None:
        """Print how to get a token (new if ``make_new``, else an existing one) and save it.

        Tokens are made in a browser; they cannot be fetched programmatically.
        ``server_address`` (opencave extension) gives the instructions for that server.
        """
        if make_new:
            self.get_new_token(open=open, server_address=server_address)
            return
        url = self._page("user_tokens_page", server_address)
        print(
            "Tokens need to be acquired by hand. Please follow the following steps:\n"
            f"1) Go to: {url} to view a list of your existing tokens.\n"
            "2) Log in with your Google credentials copy one of the tokens from the dictionary "
            "(the string under the key 'token').\n"
            f"3a) Save it to your computer with: {self._save_hint(server_address)}\n"
            "or\n"
            '3b) Set it for the current session only with client.auth.token = "PASTE_YOUR_TOKEN_HERE"\n'
            "Note: If you need to save or load multiple tokens, please read the documentation for details.\n"
            "if you want to create a new token, or have no token use ```self.get_new_token``` instead\n"
            "or use this function with the keyword argument make_new=True"
        )
        if open:
            webbrowser.open(url)

    def get_new_token(self, open: bool = False, no_text: bool = False, server_address: str | None = None) -> None:
        """Print how to create a new token (and open the page if ``open``).

        Creating a new token invalidates the previous one. ``server_address`` (opencave
        extension) gives the instructions for that server.
        """
        url = self._page("create_token", server_address)
        if not no_text:
            print(
                "New Tokens need to be acquired by hand. Please follow the following steps:\n"
                f"1) Go to: {url} to create a new token.\n"
                "2) Log in with your Google credentials and copy the token shown afterward.\n"
                f"3a) Save it to your computer with: {self._save_hint(server_address)}\n"
                "or\n"
                '3b) Set it for the current session only with client.auth.token = "PASTE_YOUR_TOKEN_HERE"\n'
                "Note: If you need to save or load multiple tokens, please read the documentation for details.\n"
                "Warning! Creating a new token by finishing step 2 will invalidate the previous token!"
            )
        if open:
            webbrowser.open(url)

    # -- saving --------------------------------------------------------------------------

    def save_token(
        self,
        token: str | None = None,
        token_key: str = default_token_key,
        overwrite: bool = False,
        token_file: str | None = None,
        switch_token: bool = True,
        write_to_server_file: bool = True,
        ignore_readonly: bool = True,
        local_server: bool = True,
        server_address: str | None = None,
    ) -> None:
        """Save a token so that later clients find it.

        Parameters
        ----------
        token
            Token to save; default the current one.
        token_key
            Key of the token in the JSON file.
        overwrite
            Allow replacing a different token already saved under ``token_key``.
        token_file
            Also (or, with ``write_to_server_file=False``, only) save to this file.
        switch_token
            Make this client use the saved token (only when it is for this client's server).
        write_to_server_file
            Save to the server's ``<host>-cave-secret.json``. Always done for a
            ``server_address`` other than the client's, since that file is the only place a
            token for it is looked up.
        ignore_readonly
            Skip, rather than fail on, an unwritable secrets directory.
        local_server
            Also give the client's local server (if any) this token.
        server_address
            opencave extension: the server the token is for (default: the client's). The
            token goes to that server's file, plus ``cave-secret.json`` only for the default
            global server. Then, if the server answers, every datastack it lists is recorded in
            the datastack-to-server cache and their local servers get the token too, so
            ``CAVEclient("<datastack>")`` works without a server address.
        """
        if token is None:
            token = self._token
        if token is None:
            raise ValueError("No token to save: pass token=...")
        target = server_address or self._server_address
        own = same_server(target, self._server_address)

        files: list[str] = []
        if write_to_server_file or not own:
            files.append(server_token_filename(target))
        if token_file is not None:
            files.append(token_file)
        elif own:
            files.append(self._token_file)
        elif is_default_global_server(target):
            files.append(default_token_file)
        for path in _unique_paths(files):
            write_token(token, path, token_key, overwrite=overwrite, ignore_readonly=ignore_readonly)

        if own:
            if switch_token:
                self._token = token
                self._token_key = token_key
                self._token_file = os.path.expanduser(token_file) if token_file else self._token_file
            if local_server:
                self._synchronize_local_server_file(token, token_key)
        if server_address is not None:
            self._register_server(target, token, token_key, overwrite)
            remember_default_server(target)

    def _synchronize_local_server_file(self, token: str | None = None, token_key: str = default_token_key) -> None:
        """Give the local server's token file the same token (cloud-volume reads it)."""
        path = self.local_server_filepath
        token = token if token is not None else self._token
        if path is None or token is None:
            return
        if load_token(path, token_key) != token:
            write_token(token, path, token_key, overwrite=True, ignore_readonly=True)

    def _register_server(self, server_address: str, token: str, token_key: str, overwrite: bool) -> None:
        from .onboarding import register_server  # onboarding needs the info client, which needs us

        try:
            register_server(server_address, token, overwrite=overwrite, token_key=token_key, timeout=self._timeout)
        except (requests.RequestException, AuthException, ValueError) as err:
            logger.warning(
                f"The token was saved for {server_address}, but its datastacks could not be listed "
                f"({err}). Pass server_address='{server_address}' to CAVEclient until they are."
            )

    # -- auth service calls --------------------------------------------------------------

    def _get(self, endpoint: str, params: dict[str, Any] | None = None, **mapping: Any) -> Any:
        url = _AUTH_ENDPOINTS[endpoint].format_map({**self._default_endpoint_mapping, **mapping})
        with build_session(timeout=self._timeout) as session:
            response = session.get(url, headers=self.request_header, params=params)
        return handle_response(response)

    def get_tokens(self) -> list[dict[str, Any]]:
        """Your tokens, as ``[{"id", "token", "user_id"}, ...]``."""
        return self._get("get_tokens")

    def get_user_information(self, user_ids: Iterable[int]) -> list[dict[str, Any]]:
        """Information about users, by id."""
        return self._get("get_users", params={"id": ",".join(str(i) for i in user_ids)})

    def get_group_users(self, group_id: int) -> list[dict[str, Any]]:
        """The users of a group (empty if the group does not exist)."""
        return self._get("get_group_users", group_id=group_id)
