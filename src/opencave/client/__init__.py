"""opencave's CAVE client: caveclient 8.2.1's public API, built on ``opencave.wire``.

``from opencave import CAVEclient`` is the usual entry point; the classes below are exported for
type hints and for building single sub-clients.
"""

from .annotation import AnnotationClient
from .auth import AuthClient
from .base import ClientBase, ClientBaseWithDatastack, check_version_compatibility, handle_response
from .errors import (
    AuthException,
    GlobalClientError,
    JobFailedError,
    ServerIncompatibilityError,
    TokenFileError,
)
from .chunkedgraph import ChunkedGraphClient
from .framework import CAVEclient, CAVEclientFull, CAVEclientGlobal
from .info import InfoServiceClient
from .l2cache import L2CacheClient
from .materialize import MaterializationClient
from .schema import SchemaClient
from .state import JSONService
from .skeleton import SkeletonClient
from .session import get_session_defaults, set_session_defaults

__all__ = [
    "AnnotationClient",
    "AuthClient",
    "AuthException",
    "CAVEclient",
    "CAVEclientFull",
    "CAVEclientGlobal",
    "ChunkedGraphClient",
    "ClientBase",
    "ClientBaseWithDatastack",
    "GlobalClientError",
    "InfoServiceClient",
    "JSONService",
    "JobFailedError",
    "L2CacheClient",
    "MaterializationClient",
    "SchemaClient",
    "SkeletonClient",
    "ServerIncompatibilityError",
    "TokenFileError",
    "check_version_compatibility",
    "get_session_defaults",
    "handle_response",
    "set_session_defaults",
]
