"""Schema service (``/schema``): the EM annotation schema registry as JSON Schema (public)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from opencave.errors import BadRequest
from opencave.server.params import Name, text
from opencave.services import schemas
from opencave.wire.endpoints import SCHEMA, route_path
from opencave.wire.versions import SCHEMA_API_VERSIONS

router = APIRouter(tags=["schema"])
V2 = SCHEMA.for_version(2)


@router.get(route_path(V2["get_api_versions"]))
def schema_api_versions() -> list[int]:
    return SCHEMA_API_VERSIONS


@router.get(route_path(V2["schema"]))
def schema_names() -> list[str]:
    return schemas.schema_names()


@router.get(route_path(V2["schema_definition"]))
def schema_definition(schema_type: Annotated[Name, Path(description="a schema name, e.g. synapse")]) -> dict:
    return schemas.json_schema(schema_type)


@router.post(route_path(V2["schema_definition_multi"]))
def schema_definitions(schema_names: Annotated[text(65_536), Query(description="comma-separated schema names")] = "") -> dict:
    names = [name.strip() for name in schema_names.split(",") if name.strip()]
    if not names:
        raise BadRequest("Name the schemas in the query string: ?schema_names=synapse,cell_type_local", code="missing_schema_names")
    return schemas.json_schemas(names)


@router.get(route_path(V2["schema_definition_all"]))
def all_schema_definitions() -> dict:
    return schemas.all_json_schemas()
