"""Schema-level rules that set an annotation's ``valid`` flag when a payload is loaded.

Upstream implements these as marshmallow ``post_load`` hooks; they overwrite whatever ``valid``
the client sent, so the annotation engine must apply them to stay compatible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class ValidRule(Protocol):
    def apply(self, item: dict[str, Any]) -> dict[str, Any]:
        """Return ``item`` with ``valid`` set (or removed) according to the rule."""
        ...


@dataclass(frozen=True)
class DistinctRoots:
    """Synapse/contact rule: valid iff the two sides have different root ids.

    Only decided when the first point carries a root id; otherwise ``valid`` is dropped so the
    stored value falls back to the column default.
    """

    first: str
    second: str

    def apply(self, item: dict[str, Any]) -> dict[str, Any]:
        out = dict(item)
        first_root = (out.get(self.first) or {}).get("root_id")
        if first_root is not None:
            out["valid"] = first_root != (out.get(self.second) or {}).get("root_id")
        else:
            out.pop("valid", None)
        return out


@dataclass(frozen=True)
class AllowedValues:
    """Categorical rule: valid iff ``field`` holds one of ``values`` (other values are still stored)."""

    field: str
    values: tuple[str, ...]

    def apply(self, item: dict[str, Any]) -> dict[str, Any]:
        return {**item, "valid": item.get(self.field) in self.values}


@dataclass(frozen=True)
class ClassificationSystems:
    """Cell-type rule: for a known classification system the cell type must be one of its types;
    cell types of unknown systems are always valid."""

    systems: tuple[tuple[str, tuple[str, ...]], ...]
    system_field: str = "classification_system"
    value_field: str = "cell_type"

    def allowed(self, system: str) -> tuple[str, ...] | None:
        return dict(self.systems).get(system)

    def apply(self, item: dict[str, Any]) -> dict[str, Any]:
        allowed = self.allowed(item.get(self.system_field))
        return {**item, "valid": True if allowed is None else item.get(self.value_field) in allowed}
