"""Short constructors for schema fields, so the catalog reads like upstream's class bodies."""

from __future__ import annotations

from typing import Any

from opencave.services.schemas.model import NO_DEFAULT, Field, FieldKind, SchemaDef


def _field(
    kind: FieldKind,
    name: str,
    description: str | None,
    *,
    required: bool = False,
    default: Any = NO_DEFAULT,
    choices: tuple[Any, ...] | None = None,
    index: bool = False,
    extras: dict[str, Any] | None = None,
) -> Field:
    return Field(
        name=name,
        kind=kind,
        description=description,
        required=required,
        default=default,
        choices=tuple(choices) if choices is not None else None,
        index=index,
        extras=tuple((extras or {}).items()),
    )


def string(name: str, description: str | None = None, **kw: Any) -> Field:
    return _field(FieldKind.STRING, name, description, **kw)


def integer(name: str, description: str | None = None, **kw: Any) -> Field:
    return _field(FieldKind.INTEGER, name, description, **kw)


def floating(name: str, description: str | None = None, **kw: Any) -> Field:
    return _field(FieldKind.FLOAT, name, description, **kw)


def boolean(name: str, description: str | None = None, **kw: Any) -> Field:
    return _field(FieldKind.BOOLEAN, name, description, **kw)


def bigint(name: str, description: str | None = None, **kw: Any) -> Field:
    """A 64-bit number that is *not* linked to the segmentation (upstream ``NumericField``)."""
    return _field(FieldKind.BIGINT, name, description, **kw)


def user_id(name: str = "user_id", description: str | None = None, **kw: Any) -> Field:
    """The annotating user's id (upstream ``AutoUserIdField``; clients still send it)."""
    return _field(FieldKind.USER_ID, name, description, **kw)


def reference(name: str = "target_id", description: str | None = None, **kw: Any) -> Field:
    return _field(FieldKind.REFERENCE, name, description, **kw)


def segmentation(name: str, description: str | None = None, **kw: Any) -> Field:
    return _field(FieldKind.SEGMENTATION, name, description, **kw)


def position(name: str = "position", description: str | None = None, **kw: Any) -> Field:
    return _field(FieldKind.POSITION, name, description, **kw)


def point(
    name: str,
    schema: SchemaDef,
    description: str | None = None,
    *,
    required: bool = False,
    extras: dict[str, Any] | None = None,
) -> Field:
    """A nested point object of the given point schema (flattened to ``<name>_<sub>`` columns)."""
    return Field(
        name=name,
        kind=FieldKind.POINT,
        description=description,
        required=required,
        point=schema,
        extras=tuple((extras or {}).items()),
    )
