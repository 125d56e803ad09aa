"""Token format and token-file naming shared by client, server and command line."""

from __future__ import annotations

import re
from urllib.parse import urlparse

TOKEN_PATTERN = re.compile(r"^[a-f0-9]{32}$")
TOKEN_COOKIE = "middle_auth_token"
TOKEN_QUERY_PARAM = "middle_auth_token"
SECRETS_DIR = "~/.cloudvolume/secrets"
DEFAULT_TOKEN_FILE = SECRETS_DIR + "/cave-secret.json"
DEPRECATED_TOKEN_FILE = SECRETS_DIR + "/chunkedgraph-secret.json"
DATASTACK_CACHE_FILE = SECRETS_DIR + "/cave_datastack_to_server_map.json"


def is_valid_token(token: str) -> bool:
    return bool(TOKEN_PATTERN.match(token))


def server_netloc(server_address: str) -> str:
    """host[:port] of a server address; ``https://`` is assumed when it has no scheme."""
    if "://" not in server_address:
        server_address = "https://" + server_address
    return urlparse(server_address).netloc


def server_token_file(server_address: str) -> str:
    """The token file kept for one server, as caveclient names it."""
    return f"{SECRETS_DIR}/{server_netloc(server_address)}-cave-secret.json"
DEFAULT_SERVER_FILE = SECRETS_DIR + "/opencave_default_server.json"
