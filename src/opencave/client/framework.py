"""``CAVEclient``: one object holding the datastack, server, token and every sub-client.

``CAVEclient(...)`` is a factory, as in caveclient: it returns a ``CAVEclientGlobal`` (global
services only) when no datastack is given, else a ``CAVEclientFull``. Sub-clients are built on
first use and share the token, retry, pool and timeout settings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import datetime
from numbers import Integral
from typing import Any, TypeVar

from .annotation import AnnotationClient
from .auth import AuthClient
from .cache import QueryCache, resolve_cache_dir
from .chunkedgraph import ChunkedGraphClient
from .connectivity import ConnectivityClient
from .datastack_lookup import handle_server_address
from .default_server import default_server_address
from .errors import GlobalClientError
from .info import InfoServiceClient
from .l2cache import L2CacheClient
from .materialize import MaterializationClient
from .onboarding import interactive_setup_token
from .schema import SchemaClient
from .state import JSONService
from .skeleton import SkeletonClient
from .session import Timeout, normalize_timeout

T = TypeVar("T")
CacheOption = bool | str | os.PathLike[str] | None
SERVICES = ("auth", "info", "state", "schema", "chunkedgraph", "annotation", "materialize", "skeleton", "l2cache", "connectivity")


class CAVEclient:
    """Factory of CAVE clients; ``CAVEclient(...)`` returns a ``CAVEclientGlobal`` or a
    ``CAVEclientFull``.

    Parameters
    ----------
    datastack_name
        The datastack to work with. None gives a client of the global services only (auth,
        info, schema).
    server_address
        The global server. None: the server cached for the datastack (see
        ``datastack_lookup``), else ``https://global.daf-apis.com``.
    auth_token_file, auth_token_key, auth_token
        Where the token comes from; by default the server's own token file (see
        ``opencave.client.auth``).
    global_only
        Make a global client even if a datastack is given.
    max_retries, pool_maxsize, pool_block
        Overrides of the session defaults (``set_session_defaults``).
    desired_resolution
        Default resolution (nm per voxel) for materialization positions.
    info_cache
        Pre-filled ``{datastack: info record}``, sparing the info service requests.
    write_server_cache
        Remember ``server_address`` as the datastack's server for later clients.
    version
        Default materialization version.
    timeout
        Seconds to wait for each connection and each read, as one number or a
        ``(connect, read)`` tuple, for every request of every sub-client (opencave
        extension). Default: the session defaults, 10 s to connect and 300 s to read.
    cache
        The local query cache (opencave extension, see ``docs/reproducibility.md``): None or
        False (default) keeps nothing; True keeps answers pinned to a version or a past moment
        in ``$OPENCAVE_CACHE_DIR`` (else ``$XDG_CACHE_HOME/opencave``, else
        ``~/.cache/opencave``); a path keeps them there. Cached answers are returned without
        asking the server; ``client.lock(path)`` needs a cache.
    """

    def __new__(  # type: ignore[misc]  # a factory: returns another class, like caveclient's
        cls,
        datastack_name: str | None = None,
        server_address: str | None = None,
        auth_token_file: str | None = None,
        auth_token_key: str | None = None,
        auth_token: str | None = None,
        global_only: bool = False,
        max_retries: int | None = None,
        pool_maxsize: int | None = None,
        pool_block: bool | None = None,
        desired_resolution: Sequence[float] | None = None,
        info_cache: dict[str, dict[str, Any]] | None = None,
        write_server_cache: bool = True,
        version: int | None = None,
        timeout: Timeout | None = None,
        cache: CacheOption = None,
    ) -> CAVEclientGlobal:
        common: dict[str, Any] = {
            "cache": cache,
            "auth_token_file": auth_token_file,
            "auth_token_key": auth_token_key,
            "auth_token": auth_token,
            "max_retries": max_retries,
            "pool_maxsize": pool_maxsize,
            "pool_block": pool_block,
            "info_cache": info_cache,
            "timeout": timeout,
        }
        if global_only or datastack_name is None:
            return CAVEclientGlobal(server_address=server_address, **common)
        server_address = handle_server_address(datastack_name, server_address, write=write_server_cache)
        return CAVEclientFull(
            datastack_name=datastack_name,
            server_address=server_address,
            desired_resolution=desired_resolution,
            version=version,
            **common,
        )

    @staticmethod
    def setup_token(server_address: str, overwrite: bool = True, open: bool = True) -> None:
        """Set up a token for a CAVE server interactively.

        Opens (if ``open``) the server's token page, asks for a token (hidden input), checks
        that the server accepts it, saves it, then offers to make the server the default for
        all or some of its datastacks.
        """
        interactive_setup_token(server_address, overwrite=overwrite, open=open)

    @staticmethod
    def from_lockfile(path: str | os.PathLike[str], cache: CacheOption = None) -> CAVEclientFull:
        """A client that replays the queries recorded in a lockfile (``client.lock``) offline.

        It makes no HTTP request at all, construction included (the datastack's info record
        comes from the lockfile); each recorded call is answered from the cache directory
        (its content hash checked), and anything else raises ``LockfileError``. ``cache``: the
        directory holding the content; None takes the one the lockfile was written with, else
        the default directory (as for ``CAVEclient(cache=True)``).
        """
        from .lockfile import open_lockfile

        return open_lockfile(path, cache)


class CAVEclientGlobal:
    """A client of a CAVE deployment's global services: auth, info and schema.

    No request is made until a sub-client is first used. Parameters as for ``CAVEclient``;
    ``timeout`` and ``cache`` (opencave extensions) apply to every sub-client.
    """

    def __init__(
        self,
        server_address: str | None = None,
        auth_token_file: str | None = None,
        auth_token_key: str | None = None,
        auth_token: str | None = None,
        max_retries: int | None = None,
        pool_maxsize: int | None = None,
        pool_block: bool | None = None,
        info_cache: dict[str, dict[str, Any]] | None = None,
        timeout: Timeout | None = None,
        cache: CacheOption = None,
    ):
        self._server_address = server_address or default_server_address()
        # The local query cache and the record of this client's queries (opencave extension).
        self.query_cache = QueryCache(self._server_address, resolve_cache_dir(cache))
        self._max_retries = max_retries
        self._pool_maxsize = pool_maxsize
        self._pool_block = pool_block
        self._info_cache = info_cache
        # Validate now so a bad value fails here, not at the first request.
        self._timeout = None if timeout is None else normalize_timeout(timeout)
        self._reset_services()
        self._auth_config: dict[str, Any] = {}
        self.change_auth(auth_token_file=auth_token_file, auth_token_key=auth_token_key, auth_token=auth_token)

    def change_auth(
        self,
        auth_token_file: str | None = None,
        auth_token_key: str | None = None,
        auth_token: str | None = None,
    ) -> None:
        """Use another token and rebuild every sub-client with it on next use.

        A None ``auth_token_file`` or ``auth_token_key`` keeps the current one (caveclient
        means to, but resets them); a None ``auth_token`` looks the token up in the files again.
        The token files are read now: a missing or broken one raises here and leaves the client
        as it was.
        """
        previous = self._auth_config
        self._auth_config = {
            "token_file": auth_token_file if auth_token_file is not None else previous.get("token_file"),
            "token_key": auth_token_key if auth_token_key is not None else previous.get("token_key"),
            "token": auth_token,
            "server_address": self._server_address,
        }
        kept = {name: getattr(self, f"_{name}", None) for name in SERVICES}
        self._reset_services()
        try:
            self.auth
        except Exception:
            self._auth_config = previous
            for name, service in kept.items():
                setattr(self, f"_{name}", service)
            raise

    def _reset_services(self) -> None:
        # caveclient's attribute names: code that sets e.g. ``client._materialize = None`` to
        # rebuild a sub-client (caveclient's own tests do) works here too.
        for name in SERVICES:
            setattr(self, f"_{name}", None)

    def _make(self, cls: Callable[..., T], **kwargs: Any) -> T:
        """Build a sub-client (a replaying client builds offline ones instead)."""
        return cls(**kwargs)

    def lock(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Write a lockfile of every query this client made (opencave extension).

        JSON with, for each call: the call as made, the version or moment it resolved to, the
        content hash of its answer and its rows; plus the server, the datastack's info record
        and the client's pinned version, so ``CAVEclient.from_lockfile(path)`` can replay the
        analysis offline. Needs a client made with ``cache=``: the answers' content lives in
        the cache directory (``LockfileError`` otherwise). Truncated answers, and answers not
        pinned to a version or a past moment, are recorded as not replayable. Returns the
        lockfile's content.
        """
        from .lockfile import write_lockfile

        return write_lockfile(self, path)

    def _service(self, name: str, build: Callable[[], T]) -> T:
        """The sub-client ``name``, built on first use (and after its attribute is reset)."""
        if getattr(self, f"_{name}") is None:
            setattr(self, f"_{name}", build())
        return getattr(self, f"_{name}")

    def _subclient_options(self) -> dict[str, Any]:
        """Keyword arguments every sub-client constructor takes."""
        return {
            "auth_client": self.auth,
            "max_retries": self._max_retries,
            "pool_maxsize": self._pool_maxsize,
            "pool_block": self._pool_block,
            "over_client": self,
            "timeout": self._timeout,
        }

    @property
    def server_address(self) -> str:
        """The global server."""
        return self._server_address

    @property
    def datastack_name(self) -> str | None:
        return None

    @property
    def timeout(self) -> Timeout:
        """The timeout of this client's requests (opencave extension)."""
        return self._timeout if self._timeout is not None else normalize_timeout(None)

    @property
    def auth(self) -> AuthClient:
        """The token and the auth service (``opencave.client.auth.AuthClient``)."""
        return self._service("auth", lambda: self._make(AuthClient, **self._auth_config, timeout=self._timeout))

    @property
    def info(self) -> InfoServiceClient:
        """The info service (``opencave.client.info.InfoServiceClient``)."""
        return self._service(
            "info",
            lambda: self._make(
                InfoServiceClient,
                server_address=self.server_address,
                datastack_name=self.datastack_name,
                info_cache=self._info_cache,
                **self._subclient_options(),
            ),
        )

    @property
    def schema(self) -> SchemaClient:
        """The annotation schema service (``opencave.client.schema.SchemaClient``)."""
        return self._service(
            "schema", lambda: self._make(SchemaClient, server_address=self.server_address, **self._subclient_options())
        )

    @property
    def state(self) -> JSONService:
        """The Neuroglancer state service on the global server (``opencave.client.state``);
        on a datastack's client its ``ngl_url`` is the datastack's ``viewer_site``."""
        return self._service(
            "state",
            lambda: self._make(
                JSONService,
                server_address=self.server_address,
                ngl_url=self.info.viewer_site() if self.datastack_name is not None else None,
                **self._subclient_options(),
            ),
        )

    def _no_local_functionality(self) -> None:
        raise GlobalClientError("Client in global-only mode because no datastack was set.")

    @property
    def annotation(self) -> Any:
        self._no_local_functionality()

    @property
    def chunkedgraph(self) -> Any:
        self._no_local_functionality()

    def __repr__(self) -> str:
        return f"CAVEclient<datastack=None, server_address={self.server_address}>"


class CAVEclientFull(CAVEclientGlobal):
    """A client of one datastack: global services plus the datastack's local services.

    Construction asks the info service for the datastack's record (unless ``info_cache`` has
    it), which names the local server. Parameters as for ``CAVEclient``.
    """

    def __init__(
        self,
        datastack_name: str | None = None,
        server_address: str | None = None,
        auth_token_file: str | None = None,
        auth_token_key: str | None = None,
        auth_token: str | None = None,
        max_retries: int | None = None,
        pool_maxsize: int | None = None,
        pool_block: bool | None = None,
        desired_resolution: Sequence[float] | None = None,
        info_cache: dict[str, dict[str, Any]] | None = None,
        version: int | None = None,
        timeout: Timeout | None = None,
        cache: CacheOption = None,
    ):
        self._datastack_name = datastack_name
        self.local_server: str | None = None
        super().__init__(
            server_address=server_address,
            auth_token_file=auth_token_file,
            auth_token_key=auth_token_key,
            auth_token=auth_token,
            max_retries=max_retries,
            pool_maxsize=pool_maxsize,
            pool_block=pool_block,
            info_cache=info_cache,
            timeout=timeout,
            cache=cache,
        )
        self.desired_resolution = desired_resolution
        self.local_server = self.info.local_server()
        self.auth.local_server = self.local_server
        self._aligned_volume_name = self.info.get_aligned_volume_info()["name"]
        self._version: int | None = None
        self._timestamp: datetime | None = None
        self.version = version

    @property
    def datastack_name(self) -> str | None:
        """The datastack of this client."""
        return self._datastack_name

    @property
    def auth(self) -> AuthClient:
        """The token and the auth service (``opencave.client.auth.AuthClient``)."""
        # The local server is passed again after change_auth so save_token keeps syncing it.
        return self._service(
            "auth",
            lambda: self._make(AuthClient, **self._auth_config, local_server=self.local_server, timeout=self._timeout),
        )

    @property
    def version(self) -> int | None:
        """Default materialization version for queries (None: the latest). Setting it also
        sets ``timestamp`` to that version's time."""
        return self._version

    @version.setter
    def version(self, version: int | None) -> None:
        if version is None:
            self._version = None
            self._timestamp = None
        elif isinstance(version, Integral) and not isinstance(version, bool):
            version = int(version)
            if version not in self.materialize.get_versions(expired=True):
                raise ValueError(f"Version {version} is not available for this datastack.")
            # Look the time up before changing anything, so a failure leaves both unchanged.
            timestamp = self.materialize.get_timestamp(version)
            self._version, self._timestamp = version, timestamp
        else:
            raise TypeError("Version must be an integer or None.")

    @property
    def timestamp(self) -> datetime | None:
        """The time of the default materialization version, or None; chunkedgraph queries
        default to it."""
        return self._timestamp

    @property
    def annotation(self) -> AnnotationClient:
        """The annotation engine on the local server (``opencave.client.annotation``), for the
        datastack's aligned volume. Building it builds ``schema`` too."""
        return self._service(
            "annotation",
            lambda: self._make(
                AnnotationClient,
                server_address=self.local_server,
                aligned_volume_name=self._aligned_volume_name,
                schema_client=self.schema,
                **self._subclient_options(),
            ),
        )

    def _segmentation_table(self) -> str:
        """The chunkedgraph table: the last path part of ``graphene://.../table/<table>``."""
        return (self.info.segmentation_source() or "").rstrip("/").split("/")[-1]

    @property
    def chunkedgraph(self) -> ChunkedGraphClient:
        """The chunkedgraph on the local server (``opencave.client.chunkedgraph``).

        Its default timestamp is this client's ``timestamp`` while a version is set.
        """
        return self._service(
            "chunkedgraph",
            lambda: self._make(
                ChunkedGraphClient,
                server_address=self.local_server,
                table_name=self._segmentation_table(),
                **self._subclient_options(),
            ),
        )

    @property
    def materialize(self) -> MaterializationClient:
        """The materialization engine on the local server (``opencave.client.materialize``).

        Its default version is this client's ``version`` while one is set.
        """
        return self._service(
            "materialize",
            lambda: self._make(
                MaterializationClient,
                server_address=self.local_server,
                datastack_name=self.datastack_name,
                synapse_table=self.info.get_datastack_info().get("synapse_table"),
                desired_resolution=self.desired_resolution,
                **self._subclient_options(),
            ),
        )

    @property
    def l2cache(self) -> L2CacheClient:
        """The level-2 cache on the local server (``opencave.client.l2cache``)."""
        return self._service(
            "l2cache",
            lambda: self._make(
                L2CacheClient,
                server_address=self.local_server,
                table_name=self._segmentation_table(),
                **self._subclient_options(),
            ),
        )

    @property
    def skeleton(self) -> SkeletonClient:
        """The skeleton service on the local server (``opencave.client.skeleton``)."""
        return self._service(
            "skeleton",
            lambda: self._make(
                SkeletonClient,
                server_address=self.local_server,
                datastack_name=self.datastack_name,
                **self._subclient_options(),
            ),
        )

    @property
    def connectivity(self) -> ConnectivityClient:
        """Connectivity at a version or a moment on the local server (``opencave.client.connectivity``;
        an opencave extension: other CAVE servers do not offer it, see ``opencave.connectivity``)."""
        return self._service(
            "connectivity",
            lambda: self._make(
                ConnectivityClient,
                server_address=self.local_server,
                datastack_name=self.datastack_name,
                synapse_table=self.info.get_datastack_info().get("synapse_table"),
                **self._subclient_options(),
            ),
        )

    def __repr__(self) -> str:
        return f"CAVEclient<datastack_name={self.datastack_name}, server_address={self.server_address}>"
