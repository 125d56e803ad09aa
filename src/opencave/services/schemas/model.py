"""Declarative model of an EM annotation schema: typed fields grouped into named schema classes.

Upstream defines schemas as marshmallow classes; opencave describes the same facts as plain frozen
data so that the JSON Schema (``jsonschema``), the SQL column layout (``columns``) and payload rules
can all be derived from one definition without marshmallow.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from opencave.services.schemas.rules import ValidRule


class FieldKind(str, Enum):
    """What a field stores; decides both its JSON-Schema rendering and its SQL column type."""

    STRING = "string"  # free or enumerated text -> VARCHAR
    INTEGER = "integer"  # plain int -> INTEGER
    FLOAT = "float"  # double precision -> FLOAT
    BOOLEAN = "boolean"  # -> BOOLEAN
    BIGINT = "bigint"  # 64-bit id not linked to the segmentation (e.g. valid_id) -> BIGINT
    USER_ID = "user_id"  # id of the annotating user (upstream AutoUserIdField) -> BIGINT
    REFERENCE = "reference"  # target_id: foreign key to another annotation table -> BIGINT
    SEGMENTATION = "segmentation"  # supervoxel_id / root_id: lives in the segmentation table
    POSITION = "position"  # [x, y, z] voxel position -> PostGIS POINTZ
    POINT = "point"  # nested point object (SpatialPoint family), flattened into columns


class _NoDefault:
    """Sentinel type: the field declares no serialisation default (``None`` is a real default)."""

    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()


@dataclass(frozen=True)
class Field:
    """One named field of a schema class.

    ``nullable`` follows upstream: every optional field also accepts null. ``extras`` carries
    field metadata that upstream leaks verbatim into its JSON Schema (``order`` on synapse points,
    the misspelt ``desription`` key of ``ReferenceTagFloat.value``); it has no other meaning.
    """

    name: str
    kind: FieldKind
    description: str | None = None
    required: bool = False
    default: Any = NO_DEFAULT
    choices: tuple[Any, ...] | None = None
    index: bool = False
    point: SchemaDef | None = None
    extras: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if (self.kind is FieldKind.POINT) != (self.point is not None):
            raise ValueError(f"field {self.name!r}: a point schema is required exactly for POINT fields")

    @property
    def nullable(self) -> bool:
        return not self.required

    @property
    def has_default(self) -> bool:
        return self.default is not NO_DEFAULT


@dataclass(frozen=True)
class SchemaDef:
    """A schema class: its upstream class name (the JSON-Schema definition key) and ordered fields.

    Field order is upstream's declaration order (inherited fields first), which fixes the column
    order of the generated tables. ``additional_properties`` is true for annotation schemas (unknown
    keys are tolerated) and false for point objects.
    """

    class_name: str
    fields: tuple[Field, ...]
    doc: str = ""
    additional_properties: bool = True
    valid_rule: ValidRule | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(names) != len(set(names)):
            raise ValueError(f"{self.class_name}: duplicate field names {names}")

    def get_field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.class_name} has no field {name!r}")

    def extend(
        self,
        class_name: str,
        *fields: Field,
        doc: str = "",
        valid_rule: ValidRule | None = None,
    ) -> SchemaDef:
        """Derive a subclass the way marshmallow inheritance does.

        A redefined field keeps its inherited position but takes the new definition; new fields
        are appended. Payload rules are inherited unless replaced.
        """
        merged = {f.name: f for f in self.fields}
        for f in fields:
            merged[f.name] = f
        return replace(
            self,
            class_name=class_name,
            fields=tuple(merged.values()),
            doc=doc,
            valid_rule=valid_rule if valid_rule is not None else self.valid_rule,
        )
