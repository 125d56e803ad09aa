"""``client.materialize.tables`` and ``.views``: one query builder per table or view, whose
keyword arguments are the table's columns (caveclient's ``tools.table_manager``).

``client.materialize.tables.synapses(pre_pt_root_id=[1, 2], size={">": 100}).query()``
builds the filters from the keywords:

* a scalar (a string counts as one) → ``filter_equal_dict``;
* a list, array or other sized value → ``filter_in_dict`` (an empty one is dropped);
* a dict with ``"<"``, ``">"``, ``"<="``, ``">="`` keys → the inequality filters (numeric
  columns only, else ``InvalidInequalityException``);
* ``<point>_position_bbox=[[x0, y0, z0], [x1, y1, z1]]`` → ``filter_spatial_dict``.

A reference table (annotations of another table's annotations) is joined to its target: the
target's columns are keywords too, and a name both tables have gets ``_ref`` on the
reference side. Filters are kept in two forms, ``filter_kwargs_live`` (nested by table) and
``filter_kwargs_mat`` (flat for one table), as in caveclient.

Differences from caveclient, all bug fixes: every renamed keyword maps back to its column
(caveclient keeps only one rename per table, and none for suffixed spatial fields); numeric
columns of a reference table keep their numeric flag when suffixed; a reference table queried
with a timestamp works (caveclient raises TypeError); caches belong to the manager, so two
datastacks with equally named tables do not mix; view spatial keywords are ``<column>_bbox``
(caveclient names them ``pt_position_position_bbox`` and filters on a column that does not
exist); ``ViewManager(client)`` fetches the views itself (caveclient raises AttributeError).
"""

from __future__ import annotations

import datetime
import html
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import attrs
from requests import HTTPError

logger = logging.getLogger(__name__)

# JSON schema column types that can be filtered on.
ALLOW_COLUMN_TYPES = ["integer", "boolean", "string", "float"]
NUMERIC_COLUMN_TYPES = ["integer", "float"]
SPATIAL_POINT_TYPES = ["SpatialPoint"]

BOUND_POINT_REF = "#/definitions/BoundSpatialPoint"
UNBOUND_POINT_REF = "#/definitions/SpatialPoint"
REFERENCE_SUFFIXES = ("", "_ref")

INEQUALITIES = {
    "<": "filter_less_dict",
    ">": "filter_greater_dict",
    "<=": "filter_less_equal_dict",
    ">=": "filter_greater_equal_dict",
}
# The order of the keys of ``filter_kwargs_live`` / ``filter_kwargs_mat``.
FILTER_KWARGS = (
    "filter_equal_dict",
    "filter_in_dict",
    "filter_spatial_dict",
    "filter_greater_dict",
    "filter_less_dict",
    "filter_greater_equal_dict",
    "filter_less_equal_dict",
)


class InvalidInequalityException(Exception):
    """An inequality filter was given for a column that is not numeric."""


@dataclass(frozen=True)
class FieldSpec:
    """One keyword of a query builder: which table and column it filters."""

    table: str
    column: str
    numeric: bool = False
    bbox: bool = False


@dataclass
class SchemaColumns:
    """The filterable columns of an annotation schema."""

    bound_points: list[str] = field(default_factory=list)
    values: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    unbound_points: list[str] = field(default_factory=list)


def schema_columns(schema: Mapping[str, Any]) -> SchemaColumns:
    """Columns of a JSON schema's main class: points by ``$ref``, others by ``format`` or
    ``type`` (``string``/``boolean`` values, ``integer``/``float`` numeric); ``id`` always."""
    main = schema["$ref"].split("/")[-1]
    columns = SchemaColumns(values=["id"])
    for name, prop in schema["definitions"][main]["properties"].items():
        ref = prop.get("$ref", "")
        if ref == BOUND_POINT_REF:
            columns.bound_points.append(name)
        elif ref == UNBOUND_POINT_REF:
            columns.unbound_points.append(name)
        elif name != "id":
            kind = prop.get("format", prop.get("type"))
            if kind in NUMERIC_COLUMN_TYPES:
                columns.numeric.append(name)
            elif kind in ALLOW_COLUMN_TYPES:
                columns.values.append(name)
    return columns


def _combine(base: str, base_names: list[str], ref: str | None, ref_names: list[str]) -> list[tuple[str, str, str]]:
    """``(keyword, table, column)`` for the base then the reference columns; a name in both
    gets the table's suffix."""
    combined = []
    for table, names, others, suffix in (
        (base, base_names, ref_names, REFERENCE_SUFFIXES[0]),
        (ref, ref_names, base_names, REFERENCE_SUFFIXES[1]),
    ):
        for name in names:
            combined.append((f"{name}{suffix}" if name in others else name, table, name))
    return combined


def table_fields(
    base: str, base_columns: SchemaColumns, ref: str | None, ref_columns: SchemaColumns
) -> dict[str, FieldSpec]:
    """The keywords of a table (or of a reference table joined to its ``base`` target), in
    caveclient's order: ``<pt>_root_id``, value columns, ``<pt>_position_bbox``."""
    fields: dict[str, FieldSpec] = {}
    points = _combine(base, base_columns.bound_points, ref, ref_columns.bound_points)
    for keyword, table, column in points:
        fields[f"{keyword}_root_id"] = FieldSpec(table, f"{column}_root_id")
    numeric = {base: set(base_columns.numeric), ref: set(ref_columns.numeric)}
    values = _combine(base, base_columns.values + base_columns.numeric, ref, ref_columns.values + ref_columns.numeric)
    for keyword, table, column in values:
        fields[keyword] = FieldSpec(table, column, numeric=column in numeric[table])
    unbound = _combine(base, base_columns.unbound_points, ref, ref_columns.unbound_points)
    for keyword, table, column in points + unbound:
        fields[f"{keyword}_position_bbox"] = FieldSpec(table, f"{column}_position", bbox=True)
    return fields


def view_fields(view: str, schema: Mapping[str, Mapping[str, Any]]) -> dict[str, FieldSpec]:
    """The keywords of a view: its value columns, then ``<column>_bbox`` for point columns."""
    fields = {
        name: FieldSpec(view, name, numeric=column["type"] in NUMERIC_COLUMN_TYPES)
        for name, column in schema.items()
        if column["type"] in ALLOW_COLUMN_TYPES
    }
    for name, column in schema.items():
        if column["type"] in SPATIAL_POINT_TYPES:
            fields[f"{name}_bbox"] = FieldSpec(view, name, bbox=True)
    return fields


def _is_list_like(value: Any) -> bool:
    return not isinstance(value, str) and hasattr(value, "__len__")


def build_filters(values: Mapping[str, Any], specs: Mapping[str, FieldSpec]) -> dict[str, dict[str, Any]]:
    """``{filter kwarg: {table: {column: value}}}`` from keyword values (None = not given)."""
    tables = list(dict.fromkeys(spec.table for spec in specs.values()))
    nested: dict[str, dict[str, dict[str, Any]]] = {kind: {t: {} for t in tables} for kind in FILTER_KWARGS}
    invalid = []
    for name, value in values.items():
        if value is None:
            continue
        spec = specs[name]
        if spec.bbox:
            nested["filter_spatial_dict"][spec.table][spec.column] = value
        elif isinstance(value, dict):
            operators = [op for op in INEQUALITIES if op in value]
            if operators and not spec.numeric:
                invalid.append(name)
            for op in operators:
                nested[INEQUALITIES[op]][spec.table][spec.column] = value[op]
        elif _is_list_like(value):
            if len(value) > 0:
                nested["filter_in_dict"][spec.table][spec.column] = value
        else:
            nested["filter_equal_dict"][spec.table][spec.column] = value
    if invalid:
        raise InvalidInequalityException(f"Cannot use inequality for non-numeric fields: {invalid}")
    return {kind: {t: cols for t, cols in by_table.items() if cols} for kind, by_table in nested.items()}


class _QueryFilterBase:
    """Behaviour shared by the generated query builders; subclasses set ``_specs``,
    ``_base_table``, ``_reference_table`` and ``_client`` (the CAVEclient)."""

    _specs: ClassVar[dict[str, FieldSpec]] = {}
    _base_table: ClassVar[str] = ""
    _reference_table: ClassVar[str | None] = None
    _client: ClassVar[Any] = None

    def __attrs_post_init__(self) -> None:
        values = {name: getattr(self, name) for name in self._specs}
        nested = build_filters(values, self._specs)
        tables = list(dict.fromkeys(spec.table for spec in self._specs.values()))
        self.filter_kwargs_live = {kind: nested[kind] for kind in FILTER_KWARGS if nested[kind]}
        if len(tables) == 2:
            self.filter_kwargs_mat = self.filter_kwargs_live
        else:
            self.filter_kwargs_mat = {kind: by_table[tables[0]] for kind, by_table in self.filter_kwargs_live.items()}
        if self._reference_table is None:
            self.joins_kwargs: dict[str, Any] = {"joins": None}
            self.basic_join: list[list[str]] | None = None
        else:
            self.joins_kwargs = {"joins": [[self._reference_table, "target_id", self._base_table, "id"]]}
            self.basic_join = [[self._reference_table, "target_id"], [self._base_table, "id"]]


class _TableQuery(_QueryFilterBase):
    def query(
        self,
        select_columns: list[str] | None = None,
        offset: int | None = None,
        limit: int | None = None,
        split_positions: bool = False,
        materialization_version: int | None = None,
        timestamp: datetime.datetime | None = None,
        metadata: bool = True,
        desired_resolution: list[float] | None = None,
        get_counts: bool = False,
        log_warning: bool = True,
        random_sample: int | None = None,
    ) -> Any:
        """Query the table with these filters: at a version, or as of ``timestamp``.

        A reference table is joined to its target (its own colliding columns get ``_ref``).
        """
        materialize = self._client.materialize
        if self._reference_table is None:
            return materialize.query_table(
                self._base_table,
                select_columns=select_columns,
                offset=offset,
                limit=limit,
                split_positions=split_positions,
                materialization_version=materialization_version,
                desired_resolution=desired_resolution,
                timestamp=timestamp,
                get_counts=get_counts,
                metadata=metadata,
                log_warning=log_warning,
                random_sample=random_sample,
                **self.filter_kwargs_mat,
            )
        if timestamp is None:
            return materialize.join_query(
                tables=self.basic_join,
                select_columns=select_columns,
                offset=offset,
                limit=limit,
                split_positions=split_positions,
                materialization_version=materialization_version,
                desired_resolution=desired_resolution,
                suffixes={self._reference_table: "_ref", self._base_table: ""},
                metadata=metadata,
                log_warning=log_warning,
                random_sample=random_sample,
                **self.filter_kwargs_mat,
            )
        return self.live_query(
            timestamp=timestamp,
            offset=offset,
            limit=limit,
            split_positions=split_positions,
            metadata=metadata,
            desired_resolution=desired_resolution,
            log_warning=log_warning,
            random_sample=random_sample,
        )

    def live_query(
        self,
        timestamp: datetime.datetime,
        offset: int | None = None,
        limit: int | None = None,
        split_positions: bool = False,
        metadata: bool = True,
        desired_resolution: list[float] | None = None,
        allow_missing_lookups: bool = False,
        log_warning: bool = True,
        random_sample: int | None = None,
    ) -> Any:
        """Query the table with these filters as of ``timestamp``, on the server
        (``live_live_query``). ``allow_missing_lookups`` accepts rows still being ingested,
        which makes answers depend on when they are asked."""
        extra: dict[str, Any] = {}
        table = self._base_table
        if self._reference_table is not None:
            table = self._reference_table
            extra = {"suffixes": {self._reference_table: "_ref", self._base_table: ""}, **self.joins_kwargs}
        return self._client.materialize.live_live_query(
            table=table,
            timestamp=timestamp,
            offset=offset,
            limit=limit,
            split_positions=split_positions,
            desired_resolution=desired_resolution,
            allow_missing_lookups=allow_missing_lookups,
            metadata=metadata,
            log_warning=log_warning,
            random_sample=random_sample,
            **self.filter_kwargs_live,
            **extra,
        )


class _ViewQuery(_QueryFilterBase):
    def query(
        self,
        select_columns: list[str] | None = None,
        offset: int | None = None,
        limit: int | None = None,
        split_positions: bool = False,
        materialization_version: int | None = None,
        metadata: bool = True,
        desired_resolution: list[float] | None = None,
        get_counts: bool = False,
        log_warning: bool = True,
        random_sample: int | None = None,
    ) -> Any:
        """Query the view with these filters at a version."""
        return self._client.materialize.query_view(
            self._base_table,
            metadata=metadata,
            desired_resolution=desired_resolution,
            materialization_version=materialization_version,
            split_positions=split_positions,
            limit=limit,
            offset=offset,
            select_columns=select_columns,
            get_counts=get_counts,
            random_sample=random_sample,
            **self.filter_kwargs_mat,
        )


def make_query_class(
    name: str,
    specs: dict[str, FieldSpec],
    base_table: str,
    reference_table: str | None,
    client: Any,
    description: str | None,
    is_view: bool = False,
) -> type:
    """An attrs class named ``name`` whose keyword arguments (all default None) are ``specs``."""
    fields = {
        keyword: attrs.field(
            default=None,
            metadata={
                "table": spec.table,
                "original_name": spec.column,
                "is_numeric": spec.numeric,
                "is_bbox": spec.bbox,
            },
        )
        for keyword, spec in specs.items()
    }
    cls = attrs.make_class(name, fields, bases=(_ViewQuery if is_view else _TableQuery,))
    cls._specs = specs
    cls._base_table = base_table
    cls._reference_table = reference_table
    cls._client = client
    cls.__doc__ = description
    cls.fields = list(specs)
    cls.numeric_fields = [k for k, spec in specs.items() if spec.numeric]
    cls.spatial_fields = [k for k, spec in specs.items() if spec.bbox]
    cls.get_all = cls().query
    if not is_view:
        cls.get_all_live = cls().live_query
    return cls


class BaseManager:
    """A collection of query builders reachable as attributes (``mgr.name``) or items."""

    _tables: list[str]
    _table_metadata: dict[str, dict[str, Any]]

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in self._tables

    def __len__(self) -> int:
        return len(self._tables)

    def __repr__(self) -> str:
        return str(self._tables)

    def _repr_html_(self) -> str:
        """One collapsible entry per table with its description, for notebooks."""
        entries = "".join(
            f"<details><p>{html.escape(str(self._table_metadata[name].get('description') or ''))}</p>"
            f"<summary>{html.escape(name)}</summary></details>"
            for name in self._tables
        )
        return f"<html><head></head><body>{entries}</body></html>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> tuple[dict[str, str], dict]:
        return {"text/html": self._repr_html_()}, {}

    @property
    def table_names(self) -> list[str]:
        """The names, sorted."""
        return self._tables

    def find(self, search_str: str) -> list[str]:
        """Names containing ``search_str``, ignoring case."""
        return [name for name in self._tables if search_str.lower() in name.lower()]


def _table_key(metadata: Mapping[str, Any]) -> str:
    """A table's name: segmentation tables are reported under their annotation table's name."""
    return metadata.get("annotation_table") or metadata["table_name"]


class TableManager(BaseManager):
    """Query builders for the tables of a version (``client.materialize.tables``).

    ``metadata`` is ``materialize.get_tables_metadata()``'s answer and ``schema`` a
    ``{schema name: JSON schema}`` dict; missing ones are fetched through ``client``.
    A table whose schema or target cannot be found is left out with a logged warning.
    """

    def __init__(
        self, client: Any, metadata: list[dict[str, Any]] | None = None, schema: dict[str, dict[str, Any]] | None = None
    ):
        self._client = client
        if metadata is None:
            metadata = client.materialize.get_tables_metadata()
        self._table_metadata = {_table_key(m): self._with_schema(m) for m in metadata}
        self._schemas: dict[str, dict[str, Any]] = dict(schema or {})
        self._columns: dict[str, SchemaColumns] = {}
        self._tables = []
        for name in sorted(self._table_metadata):
            try:
                cls = self._make_class(name)
            except (KeyError, ValueError, HTTPError) as err:
                logger.warning("Table %s is left out of the tables interface: %r", name, err)
                continue
            setattr(self, name, cls)
            self._tables.append(name)

    @staticmethod
    def _with_schema(metadata: dict[str, Any]) -> dict[str, Any]:
        metadata = dict(metadata)
        metadata.setdefault("schema", metadata.get("schema_type"))
        return metadata

    def _metadata(self, table: str) -> dict[str, Any]:
        if table not in self._table_metadata:
            self._table_metadata[table] = self._with_schema(self._client.materialize.get_table_metadata(table))
        return self._table_metadata[table]

    def _schema_columns(self, schema_name: str) -> SchemaColumns:
        if schema_name not in self._columns:
            if self._schemas.get(schema_name) is None:
                self._schemas[schema_name] = self._client.schema.schema_definition(schema_name)
            self._columns[schema_name] = schema_columns(self._schemas[schema_name])
        return self._columns[schema_name]

    def _make_class(self, name: str) -> type:
        metadata = self._table_metadata[name]
        target = metadata.get("reference_table") or None
        if target is None:
            specs = table_fields(name, self._schema_columns(metadata["schema"]), None, SchemaColumns())
            base, reference = name, None
        else:
            target_schema = self._metadata(target)["schema"]
            specs = table_fields(
                target, self._schema_columns(target_schema), name, self._schema_columns(metadata["schema"])
            )
            base, reference = target, name
        return make_query_class(name, specs, base, reference, self._client, metadata.get("description"))


class ViewManager(BaseManager):
    """Query builders for the views of a version (``client.materialize.views``).

    ``view_metadata`` is ``materialize.get_views()``'s answer and ``view_schema``
    ``materialize.get_view_schemas()``'s; both are fetched through ``client`` if missing.
    """

    def __init__(
        self,
        client: Any,
        view_metadata: dict[str, dict[str, Any]] | None = None,
        view_schema: dict[str, dict[str, Any]] | None = None,
    ):
        self._client = client
        if view_metadata is None or view_schema is None:
            view_metadata = client.materialize.get_views()
            view_schema = client.materialize.get_view_schemas()
        self._table_metadata = dict(view_metadata)
        self._tables = sorted(self._table_metadata)
        for name in self._tables:
            specs = view_fields(name, view_schema[name])
            description = self._table_metadata[name].get("description", "")
            setattr(self, name, make_query_class(name, specs, name, None, client, description, is_view=True))
