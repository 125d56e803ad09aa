"""Which server ``CAVEclient()`` talks to when no address is given.

caveclient always means ``https://global.daf-apis.com``. opencave means the server you last set
a token up for (``CAVEclient.setup_token``, ``auth.save_token(server_address=…)``), so that after
setting up a self-hosted server, ``CAVEclient().auth.token`` shows the token actually in use —
without ever sending that token to another server. ``OPENCAVE_SERVER_ADDRESS`` overrides both.
"""

from __future__ import annotations

import json
import logging
import os

from ..wire.endpoints import DEFAULT_GLOBAL_SERVER
from ..wire.tokens import DEFAULT_SERVER_FILE
from .files import atomic_write_json

logger = logging.getLogger(__name__)
ENVIRONMENT_VARIABLE = "OPENCAVE_SERVER_ADDRESS"


def default_server_address() -> str:
    configured = os.environ.get(ENVIRONMENT_VARIABLE)
    if configured:
        return configured.rstrip("/")
    try:
        with open(os.path.expanduser(DEFAULT_SERVER_FILE)) as f:
            remembered = json.load(f).get("server_address")
    except (OSError, ValueError, AttributeError):
        remembered = None
    return remembered or DEFAULT_GLOBAL_SERVER


def remember_default_server(server_address: str) -> None:
    """Make ``server_address`` the default of ``CAVEclient()``; failures only log."""
    try:
        os.makedirs(os.path.dirname(os.path.expanduser(DEFAULT_SERVER_FILE)), mode=0o700, exist_ok=True)
        atomic_write_json(os.path.expanduser(DEFAULT_SERVER_FILE), {"server_address": server_address.rstrip("/")})
    except OSError as err:
        logger.warning("Could not remember %s as the default server: %s", server_address, err)
