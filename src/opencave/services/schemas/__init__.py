"""EM annotation schema registry: what the EMAnnotationSchemas service (5.26.3) serves.

Every schema is declared as data (``catalog``); JSON Schemas (``jsonschema``), SQL table layouts
(``columns``) and the load-time ``valid`` rules (``rules``) are derived from those declarations.
"""

from opencave.services.schemas.columns import Column, TableKind, TableLayout, columns, layout
from opencave.services.schemas.jsonschema import all_json_schemas, json_schema, json_schemas, schema_to_json
from opencave.services.schemas.model import NO_DEFAULT, Field, FieldKind, SchemaDef
from opencave.services.schemas.registry import REGISTRY, apply_valid_rule, get_schema, schema_names

UPSTREAM_VERSION = "5.26.3"

__all__ = [
    "NO_DEFAULT",
    "REGISTRY",
    "UPSTREAM_VERSION",
    "Column",
    "Field",
    "FieldKind",
    "SchemaDef",
    "TableKind",
    "TableLayout",
    "all_json_schemas",
    "apply_valid_rule",
    "columns",
    "get_schema",
    "json_schema",
    "json_schemas",
    "layout",
    "schema_names",
    "schema_to_json",
]
