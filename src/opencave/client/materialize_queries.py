"""The query methods of ``client.materialize``: ``query_table``, ``join_query``,
``live_query``, ``live_live_query``, ``synapse_query`` and ``query_view``, with the request
assembly and the ``df.attrs`` they share.

``QueryMethods`` is mixed into ``MaterializationClient``, which provides the session, the
URL templates, the default datastack and version, and the metadata getters.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import textwrap
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import requests
from requests import HTTPError

from ..wire.json_encoding import dumps
from ..wire.materialize_query import FILTERS, encode, live_query_body, query_body
from . import live
from .base import check_version_compatibility, handle_response
from .cache import Fetched
from .query_frames import (
    DEFAULT_COMPRESSION,
    answer_encoding,
    concatenate_position_columns,
    convert_position_columns,
    convert_timestamp,
    parse_resolution,
    read_query_answer,
    string_format_timestamp,
    warning_attrs,
)

logger = logging.getLogger(__name__)

DIRECT_SQL_ERROR_MSG = textwrap.dedent(
    """\
    Queries need a materialization service of version 5.13.0 or newer, which returns
    column types exactly: booleans as booleans, strings as strings. This server is older or
    does not report its version. Ask its administrator to upgrade the materialization service."""
)
direct_sql_error_msg = DIRECT_SQL_ERROR_MSG  # caveclient's name

# Filters that compare root ids and so must be translated in time by live queries.
ROOT_MAPPED_KINDS = [keyword for keyword, _, _, kind in FILTERS if kind not in ("spatial", "regex")]

_INEQUALITY = ">=4.34.4"
QUERY_GATE: dict[str, Any] = {
    "kwarg_use_constraints": {
        "filter_greater_dict": _INEQUALITY,
        "filter_less_dict": _INEQUALITY,
        "filter_greater_equal_dict": _INEQUALITY,
        "filter_less_equal_dict": _INEQUALITY,
    },
    "method_constraint": ">=5.13.0",
    "method_constraint_message": DIRECT_SQL_ERROR_MSG,
}
JSON_CONTENT = "application/json"


def _filters(
    filter_in_dict: Any = None,
    filter_out_dict: Any = None,
    filter_equal_dict: Any = None,
    filter_greater_dict: Any = None,
    filter_less_dict: Any = None,
    filter_greater_equal_dict: Any = None,
    filter_less_equal_dict: Any = None,
    filter_spatial_dict: Any = None,
    filter_regex_dict: Any = None,
) -> dict[str, Any]:
    """The filter keywords of a query method as one dict keyed by keyword."""
    return {
        "filter_in_dict": filter_in_dict,
        "filter_out_dict": filter_out_dict,
        "filter_equal_dict": filter_equal_dict,
        "filter_greater_dict": filter_greater_dict,
        "filter_less_dict": filter_less_dict,
        "filter_greater_equal_dict": filter_greater_equal_dict,
        "filter_less_equal_dict": filter_less_equal_dict,
        "filter_spatial_dict": filter_spatial_dict,
        "filter_regex_dict": filter_regex_dict,
    }


def _nest(filters: dict[str, Any], name: str) -> dict[str, Any]:
    """Flat per-column filters of one table or view nested under its name, as sent."""
    return {kind: (None if value is None else {name: value}) for kind, value in filters.items()}


def _attrs_filters(filters: dict[str, Any], include_regex: bool = True) -> dict[str, Any]:
    """``attrs["filters"]``: the user's filters under caveclient's short names."""
    named = {short: filters.get(keyword) for keyword, _, short, _ in FILTERS}
    if not include_regex:
        named.pop("regex")
    return named


def _table_attrs(metadata: dict[str, Any]) -> dict[str, Any]:
    """Metadata keys as attrs keys: ``id`` → ``table_id``; keys starting "table" unchanged."""
    return {key if key.startswith("table") else f"table_{key}": value for key, value in metadata.items()}


def _header_resolution(response: requests.Response, desired_resolution: Any) -> Any:
    """The resolution the answer's positions are in, as far as the answer says."""
    return response.headers.get("dataframe_resolution") or desired_resolution


def json_roundtrip(value: Any) -> Any:
    """``value`` as plain JSON types (numpy values, datetimes, tuples made JSON-native)."""
    return json.loads(dumps(value))


# Arguments that are not part of a cached answer's parameters: they are in its key elsewhere
# (table, datastack, version, moment) or do not change the DataFrame.
_NOT_PARAMS = frozenset(
    {"self", "table", "view_name", "datastack_name", "materialization_version", "timestamp", "log_warning", "return_df", "get_counts"}
)


def cached_query(method: str, table_of: Callable[[dict[str, Any]], str], live: bool = False) -> Callable[[Any], Any]:
    """Send a query method's DataFrame answers through the client's ``query_cache``.

    The call's parameters are normalised (``opencave.client.cache.normalise_params``) with the
    client's default resolution filled in; the version asked is the one given, else the
    CAVEclient's pinned version (so a hit needs no server). JSON answers (``return_df=False``,
    ``get_counts``), random samples (``random_sample``) and ``query_table(timestamp=...)``
    (answered by ``live_query``) pass by, unrecorded.
    Truncation is read from ``df.attrs["truncated"]`` (the server's row-cap warning).
    """

    def decorate(func: Any) -> Any:
        signature = inspect.signature(func)

        @functools.wraps(func)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            cache = getattr(self.fc, "query_cache", None)
            if cache is None or not cache.enabled:  # no cache: nothing to key, keep or replay
                return func(self, *args, **kwargs)
            try:
                bound = signature.bind(self, *args, **kwargs)
            except TypeError:
                return func(self, *args, **kwargs)
            bound.apply_defaults()
            call = bound.arguments
            if (
                not call.get("return_df", True)
                or call.get("get_counts")
                or call.get("random_sample")  # a sample is drawn anew by each call: never replayed
                or (not live and call.get("timestamp") is not None)
            ):
                return func(self, *args, **kwargs)
            params = {name: value for name, value in call.items() if name not in _NOT_PARAMS}
            if params.get("desired_resolution") is None:
                params["desired_resolution"] = self.desired_resolution
            if live:
                version, timestamp = None, convert_timestamp(call["timestamp"])
            else:
                version = call.get("materialization_version")
                if version is None:
                    version = getattr(self.fc, "version", None)
                timestamp = None

            def fetch() -> Fetched:
                df = func(self, *args, **kwargs)
                truncated = bool(df.attrs.get("truncated", False))
                if live:
                    return Fetched(df, None, timestamp, truncated)
                return Fetched(df, int(self._resolve_version(call.get("materialization_version"))), None, truncated)

            return cache.answer(
                service="materialize",
                method=method,
                datastack=self._datastack(call.get("datastack_name")),
                table=table_of(call),
                version=None if version is None else int(version),
                timestamp=timestamp,
                params=params,
                fetch=fetch,
            )

        return wrapper

    return decorate


def _table(call: dict[str, Any]) -> str:
    return call["table"]


def _join_tables(call: dict[str, Any]) -> str:
    return ",".join(str(pair[0]) for pair in call["tables"])


class QueryMethods:
    """Queries of materialized versions and live queries (see the module docstring)."""

    def _query_request(
        self,
        datastack_name: str | None,
        version: int,
        tables: list[Any],
        select_columns: Any,
        suffixes: Any,
        filters: dict[str, Any],
        return_df: bool,
        offset: int | None,
        limit: int | None,
        desired_resolution: Any,
        use_view: bool = False,
        random_sample: int | None = None,
    ) -> tuple[str, dict[str, Any], dict[str, Any], str]:
        """URL, JSON body, query string and ``Accept-Encoding`` of a (join/view) query.

        ``filters`` are nested by table (keyword → ``{table: {column: value}}``).
        """
        params: dict[str, Any] = {"return_pyarrow": return_df, "arrow_format": return_df, "split_positions": True}
        if random_sample:
            params["random_sample"] = random_sample
        if len(tables) == 1:
            if use_view:
                url = self._url("view_query", datastack_name=datastack_name, version=version, view_name=tables[0])
            else:
                url = self._url("simple_query", datastack_name=datastack_name, version=version, table_name=tables[0])
        else:
            url = self._url("join_query", datastack_name=datastack_name, version=version)
        data = query_body(
            None if len(tables) == 1 else tables, filters, select_columns, suffixes, offset, limit, desired_resolution
        )
        return url, data, params, DEFAULT_COMPRESSION if return_df else "gzip"

    def _post_query(
        self,
        url: str,
        data: dict[str, Any],
        params: dict[str, Any],
        encoding: str,
        stream: bool = False,
        log_warning: bool = True,
    ) -> requests.Response:
        arrow = encoding == DEFAULT_COMPRESSION
        response = self.session.post(
            url,
            data=encode(data),
            headers={
                "Content-Type": JSON_CONTENT,
                "Accept-Encoding": answer_encoding(self.server_address) if arrow else encoding,
            },
            params=params,
            stream=stream or arrow,
        )
        return handle_response(response, as_json=False, log_warning=log_warning)

    def _resolve_merge_reference(
        self, merge_reference: bool, table: str, datastack_name: str | None, version: int
    ) -> tuple[list[Any], Any]:
        """The tables to query and their suffixes: a reference table is joined to its target
        (``target_id`` = ``id``) when ``merge_reference``."""
        target = None
        if merge_reference:
            metadata = self._table_metadata(table, datastack_name, version, log_warning=False, shared=True)
            target = metadata.get("reference_table") or None
        if target is None:
            return [table], None
        suffixes: Any = ["", "ref"] if self.api_version == 2 else {table: "", target: "_ref"}
        return [[table, "target_id"], [target, "id"]], suffixes

    def _rescale(
        self,
        df: pd.DataFrame,
        response: requests.Response,
        table: str,
        datastack_name: str | None,
        version: int | None,
        desired_resolution: Any,
        server_rescaled: bool = True,
    ) -> pd.DataFrame:
        """Convert positions to ``desired_resolution`` unless the server says it did."""
        if desired_resolution is None or (server_rescaled and response.headers.get("dataframe_resolution")):
            return df
        if len(desired_resolution) != 3:
            raise ValueError("desired resolution needs to be of length 3, for xyz")
        voxel_resolution = self._table_metadata(table, datastack_name, version, log_warning=False, shared=True)["voxel_resolution"]
        return convert_position_columns(df, voxel_resolution, desired_resolution)

    def _metadata_of(self, name: str, version: int | None, is_view: bool) -> dict[str, Any]:
        if is_view:
            return self.get_view_metadata(name, materialization_version=version, log_warning=False)
        try:  # shared: the attrs made of it are a JSON copy
            return self._table_metadata(name, version=version, log_warning=False, shared=True)
        except HTTPError:
            if self.fc is None:
                raise
            return self.fc.annotation.get_table_metadata(name)

    def _assemble_attributes(
        self, tables: Any, suffixes: Any = None, desired_resolution: Any = None, is_view: bool = False, **kwargs: Any
    ) -> dict[str, Any]:
        """``df.attrs`` of a query: the table (or per-table) metadata under ``table_*`` keys,
        the resolution of the positions and the query's parameters (``kwargs``).

        Fixes of caveclient: a suffix dict gives each table its own suffix (caveclient zips
        the dict's keys, so ``suffix`` holds table names), and views whose metadata has
        separate ``voxel_resolution_x/y/z`` get a ``dataframe_resolution`` (caveclient raises
        KeyError when the server sends no resolution header).
        """
        if isinstance(tables, str):
            tables = [tables]
        desired_resolution = parse_resolution(desired_resolution)
        version = kwargs.get("materialization_version")
        attrs: dict[str, Any] = {"datastack_name": self.datastack_name}
        if len(tables) == 1:
            attrs["join_query"] = False
            attrs.update(_table_attrs(self._metadata_of(tables[0], version, is_view)))
            if desired_resolution is not None:
                attrs["dataframe_resolution"] = desired_resolution
            elif "table_voxel_resolution" in attrs:
                attrs["dataframe_resolution"] = attrs["table_voxel_resolution"]
            else:
                attrs["dataframe_resolution"] = [attrs.get(f"table_voxel_resolution_{axis}") for axis in "xyz"]
        else:
            attrs["join_query"] = True
            if suffixes is None:
                suffixes = ["_x", "_y"]
            if isinstance(suffixes, dict):
                suffixes = [suffixes.get(name) for name, _ in tables]
            per_table: dict[str, Any] = {}
            for (name, join_column), suffix in zip(tables, suffixes):
                per_table[name] = {
                    **_table_attrs(self._metadata_of(name, version, False)),
                    "join_column": join_column,
                    "suffix": suffix,
                }
            attrs["tables"] = per_table
            if desired_resolution is not None:
                attrs["dataframe_resolution"] = desired_resolution
            else:
                resolutions = {tuple(t["table_voxel_resolution"]) for t in per_table.values()}
                attrs["dataframe_resolution"] = (
                    list(resolutions.pop()) if len(resolutions) == 1 else "mixed_resolutions"
                )
        attrs.update(kwargs)
        return json_roundtrip(attrs)

    def _finish(self, df: pd.DataFrame, split_positions: bool) -> pd.DataFrame:
        return df if split_positions else concatenate_position_columns(df)

    # -- queries -----------------------------------------------------------------------------

    @cached_query("query_table", _table)
    @check_version_compatibility(**QUERY_GATE)
    def query_table(
        self,
        table: str,
        filter_in_dict: dict[str, Any] | None = None,
        filter_out_dict: dict[str, Any] | None = None,
        filter_equal_dict: dict[str, Any] | None = None,
        filter_greater_dict: dict[str, Any] | None = None,
        filter_less_dict: dict[str, Any] | None = None,
        filter_greater_equal_dict: dict[str, Any] | None = None,
        filter_less_equal_dict: dict[str, Any] | None = None,
        filter_spatial_dict: dict[str, Any] | None = None,
        filter_regex_dict: dict[str, Any] | None = None,
        select_columns: list[str] | dict[str, list[str]] | None = None,
        offset: int | None = None,
        limit: int | None = None,
        datastack_name: str | None = None,
        return_df: bool = True,
        split_positions: bool = False,
        materialization_version: int | None = None,
        timestamp: datetime | None = None,
        metadata: bool = True,
        merge_reference: bool = True,
        desired_resolution: Sequence[float] | None = None,
        get_counts: bool = False,
        random_sample: int | None = None,
        log_warning: bool = True,
    ) -> pd.DataFrame | Any:
        """Rows of one table at a version, filtered on the server.

        Filters are ``{column: value}``: in/out take lists, equal/greater/less a value,
        spatial a ``[[min_x, min_y, min_z], [max_x, max_y, max_z]]`` box, regex a pattern.
        A ``timestamp`` makes this a ``live_query``. A reference table is joined to its target
        unless ``merge_reference`` is False. Positions come as one ``[x, y, z]`` array column
        unless ``split_positions``; in ``desired_resolution`` (nm per voxel) if given.

        ``df.attrs`` holds the table metadata and the query; if the server sent warnings
        they are in ``attrs["warnings"]``, and ``attrs["truncated"]`` says whether it capped
        the rows (opencave). For a reference table the join's real suffixes are recorded
        (caveclient records ``"_x"``/``"_y"``).
        """
        filters = _filters(
            filter_in_dict,
            filter_out_dict,
            filter_equal_dict,
            filter_greater_dict,
            filter_less_dict,
            filter_greater_equal_dict,
            filter_less_equal_dict,
            filter_spatial_dict,
            filter_regex_dict,
        )
        if desired_resolution is None:
            desired_resolution = self.desired_resolution
        if timestamp is not None:
            if materialization_version is not None:
                raise ValueError("cannot specify timestamp and materialization version")
            return self.live_query(
                table,
                timestamp,
                **filters,
                select_columns=select_columns,
                offset=offset,
                limit=limit,
                datastack_name=datastack_name,
                split_positions=split_positions,
                post_filter=True,
                metadata=metadata,
                merge_reference=merge_reference,
                desired_resolution=desired_resolution,
                random_sample=random_sample,
                log_warning=log_warning,
            )
        version = self._resolve_version(materialization_version)
        datastack_name = self._datastack(datastack_name)
        tables, suffixes = self._resolve_merge_reference(merge_reference, table, datastack_name, version)
        url, data, params, encoding = self._query_request(
            datastack_name,
            version,
            tables,
            select_columns,
            suffixes,
            _nest(filters, table),
            return_df,
            offset,
            limit,
            desired_resolution,
            random_sample=random_sample,
        )
        if get_counts:
            params["count"] = True
        params["direct_sql_pandas"] = True
        response = self._post_query(url, data, params, encoding, stream=not return_df, log_warning=log_warning)
        if not return_df:
            return response.json()
        df = read_query_answer(response)
        df = self._rescale(df, response, table, datastack_name, version, desired_resolution)
        if metadata:
            df.attrs.update(
                self._assemble_attributes(
                    tables,
                    suffixes=suffixes,
                    filters=_attrs_filters(filters),
                    select_columns=select_columns,
                    offset=offset,
                    limit=limit,
                    live_query=False,
                    timestamp=None,
                    materialization_version=version,
                    desired_resolution=_header_resolution(response, desired_resolution),
                    column_names=response.headers.get("column_names"),
                )
            )
        df.attrs.update(warning_attrs(response))
        return self._finish(df, split_positions)

    @cached_query("join_query", _join_tables)
    @check_version_compatibility(**QUERY_GATE)
    def join_query(
        self,
        tables: list[list[str]],
        filter_in_dict: dict[str, dict[str, Any]] | None = None,
        filter_out_dict: dict[str, dict[str, Any]] | None = None,
        filter_equal_dict: dict[str, dict[str, Any]] | None = None,
        filter_greater_dict: dict[str, dict[str, Any]] | None = None,
        filter_less_dict: dict[str, dict[str, Any]] | None = None,
        filter_greater_equal_dict: dict[str, dict[str, Any]] | None = None,
        filter_less_equal_dict: dict[str, dict[str, Any]] | None = None,
        filter_spatial_dict: dict[str, dict[str, Any]] | None = None,
        filter_regex_dict: dict[str, dict[str, Any]] | None = None,
        select_columns: dict[str, list[str]] | list[str] | None = None,
        offset: int | None = None,
        limit: int | None = None,
        suffixes: dict[str, str] | list[str] | None = None,
        datastack_name: str | None = None,
        return_df: bool = True,
        split_positions: bool = False,
        materialization_version: int | None = None,
        metadata: bool = True,
        desired_resolution: Sequence[float] | None = None,
        random_sample: int | None = None,
        log_warning: bool = True,
    ) -> pd.DataFrame | Any:
        """Rows of a join ``tables = [[table1, column1], [table2, column2]]`` (``table1.column1
        = table2.column2``) at a version.

        Filters are nested ``{table: {column: value}}``; ``select_columns`` and ``suffixes``
        are best given as ``{table: ...}`` dicts. Positions are not rescaled on the client
        (as in caveclient). With ``return_df=False`` the JSON answer is returned (caveclient
        returns None).
        """
        filters = _filters(
            filter_in_dict,
            filter_out_dict,
            filter_equal_dict,
            filter_greater_dict,
            filter_less_dict,
            filter_greater_equal_dict,
            filter_less_equal_dict,
            filter_spatial_dict,
            filter_regex_dict,
        )
        version = self._resolve_version(materialization_version)
        datastack_name = self._datastack(datastack_name)
        if desired_resolution is None:
            desired_resolution = self.desired_resolution
        url, data, params, encoding = self._query_request(
            datastack_name,
            version,
            tables,
            select_columns,
            suffixes,
            filters,
            return_df,
            offset,
            limit,
            desired_resolution,
            random_sample=random_sample,
        )
        params["direct_sql_pandas"] = True
        response = self._post_query(url, data, params, encoding, stream=not return_df, log_warning=log_warning)
        if not return_df:
            return response.json()
        df = read_query_answer(response)
        if metadata:
            df.attrs.update(
                self._assemble_attributes(
                    tables,
                    suffixes=suffixes,
                    desired_resolution=_header_resolution(response, desired_resolution),
                    filters=_attrs_filters(filters),
                    select_columns=select_columns,
                    offset=offset,
                    limit=limit,
                    live_query=False,
                    timestamp=None,
                    materialization_version=version,
                    column_names=response.headers.get("column_names"),
                )
            )
        df.attrs.update(warning_attrs(response))
        return self._finish(df, split_positions)

    def map_filters(
        self, filters: Sequence[dict[str, Any] | None], timestamp: Any, timestamp_past: Any
    ) -> tuple[list[dict[str, Any] | None], dict[int, Any]]:
        """Translate root-id filters from ``timestamp`` to ``timestamp_past`` (see
        ``opencave.client.live.map_filters``); returns the filters and the future id map."""
        return live.map_filters(self.cg_client, filters, timestamp, timestamp_past)

    def _live_base_version(self, timestamp: datetime) -> tuple[int, datetime]:
        """The newest valid version frozen at or before ``timestamp``, with its time."""
        chosen: tuple[int, datetime] | None = None
        for record in sorted(self.get_versions_metadata(), key=lambda r: r.get("id", r["version"])):
            if timestamp >= record["time_stamp"]:
                chosen = (record["version"], record["time_stamp"])
        if chosen is None:
            raise ValueError(
                "The timestamp you passed is not recent enough for the materialization versions that are available"
            )
        return chosen

    @cached_query("live_query", _table, live=True)
    @check_version_compatibility(**QUERY_GATE)
    def live_query(
        self,
        table: str,
        timestamp: datetime,
        filter_in_dict: dict[str, Any] | None = None,
        filter_out_dict: dict[str, Any] | None = None,
        filter_equal_dict: dict[str, Any] | None = None,
        filter_greater_dict: dict[str, Any] | None = None,
        filter_less_dict: dict[str, Any] | None = None,
        filter_greater_equal_dict: dict[str, Any] | None = None,
        filter_less_equal_dict: dict[str, Any] | None = None,
        filter_spatial_dict: dict[str, Any] | None = None,
        filter_regex_dict: dict[str, Any] | None = None,
        select_columns: list[str] | dict[str, list[str]] | None = None,
        offset: int | None = None,
        limit: int | None = None,
        datastack_name: str | None = None,
        split_positions: bool = False,
        post_filter: bool = True,
        metadata: bool = True,
        merge_reference: bool = True,
        desired_resolution: Sequence[float] | None = None,
        random_sample: int | None = None,
        log_warning: bool = True,
    ) -> pd.DataFrame:
        """Rows of a table as of ``timestamp``, computed on the client from the newest version
        before it (see ``opencave.client.live``).

        Root-id filters are mapped to the version's time, the rows' root ids brought forward
        to ``timestamp``, and, with ``post_filter``, the original filters applied again.
        Needs a chunkedgraph client. A timestamp equal to a version's gives a plain query of
        that version. Root ids stay exact when filters mix numpy and Python integers
        (caveclient mixes them into float64 and loses their low bits).
        """
        filters = _filters(
            filter_in_dict,
            filter_out_dict,
            filter_equal_dict,
            filter_greater_dict,
            filter_less_dict,
            filter_greater_equal_dict,
            filter_less_equal_dict,
            filter_spatial_dict,
            filter_regex_dict,
        )
        timestamp = convert_timestamp(timestamp)
        cg_client = self.cg_client
        datastack_name = self._datastack(datastack_name)
        if desired_resolution is None:
            desired_resolution = self.desired_resolution
        version, version_time = self._live_base_version(timestamp)
        if timestamp == version_time:
            return self.query_table(
                table,
                **filters,
                select_columns=select_columns,
                offset=offset,
                limit=limit,
                datastack_name=datastack_name,
                split_positions=split_positions,
                materialization_version=version,
                metadata=metadata,
                merge_reference=merge_reference,
                desired_resolution=desired_resolution,
                return_df=True,
                random_sample=random_sample,
                log_warning=log_warning,
            )

        mapped, future_map = live.map_filters(
            cg_client, [filters[kind] for kind in ROOT_MAPPED_KINDS], timestamp, version_time
        )
        past_filters = {**filters, **dict(zip(ROOT_MAPPED_KINDS, mapped))}
        past_filters["filter_in_dict"], past_filters["filter_equal_dict"] = live.move_root_equalities(
            past_filters["filter_in_dict"], past_filters["filter_equal_dict"]
        )
        tables, suffixes = self._resolve_merge_reference(merge_reference, table, datastack_name, version)
        url, data, params, encoding = self._query_request(
            datastack_name,
            version,
            tables,
            select_columns,
            suffixes,
            _nest(past_filters, table),
            True,
            offset,
            limit,
            desired_resolution,
            random_sample=random_sample,
        )
        params["direct_sql_pandas"] = True
        response = self._post_query(url, data, params, encoding, log_warning=log_warning)
        df = read_query_answer(response)
        df = self._rescale(df, response, table, datastack_name, version, desired_resolution)
        if not split_positions:
            concatenate_position_columns(df, inplace=True)
        df = live.update_root_ids(cg_client, df, timestamp, future_map)
        if post_filter:
            df = live.post_filter(df, filters)
        if metadata:
            df.attrs.update(
                self._assemble_attributes(
                    table,
                    join_query=False,
                    filters=_attrs_filters(filters),
                    select_columns=select_columns,
                    offset=offset,
                    limit=limit,
                    live_query=True,
                    timestamp=string_format_timestamp(timestamp),
                    materialization_version=None,
                    desired_resolution=_header_resolution(response, desired_resolution),
                )
            )
        df.attrs.update(warning_attrs(response))
        return df

    @cached_query("live_live_query", _table, live=True)
    @check_version_compatibility(
        **QUERY_GATE, kwarg_use_api_constraints={"filter_regex_dict": ">=3.0.0", "allow_invalid_root_ids": ">=3.0.0"}
    )
    def live_live_query(
        self,
        table: str,
        timestamp: datetime,
        joins: list[list[str]] | None = None,
        filter_in_dict: dict[str, dict[str, Any]] | None = None,
        filter_out_dict: dict[str, dict[str, Any]] | None = None,
        filter_equal_dict: dict[str, dict[str, Any]] | None = None,
        filter_greater_dict: dict[str, dict[str, Any]] | None = None,
        filter_less_dict: dict[str, dict[str, Any]] | None = None,
        filter_greater_equal_dict: dict[str, dict[str, Any]] | None = None,
        filter_less_equal_dict: dict[str, dict[str, Any]] | None = None,
        filter_spatial_dict: dict[str, dict[str, Any]] | None = None,
        filter_regex_dict: dict[str, dict[str, Any]] | None = None,
        select_columns: dict[str, list[str]] | None = None,
        offset: int | None = None,
        limit: int | None = None,
        datastack_name: str | None = None,
        split_positions: bool = False,
        metadata: bool = True,
        suffixes: dict[str, str] | None = None,
        desired_resolution: Sequence[float] | None = None,
        allow_missing_lookups: bool = False,
        allow_invalid_root_ids: bool = False,
        random_sample: int | None = None,
        log_warning: bool = True,
    ) -> pd.DataFrame:
        """Rows of a table (optionally joined: ``joins=[[t1, c1, t2, c2], ...]``) as of
        ``timestamp``, computed by the server. Filters, ``select_columns`` and ``suffixes``
        are nested by table.

        ``allow_missing_lookups`` accepts rows whose supervoxels are not looked up yet;
        ``allow_invalid_root_ids`` drops filter ids that are not roots at ``timestamp``
        instead of failing. If the metadata cannot be loaded, an ``HTTPError`` says to pass
        ``metadata=False`` (caveclient fails with an AttributeError there).
        """
        logger.warning(
            "Deprecation: this method is to facilitate beta testing of this feature, "
            "it will likely get removed in future versions. "
        )
        filters = _filters(
            filter_in_dict,
            filter_out_dict,
            filter_equal_dict,
            filter_greater_dict,
            filter_less_dict,
            filter_greater_equal_dict,
            filter_less_equal_dict,
            filter_spatial_dict,
            filter_regex_dict,
        )
        timestamp = convert_timestamp(timestamp)
        datastack_name = self._datastack(datastack_name)
        params: dict[str, Any] = {
            "return_pyarrow": True,
            "arrow_format": True,
            "merge_reference": False,
            "allow_missing_lookups": allow_missing_lookups,
            "allow_invalid_root_ids": allow_invalid_root_ids,
            "direct_sql_pandas": True,
        }
        if random_sample:
            params["random_sample"] = random_sample
        if desired_resolution is None:
            desired_resolution = self.desired_resolution
        api_3 = self.api_version >= 3
        data = live_query_body(
            table,
            timestamp,
            filters,
            joins=joins,
            select_columns=select_columns,
            suffixes=suffixes,
            offset=offset,
            limit=limit,
            desired_resolution=desired_resolution if api_3 else None,
        )

        url = self._url("live_live_query", datastack_name=datastack_name)
        response = self._post_query(url, data, params, DEFAULT_COMPRESSION, log_warning=log_warning)
        df = read_query_answer(response)
        df = self._rescale(df, response, table, datastack_name, None, desired_resolution, server_rescaled=api_3)
        if not split_positions:
            concatenate_position_columns(df, inplace=True)
        if metadata:
            resolution = _header_resolution(response, desired_resolution) if api_3 else desired_resolution
            try:
                attrs = self._assemble_attributes(
                    table,
                    join_query=False,
                    filters=_attrs_filters(filters, include_regex=api_3),
                    select_columns=select_columns,
                    offset=offset,
                    limit=limit,
                    live_query=True,
                    timestamp=string_format_timestamp(timestamp),
                    materialization_version=None,
                    desired_resolution=resolution,
                )
            except HTTPError as err:
                raise HTTPError(
                    f"{err} Metadata could not be loaded, try with metadata=False if not needed", response=err.response
                ) from err
            df.attrs.update(attrs)
        df.attrs.update(warning_attrs(response))
        return df

    def synapse_query(
        self,
        pre_ids: int | Iterable[int] | np.ndarray | None = None,
        post_ids: int | Iterable[int] | np.ndarray | None = None,
        bounding_box: Sequence[Sequence[float]] | np.ndarray | None = None,
        bounding_box_column: str = "post_pt_position",
        timestamp: datetime | None = None,
        remove_autapses: bool = True,
        include_zeros: bool = True,
        limit: int | None = None,
        offset: int | None = None,
        split_positions: bool = False,
        desired_resolution: Sequence[float] | None = None,
        materialization_version: int | None = None,
        synapse_table: str | None = None,
        datastack_name: str | None = None,
        metadata: bool = True,
    ) -> pd.DataFrame:
        """Synapses from and/or onto given root ids (the datastack's synapse table by default).

        Autapses are dropped with ``remove_autapses``; ``include_zeros=False`` drops synapses
        with an unsegmented side. ``bounding_box`` limits ``bounding_box_column`` to a box.
        A string id counts as one id (caveclient splits it into characters).
        """
        synapse_table = synapse_table or self.synapse_table
        if synapse_table is None:
            raise ValueError("Must define synapse table in class init or pass to method")
        filter_in_dict: dict[str, Any] = {}
        filter_equal_dict: dict[str, Any] = {}
        filter_out_dict = {"pre_pt_root_id": [0], "post_pt_root_id": [0]} if not include_zeros else None
        for column, ids in (("pre_pt_root_id", pre_ids), ("post_pt_root_id", post_ids)):
            if ids is None:
                continue
            if isinstance(ids, (Iterable, np.ndarray)) and not isinstance(ids, (str, bytes)):
                filter_in_dict[column] = ids
            else:
                filter_equal_dict[column] = ids
        filter_spatial_dict = {bounding_box_column: bounding_box} if bounding_box is not None else None
        df = self.query_table(
            synapse_table,
            filter_in_dict=filter_in_dict,
            filter_out_dict=filter_out_dict,
            filter_equal_dict=filter_equal_dict,
            filter_spatial_dict=filter_spatial_dict,
            offset=offset,
            limit=limit,
            split_positions=split_positions,
            desired_resolution=desired_resolution,
            materialization_version=materialization_version,
            timestamp=timestamp,
            datastack_name=datastack_name,
            metadata=metadata,
            merge_reference=False,
        )
        if metadata:
            df.attrs["remove_autapses"] = remove_autapses
        if remove_autapses:
            return df.query("pre_pt_root_id!=post_pt_root_id")
        return df

    @cached_query("query_view", lambda call: call["view_name"])
    @check_version_compatibility(method_api_constraint=">=3.0.0", **QUERY_GATE)
    def query_view(
        self,
        view_name: str,
        filter_in_dict: dict[str, Any] | None = None,
        filter_out_dict: dict[str, Any] | None = None,
        filter_equal_dict: dict[str, Any] | None = None,
        filter_greater_dict: dict[str, Any] | None = None,
        filter_less_dict: dict[str, Any] | None = None,
        filter_greater_equal_dict: dict[str, Any] | None = None,
        filter_less_equal_dict: dict[str, Any] | None = None,
        filter_spatial_dict: dict[str, Any] | None = None,
        filter_regex_dict: dict[str, Any] | None = None,
        select_columns: list[str] | None = None,
        offset: int | None = None,
        limit: int | None = None,
        datastack_name: str | None = None,
        return_df: bool = True,
        split_positions: bool = False,
        materialization_version: int | None = None,
        metadata: bool = True,
        desired_resolution: Sequence[float] | None = None,
        get_counts: bool = False,
        random_sample: int | None = None,
    ) -> pd.DataFrame | Any:
        """Rows of a view at a version, filtered like ``query_table`` (API ≥ 3). Positions are
        converted by the server only."""
        filters = _filters(
            filter_in_dict,
            filter_out_dict,
            filter_equal_dict,
            filter_greater_dict,
            filter_less_dict,
            filter_greater_equal_dict,
            filter_less_equal_dict,
            filter_spatial_dict,
            filter_regex_dict,
        )
        if desired_resolution is None:
            desired_resolution = self.desired_resolution
        version = self._resolve_version(materialization_version)
        datastack_name = self._datastack(datastack_name)
        url, data, params, encoding = self._query_request(
            datastack_name,
            version,
            [view_name],
            select_columns,
            None,
            _nest(filters, view_name),
            return_df,
            offset,
            limit,
            desired_resolution,
            use_view=True,
            random_sample=random_sample,
        )
        if get_counts:
            params["count"] = True
        params["direct_sql_pandas"] = True
        response = self._post_query(url, data, params, encoding, stream=not return_df)
        if not return_df:
            return response.json()
        df = read_query_answer(response)
        if metadata:
            df.attrs.update(
                self._assemble_attributes(
                    [view_name],
                    is_view=True,
                    filters=_attrs_filters(filters),
                    select_columns=select_columns,
                    offset=offset,
                    limit=limit,
                    live_query=False,
                    timestamp=None,
                    materialization_version=version,
                    desired_resolution=_header_resolution(response, desired_resolution),
                    column_names=response.headers.get("column_names"),
                )
            )
        df.attrs.update(warning_attrs(response))
        return self._finish(df, split_positions)
