"""The materialization engine client (``client.materialize``): versions, table metadata and
queries of materialized (frozen) versions, live queries at any time, views.

Requests and DataFrames (columns, dtypes, ``attrs``) are caveclient 8.2.1's. Differences, each
noted in the method's docstring, are fixes of caveclient bugs and these additions:

* every request has a timeout (the session machinery); answers are never capped by the client,
  and a server's row-cap warning shows as ``df.attrs["truncated"]`` (with ``df.attrs["warnings"]``);
* metadata caches are per client and keyed by the resolved (table, datastack, version), so a
  version change never serves stale metadata and one table is never fetched twice;
* ``join_query(return_df=False)`` returns the JSON answer (caveclient returns None);
* the ``tables`` interface works on API 2 servers too and is rebuilt when the version changes.

The query methods are in ``materialize_queries``, the DataFrame helpers (re-exported here under
caveclient's names) in ``query_frames``, client-side live queries in ``live``.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import numpy as np
from cachetools import TTLCache

from ..wire.endpoints import MATERIALIZE
from ..wire.json_encoding import dumps
from .auth import AuthClient
from .base import ServiceClient, check_version_compatibility, handle_response
from .errors import ServerIncompatibilityError
from .materialize_queries import DIRECT_SQL_ERROR_MSG, JSON_CONTENT, QueryMethods, direct_sql_error_msg
from .query_frames import (
    DEFAULT_COMPRESSION,
    concatenate_position_columns,
    convert_position_columns,
    convert_timestamp,
    deserialize_query_response,
    string_format_timestamp,
)
from .session import Timeout
from .table_manager import TableManager, ViewManager

__all__ = [
    "DEFAULT_COMPRESSION",
    "DIRECT_SQL_ERROR_MSG",
    "MaterializationClient",
    "concatenate_position_columns",
    "convert_position_columns",
    "convert_timestamp",
    "deserialize_query_response",
    "direct_sql_error_msg",
    "string_format_timestamp",
]


METADATA_TTL = 12 * 60 * 60


def _combine_voxel_resolution(metadata: dict[str, Any]) -> dict[str, Any]:
    """Replace ``voxel_resolution_x/y/z`` by ``voxel_resolution: [x, y, z]`` (in place; None
    for a missing axis)."""
    metadata["voxel_resolution"] = [metadata.pop(f"voxel_resolution_{axis}", None) for axis in "xyz"]
    return metadata


class _HTMLLink:
    """A notebook link, for when IPython is not installed."""

    def __init__(self, html: str):
        self.data = html

    def _repr_html_(self) -> str:
        return self.data


class MaterializationClient(QueryMethods, ServiceClient):
    """Client of a materialization engine (``client.materialize``).

    The API version is negotiated through ``GET /materialize/api/versions`` (API 2 when the
    server cannot say) and the server version read from ``/materialize/version``; queries need
    a server ≥ 5.13.0.
    """

    service = MATERIALIZE
    fallback_version = 2  # caveclient assumes API 2 when the server does not say

    def __init__(
        self,
        server_address: str | None = None,
        datastack_name: str | None = None,
        auth_client: AuthClient | None = None,
        cg_client: Any = None,
        synapse_table: str | None = None,
        api_version: int | str = "latest",
        version: int | None = None,
        verify: bool | str = True,
        max_retries: int | None = None,
        pool_maxsize: int | None = None,
        pool_block: bool | None = None,
        desired_resolution: Sequence[float] | None = None,
        over_client: Any = None,
        timeout: Timeout | None = None,
    ):
        super().__init__(
            server_address,
            auth_client,
            api_version,
            verify=verify,
            max_retries=max_retries,
            pool_maxsize=pool_maxsize,
            pool_block=pool_block,
            over_client=over_client,
            timeout=timeout,
        )
        self._datastack_name = datastack_name
        self._version = version
        self._cg_client = cg_client
        self.synapse_table = synapse_table
        self.desired_resolution = desired_resolution
        self._cache_lock = threading.Lock()
        self._caches: dict[str, TTLCache] = {
            name: TTLCache(maxsize=100, ttl=METADATA_TTL) for name in ("versions", "table", "tables")
        }
        self._tables: tuple[Any, TableManager] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # A lock cannot be pickled or deep-copied, nor can the query classes of the tables
        # interface (made at run time); copies (multiprocessing, joblib, dask) get their own
        # lock, keep the cached metadata and rebuild the interface when first used.
        state = self.__dict__.copy()
        del state["_cache_lock"]
        state["_tables"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cache_lock = threading.Lock()

    # -- properties --------------------------------------------------------------------------

    @property
    def datastack_name(self) -> str | None:
        """The datastack queried unless a method is given another."""
        return self._datastack_name

    @property
    def cg_client(self) -> Any:
        """The chunkedgraph client live queries use: the one given, else the CAVEclient's."""
        if self._cg_client is None:
            if self.fc is None:
                raise ValueError("No chunkedgraph client specified")
            self._cg_client = self.fc.chunkedgraph
        return self._cg_client

    @property
    def version(self) -> int:
        """The default version of queries: the CAVEclient's version when it has one, else the
        version set here, else the most recent valid version (asked once)."""
        if self.fc is not None and getattr(self.fc, "version", None) is not None:
            return self.fc.version
        if self._version is None:
            self._version = self.most_recent_version()
        return self._version

    @version.setter
    def version(self, version: int | None) -> None:
        if self.fc is not None and getattr(self.fc, "version", None) is not None:
            raise ValueError(
                "Cannot set `version` for materialization client when attached to a "
                "CAVEclient with a version, set at the CAVEclient level instead."
            )
        if version is None:  # opencave: back to "the most recent version"
            self._version = None
        elif int(version) in self.get_versions(expired=True):
            self._version = int(version)
        else:
            raise ValueError("Version not in materialized database")

    @property
    def homepage(self) -> Any:
        """A notebook link to the materialization engine's web pages for the datastack."""
        url = f"{self.server_address}/materialize/views/datastack/{self.datastack_name}"
        html = f'<a href="{url}" target="_blank">Materialization Engine</a>'
        try:
            from IPython.display import HTML
        except ImportError:
            return _HTMLLink(html)
        return HTML(html)

    # -- helpers -----------------------------------------------------------------------------

    def _url(self, endpoint: str, **mapping: Any) -> str:
        if endpoint not in self._endpoints:
            raise ServerIncompatibilityError(
                f"'{endpoint}' needs materialization API version 3; this server speaks API {self.api_version}."
            )
        return super()._url(endpoint, **mapping)

    def _datastack(self, datastack_name: str | None) -> str | None:
        return self.datastack_name if datastack_name is None else datastack_name

    def _resolve_version(self, version: int | None) -> int:
        return self.version if version is None else version

    def _get_json(self, url: str, params: dict[str, Any] | None = None, log_warning: bool = True) -> Any:
        return handle_response(self.session.get(url, params=params), log_warning=log_warning)

    def _cached(self, cache: str, key: Hashable, compute: Callable[[], Any], shared: bool = False) -> Any:
        """A deep copy of the cached value of ``key``, computed on a miss; the value itself
        with ``shared``, for the client's own code, which only reads it.

        Copies keep callers (which often edit metadata dicts) from changing the cache.
        """
        with self._cache_lock:
            if key in self._caches[cache]:
                value = self._caches[cache][key]
                return value if shared else copy.deepcopy(value)
        value = compute()
        with self._cache_lock:
            self._caches[cache][key] = value
        return value if shared else copy.deepcopy(value)

    # -- versions ----------------------------------------------------------------------------

    def most_recent_version(self, datastack_name: str | None = None) -> int:
        """The newest valid (unexpired) version of the datastack.

        An ``int`` (caveclient returns a numpy integer, which ``CAVEclient.version`` rejects).
        """
        versions = self.get_versions(datastack_name=datastack_name)
        if not versions:
            raise ValueError(f"Datastack {self._datastack(datastack_name)} has no valid materialization version.")
        return int(np.max(np.array(versions)))

    def get_versions(self, datastack_name: str | None = None, expired: bool = False) -> list[int]:
        """Version numbers of the datastack; expired versions too if ``expired``."""
        url = self._url("versions", datastack_name=self._datastack(datastack_name))
        return self._get_json(url, params={"expired": expired})

    def get_version_metadata(self, version: int | None = None, datastack_name: str | None = None) -> dict[str, Any]:
        """A version's record; ``time_stamp`` and ``expires_on`` as UTC datetimes."""
        url = self._url(
            "version_metadata", datastack_name=self._datastack(datastack_name), version=self._resolve_version(version)
        )
        metadata = self._get_json(url)
        metadata["time_stamp"] = convert_timestamp(metadata["time_stamp"])
        metadata["expires_on"] = convert_timestamp(metadata["expires_on"])
        return metadata

    def get_timestamp(self, version: int | None = None, datastack_name: str | None = None) -> datetime:
        """When a version was frozen (UTC)."""
        metadata = self.get_version_metadata(version=version, datastack_name=datastack_name)
        return convert_timestamp(metadata["time_stamp"])

    def get_versions_metadata(self, datastack_name: str | None = None, expired: bool = False) -> list[dict[str, Any]]:
        """The records of all valid (or all, with ``expired``) versions, timestamps as UTC
        datetimes. Cached for 12 hours."""
        datastack_name = self._datastack(datastack_name)

        def fetch() -> list[dict[str, Any]]:
            url = self._url("versions_metadata", datastack_name=datastack_name)
            records = self._get_json(url, params={"expired": expired})
            for record in records:
                record["time_stamp"] = convert_timestamp(record["time_stamp"])
                record["expires_on"] = convert_timestamp(record["expires_on"])
            return records

        return self._cached("versions", (datastack_name, bool(expired)), fetch)

    # -- tables ------------------------------------------------------------------------------

    def get_tables(self, datastack_name: str | None = None, version: int | None = None) -> list[str]:
        """Names of the tables in a version."""
        url = self._url(
            "tables", datastack_name=self._datastack(datastack_name), version=self._resolve_version(version)
        )
        return self._get_json(url)

    def get_annotation_count(
        self, table_name: str, datastack_name: str | None = None, version: int | None = None
    ) -> int:
        """Number of rows of a table in a version."""
        url = self._url(
            "table_count",
            datastack_name=self._datastack(datastack_name),
            table_name=table_name,
            version=self._resolve_version(version),
        )
        return self._get_json(url)

    def get_table_metadata(
        self, table_name: str, datastack_name: str | None = None, version: int | None = None, log_warning: bool = True
    ) -> dict[str, Any]:
        """A table's metadata at a version, with ``voxel_resolution: [x, y, z]`` (None for
        missing axes) in place of ``voxel_resolution_x/y/z``.

        Cached for 12 hours per (table, datastack, version). caveclient keys its cache on the
        literal call, so the same table is fetched again when called another way.
        """
        return self._table_metadata(table_name, datastack_name, version, log_warning)

    def _table_metadata(
        self, table_name: str, datastack_name: str | None = None, version: int | None = None, log_warning: bool = True, shared: bool = False
    ) -> dict[str, Any]:
        """``get_table_metadata``; with ``shared``, the cached dict itself (not to be changed)."""
        datastack_name = self._datastack(datastack_name)
        version = self._resolve_version(version)

        def fetch() -> dict[str, Any]:
            url = self._url("metadata", datastack_name=datastack_name, table_name=table_name, version=version)
            return _combine_voxel_resolution(self._get_json(url, log_warning=log_warning))

        return self._cached("table", (table_name, datastack_name, version), fetch, shared=shared)

    @check_version_compatibility(method_api_constraint=">=3.0.0")
    def get_tables_metadata(
        self, datastack_name: str | None = None, version: int | None = None, log_warning: bool = True
    ) -> list[dict[str, Any]]:
        """The metadata of every table of a version (API ≥ 3), each as ``get_table_metadata``
        gives it. Cached for 12 hours per client (caveclient shares one cache across clients
        of different servers)."""
        datastack_name = self._datastack(datastack_name)
        version = self._resolve_version(version)

        def fetch() -> list[dict[str, Any]]:
            url = self._url("all_tables_metadata", datastack_name=datastack_name, version=version)
            return [_combine_voxel_resolution(m) for m in self._get_json(url, log_warning=log_warning)]

        return self._cached("tables", (datastack_name, version), fetch)

    def ingest_annotation_table(self, table_name: str, datastack_name: str | None = None) -> dict[str, Any]:
        """Ask the server to look up supervoxels and root ids of a table's new annotations."""
        url = self._url(
            "ingest_annotation_table", datastack_name=self._datastack(datastack_name), table_name=table_name
        )
        return handle_response(self.session.post(url))

    def lookup_supervoxel_ids(
        self, table_name: str, annotation_ids: Iterable[int] | None = None, datastack_name: str | None = None
    ) -> dict[str, Any]:
        """Ask the server to look up the supervoxels of some (default: all) annotations."""
        data = {"annotation_ids": annotation_ids} if annotation_ids is not None else {}
        url = self._url("lookup_supervoxel_ids", datastack_name=self._datastack(datastack_name), table_name=table_name)
        response = self.session.post(
            url, data=dumps(data), headers={"Content-Type": JSON_CONTENT, "Accept-Encoding": ""}
        )
        return handle_response(response)

    # -- views and other API 3 endpoints ----------------------------------------------------

    @check_version_compatibility(method_api_constraint=">=3.0.0")
    def get_views(self, version: int | None = None, datastack_name: str | None = None) -> dict[str, dict[str, Any]]:
        """``{view: metadata}`` of the views of a version."""
        url = self._url(
            "get_views", datastack_name=self._datastack(datastack_name), version=self._resolve_version(version)
        )
        return self._get_json(url)

    @check_version_compatibility(method_api_constraint=">=3.0.0")
    def get_view_metadata(
        self,
        view_name: str,
        materialization_version: int | None = None,
        datastack_name: str | None = None,
        log_warning: bool = True,
    ) -> dict[str, Any]:
        """Metadata of one view."""
        url = self._url(
            "get_view_metadata",
            datastack_name=self._datastack(datastack_name),
            version=self._resolve_version(materialization_version),
            view_name=view_name,
        )
        return self._get_json(url, log_warning=log_warning)

    @check_version_compatibility(method_api_constraint=">=3.0.0")
    def get_view_schema(
        self,
        view_name: str,
        materialization_version: int | None = None,
        datastack_name: str | None = None,
        log_warning: bool = True,
    ) -> dict[str, dict[str, str]]:
        """``{column: {"type": ...}}`` of one view."""
        url = self._url(
            "view_schema",
            datastack_name=self._datastack(datastack_name),
            version=self._resolve_version(materialization_version),
            view_name=view_name,
        )
        return self._get_json(url, log_warning=log_warning)

    @check_version_compatibility(method_api_constraint=">=3.0.0")
    def get_view_schemas(
        self, materialization_version: int | None = None, datastack_name: str | None = None, log_warning: bool = True
    ) -> dict[str, dict[str, dict[str, str]]]:
        """``{view: {column: {"type": ...}}}`` of every view of a version."""
        url = self._url(
            "view_schemas",
            datastack_name=self._datastack(datastack_name),
            version=self._resolve_version(materialization_version),
        )
        return self._get_json(url, log_warning=log_warning)

    @check_version_compatibility(method_api_constraint=">=3.0.0")
    def get_unique_string_values(self, table: str, datastack_name: str | None = None) -> dict[str, list[str]]:
        """``{column: [distinct values]}`` of a table's string columns."""
        url = self._url("unique_string_values", datastack_name=self._datastack(datastack_name), table_name=table)
        return self._get_json(url)

    def neuroglancer_annotation_path(
        self, table_name: str, datastack_name: str | None = None, for_neuroglancer: bool = True
    ) -> str:
        """The live table as a Neuroglancer precomputed annotation source
        (``precomputed://middleauth+…`` when ``for_neuroglancer``, else the plain URL)."""
        url = self._url(
            "neuroglancer_annotation_path", datastack_name=self._datastack(datastack_name), table_name=table_name
        )
        return f"precomputed://middleauth+{url}" if for_neuroglancer else url

    def neuroglancer_annotation_info(self, table_name: str, datastack_name: str | None = None) -> dict[str, Any]:
        """The ``info`` JSON of that annotation source."""
        url = self.neuroglancer_annotation_path(table_name, datastack_name=datastack_name, for_neuroglancer=False)
        return self._get_json(url + "/info")

    def neuroglancer_segprop_path(
        self,
        table_name: str,
        datastack_name: str | None = None,
        materialization_version: int | None = None,
        for_neuroglancer: bool = True,
    ) -> str:
        """A table at a version as Neuroglancer segment properties (``precomputed://middleauth+…``
        when ``for_neuroglancer``)."""
        url = self._url(
            "neuroglancer_segprop_path",
            datastack_name=self._datastack(datastack_name),
            table_name=table_name,
            version=self._resolve_version(materialization_version),
        )
        return f"precomputed://middleauth+{url}" if for_neuroglancer else url

    def neuroglancer_segprop_info(
        self, table_name: str, datastack_name: str | None = None, materialization_version: int | None = None
    ) -> dict[str, Any]:
        """The ``info`` JSON of those segment properties."""
        url = self.neuroglancer_segprop_path(
            table_name,
            datastack_name=datastack_name,
            materialization_version=materialization_version,
            for_neuroglancer=False,
        )
        return self._get_json(url + "/info")

    # -- the tables and views interfaces --------------------------------------------------

    def _require_framework(self) -> Any:
        if self.fc is None:
            raise ValueError("No full CAVEclient specified")
        return self.fc

    @property
    def tables(self) -> TableManager:
        """``client.materialize.tables``: one query builder per table of the version, with
        the table's columns as keyword filters (see ``opencave.client.table_manager``).

        Built once per version. Unlike caveclient it also works with API 2 servers (the
        metadata is then fetched table by table).
        """
        fc = self._require_framework()
        version = self.version
        if self._tables is None or self._tables[0] != version:
            if self.api_version >= 3:
                with ThreadPoolExecutor(max_workers=2) as executor:
                    metadata = executor.submit(self.get_tables_metadata, version=version)
                    schemas = executor.submit(fc.schema.schema_definition_all)
                    records, definitions = metadata.result(), schemas.result()
            else:
                records = [self.get_table_metadata(name, version=version) for name in self.get_tables(version=version)]
                definitions = fc.schema.schema_definition_all()
            self._tables = (version, TableManager(fc, records, definitions))
        return self._tables[1]

    @property
    def views(self) -> ViewManager:
        """``client.materialize.views``: one query builder per view of the version (API ≥ 3).
        Fetched on every access, as in caveclient, so new views show up."""
        fc = self._require_framework()
        version = self.version
        with ThreadPoolExecutor(max_workers=2) as executor:
            views = executor.submit(self.get_views, version=version)
            schemas = executor.submit(self.get_view_schemas, materialization_version=version)
            return ViewManager(fc, views.result(), schemas.result())
