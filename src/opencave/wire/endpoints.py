"""One table of every CAVE service's URL templates.

The client formats these templates to build request URLs; the server derives its route paths
from the same strings (``route_path``), so the two cannot drift apart. Templates follow CAVE's
conventions: each begins with a ``{<service>_server_address}`` placeholder and names its
parameters as caveclient does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DEFAULT_GLOBAL_SERVER = "https://global.daf-apis.com"


@dataclass(frozen=True)
class ServiceEndpoints:
    """URL templates of one service: always-present ones plus one dict per API version."""

    server_key: str
    common: dict[str, str] = field(default_factory=dict)
    versions: dict[int, dict[str, str]] = field(default_factory=dict)

    def for_version(self, version: int) -> dict[str, str]:
        """Common templates merged with those of ``version``."""
        if version not in self.versions:
            raise ValueError("No corresponding API version")
        return {**self.common, **self.versions[version]}


_AUTH_V1 = "{auth_server_address}/auth/api/v1"
AUTH = ServiceEndpoints(
    server_key="auth_server_address",
    versions={
        1: {
            "refresh_token": _AUTH_V1 + "/refresh_token",
            "create_token": _AUTH_V1 + "/create_token",
            "get_tokens": _AUTH_V1 + "/user/token",
            "delete_token": _AUTH_V1 + "/user/token/{token_id}",
            "get_users": _AUTH_V1 + "/user",
            "get_user": _AUTH_V1 + "/user/{user_id}",
            "get_me": _AUTH_V1 + "/user/me",
            "user_cache": _AUTH_V1 + "/user/cache",
            "my_permissions": _AUTH_V1 + "/my_permissions",
            "usernames": _AUTH_V1 + "/username",
            "get_group_users": _AUTH_V1 + "/group/{group_id}/user",
            "groups": _AUTH_V1 + "/group",
            "datasets": _AUTH_V1 + "/dataset",
            "logout": _AUTH_V1 + "/logout",
            "service_dataset": _AUTH_V1 + "/service/{namespace}/table/{table_name}/dataset",
            "version": "{auth_server_address}/auth/version",
            "user_tokens_page": "{auth_server_address}/sticky_auth/settings/tokens",
            "login_page": "{auth_server_address}/sticky_auth/login",
            "logout_page": "{auth_server_address}/sticky_auth/logout",
            "authorize": "{auth_server_address}/sticky_auth/api/v1/authorize",
            "tos_accept": "{auth_server_address}/sticky_auth/api/v1/tos/{tos_id}/accept",
        }
    },
)

_INFO_V2 = "{i_server_address}/info/api/v2"
INFO = ServiceEndpoints(
    server_key="i_server_address",
    common={
        "get_version": "{i_server_address}/info/version",
        "get_api_versions": "{i_server_address}/info/api/versions",
    },
    versions={
        1: {
            "datasets": "{i_server_address}/info/api/datasets",
            "dataset_info": "{i_server_address}/info/api/dataset/{dataset_name}",
        },
        2: {
            "aligned_volumes": _INFO_V2 + "/aligned_volume",
            "aligned_volume_info": _INFO_V2 + "/aligned_volume/{aligned_volume_name}",
            "aligned_volume_by_id": _INFO_V2 + "/aligned_volume/id/{aligned_volume_id}",
            "datastacks": _INFO_V2 + "/datastacks",
            "datastack_info": _INFO_V2 + "/datastack/full/{datastack_name}",
            "datastacks_from_aligned_volume": _INFO_V2
            + "/aligned_volume/{aligned_volume_name}/datastacks",
            "image_sources": _INFO_V2 + "/datastack/{datastack_name}/image_sources",
        },
    },
)

_SCHEMA_V2 = "{emas_server_address}/schema/api/v2"
SCHEMA = ServiceEndpoints(
    server_key="emas_server_address",
    common={"get_api_versions": "{emas_server_address}/schema/versions"},
    versions={
        1: {
            "schema": "{emas_server_address}/schema/type",
            "schema_definition": "{emas_server_address}/schema/type/{schema_type}",
        },
        2: {
            "schema": _SCHEMA_V2 + "/type",
            "schema_definition": _SCHEMA_V2 + "/type/{schema_type}",
            "schema_definition_multi": _SCHEMA_V2 + "/types",
            "schema_definition_all": _SCHEMA_V2 + "/types_all",
        },
    },
)

# URL prefixes of the services this server does not provide yet; they answer 501.
PENDING_SERVICE_PREFIXES: dict[str, str] = {
    "/annotation": "annotation engine",
    "/materialize": "materialization engine",
    "/segmentation": "chunkedgraph",
    "/meshing": "meshing service",
    "/l2cache": "L2 cache",
    "/nglstate": "neuroglancer state service",
    "/skeletoncache": "skeleton service",
    "/volumes": "volume service",
}

_PLACEHOLDER = re.compile(r"^\{[a-z_]+_server_address\}")


def route_path(template: str) -> str:
    """The server-side route path of a template: the template without its server placeholder."""
    path, count = _PLACEHOLDER.subn("", template)
    if count != 1:
        raise ValueError(f"template does not start with a server placeholder: {template}")
    return path
