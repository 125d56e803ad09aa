"""The EM annotation schema service: which annotation schemas exist and their JSON Schemas."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from requests import HTTPError

from ..wire.endpoints import SCHEMA
from .auth import AuthClient
from .base import ClientBase, handle_response, negotiate_api_version
from .session import Timeout

logger = logging.getLogger(__name__)

SERVER_KEY = SCHEMA.server_key


def _missing_endpoint_warning(method: str) -> None:
    logger.warning(
        f'Client requested an schema service endpoint (see "{method}") not yet available on your '
        "deployment. Please talk to your admin about updating your deployment"
    )


class SchemaClient(ClientBase):
    """Client of the schema service (``client.schema``).

    The API version is negotiated through ``GET /schema/versions``; the service reports no
    server version.
    """

    def __init__(
        self,
        server_address: str | None = None,
        auth_client: AuthClient | None = None,
        api_version: int | str = "latest",
        max_retries: int | None = None,
        pool_maxsize: int | None = None,
        pool_block: bool | None = None,
        over_client: Any = None,
        timeout: Timeout | None = None,
    ):
        auth_client = auth_client if auth_client is not None else AuthClient()
        server_address = server_address or auth_client.server_address
        auth_header = auth_client.request_header
        endpoints, api_version = negotiate_api_version(
            api_version, SCHEMA, server_address, auth_header, timeout=timeout
        )
        super().__init__(
            server_address,
            auth_header,
            api_version,
            endpoints,
            SERVER_KEY,
            max_retries=max_retries,
            pool_maxsize=pool_maxsize,
            pool_block=pool_block,
            over_client=over_client,
            timeout=timeout,
        )

    def get_schemas(self) -> list[str]:
        """Names of the available schema types."""
        return handle_response(self.session.get(self._url("schema")))

    def schema_definition(self, schema_type: str) -> dict[str, Any]:
        """The JSON Schema (draft-07) of one schema type."""
        return handle_response(self.session.get(self._url("schema_definition", schema_type=schema_type)))

    def schema_definition_multi(self, schema_types: Iterable[str]) -> dict[str, Any] | None:
        """``{name: definition}`` for several schema types; None (and a warning) if the
        deployment lacks the endpoint."""
        params = {"schema_names": ",".join(schema_types)}
        try:
            return handle_response(self.session.post(self._url("schema_definition_multi"), params=params))
        except (HTTPError, KeyError):
            _missing_endpoint_warning("schema_definition_multi")
            return None

    def schema_definition_all(self) -> dict[str, Any] | None:
        """``{name: definition}`` for every schema type; None (and a warning) if the deployment
        lacks the endpoint."""
        try:
            return handle_response(self.session.get(self._url("schema_definition_all")))
        except (HTTPError, KeyError):
            _missing_endpoint_warning("schema_definition_all")
            return None
