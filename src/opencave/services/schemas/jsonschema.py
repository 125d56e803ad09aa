"""Render schema classes as the draft-07 JSON Schema that upstream serves.

Upstream dumps each marshmallow schema with marshmallow-jsonschema 0.10.0; its quirks are part of
the wire format that CAVEclient reads, so they are reproduced on purpose:

* properties and ``required`` are sorted by name; ``required`` is omitted when empty;
* ids, positions and reference targets render as bare ``{"type": ...}`` (no title, no
  description) because upstream gives those field classes a fixed JSON type;
* plain ints render as ``{"type": "number", "format": "integer"}``;
* optional fields get ``[type, "null"]``; field metadata (``description``, ``index``, extras such
  as ``order``) is copied into the property verbatim; enums add an empty ``enumNames``;
* nested point classes are emitted once under ``definitions`` (before the main class) and
  referenced with ``{"type": "object", "$ref": ...}``.
"""

from __future__ import annotations

from typing import Any, Iterable

from opencave.services.schemas.model import Field, FieldKind, SchemaDef
from opencave.services.schemas.registry import get_schema, schema_names

DRAFT_07 = "http://json-schema.org/draft-07/schema#"

_FIXED_TYPES: dict[FieldKind, dict[str, Any]] = {
    FieldKind.BIGINT: {"type": "integer"},
    FieldKind.SEGMENTATION: {"type": "integer"},
    FieldKind.REFERENCE: {"type": "integer"},
    FieldKind.POSITION: {"type": "array"},
}

_VALUE_TYPES: dict[FieldKind, dict[str, Any]] = {
    FieldKind.STRING: {"type": "string"},
    FieldKind.INTEGER: {"type": "number", "format": "integer"},
    FieldKind.USER_ID: {"type": "number", "format": "integer"},
    FieldKind.FLOAT: {"type": "number", "format": "float"},
    FieldKind.BOOLEAN: {"type": "boolean"},
}


def _ref(class_name: str) -> str:
    return f"#/definitions/{class_name}"


def _metadata(field: Field) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if field.description is not None:
        meta["description"] = field.description
    if field.index:
        meta["index"] = True
    meta.update(field.extras)
    return meta


def _property(field: Field, definitions: dict[str, Any], outer: str) -> dict[str, Any]:
    if field.kind is FieldKind.POINT:
        assert field.point is not None
        if field.point.class_name not in definitions and field.point.class_name != outer:
            definitions[field.point.class_name] = _definition(field.point, definitions)
        prop: dict[str, Any] = {"type": "object", "$ref": _ref(field.point.class_name)}
        prop.update(_metadata(field))
    elif field.kind in _FIXED_TYPES:
        prop = dict(_FIXED_TYPES[field.kind])
    else:
        prop = {"title": field.name, **_VALUE_TYPES[field.kind]}
        if field.has_default:
            prop["default"] = field.default
        if field.nullable:
            prop["type"] = [prop["type"], "null"]
        prop.update(_metadata(field))
    if field.choices is not None:
        prop["enum"] = list(field.choices)
        prop["enumNames"] = []
    return prop


def _definition(schema: SchemaDef, definitions: dict[str, Any]) -> dict[str, Any]:
    """One class's entry under ``definitions``; registers nested point classes as a side effect."""
    ordered = sorted(schema.fields, key=lambda f: f.name)
    out: dict[str, Any] = {
        "type": "object",
        "properties": {f.name: _property(f, definitions, schema.class_name) for f in ordered},
    }
    required = [f.name for f in ordered if f.required]
    if required:
        out["required"] = required
    out["additionalProperties"] = schema.additional_properties
    return out


def schema_to_json(schema: SchemaDef) -> dict[str, Any]:
    """The full JSON Schema document for one schema class."""
    definitions: dict[str, Any] = {}
    main = _definition(schema, definitions)
    definitions[schema.class_name] = main
    return {"$schema": DRAFT_07, "definitions": definitions, "$ref": _ref(schema.class_name)}


def json_schema(name: str) -> dict[str, Any]:
    """``GET /schema/api/v2/type/{name}``; raises NotFound for unknown names."""
    return schema_to_json(get_schema(name))


def json_schemas(names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``POST /schema/api/v2/types``: ``{name: json schema}`` in the order asked (any unknown name
    raises NotFound, as upstream aborts the whole request)."""
    return {name: json_schema(name) for name in names}


def all_json_schemas() -> dict[str, dict[str, Any]]:
    """``GET /schema/api/v2/types_all``: every registered schema, in registry order."""
    return json_schemas(schema_names())
