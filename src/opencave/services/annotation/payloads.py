"""Nested annotation payloads <-> flat rows, checked against the schema with errors per row.

Clients send annotations in the schema's nested form (``{"pre_pt": {"position": [x, y, z]}}``);
rows are stored flat (``pre_pt_position``). Every row of a request is checked before anything is
written, and all problems are reported together, keyed by row index, so a client can fix a
whole batch in one go.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from opencave.errors import OpencaveError
from opencave.services.schemas import FieldKind, SchemaDef, apply_valid_rule, get_schema

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
TRUE_STRINGS = {"true", "t", "yes", "y", "1"}
FALSE_STRINGS = {"false", "f", "no", "n", "0"}
MAX_LISTED = 8  # problems quoted in the message; ``data`` holds them all (up to MAX_ROWS_REPORTED rows)
MAX_ROWS_REPORTED = 200
MISSING = "Missing data for required field."
MAX_EXPLICIT_ID = 2**62  # leaves the sequence room to grow past any explicit id


class AnnotationsInvalid(OpencaveError):
    """Rows that do not fit the table (422): ``data["errors"]`` maps row index -> field -> problem."""

    status, default_code = 422, "invalid_annotations"


RowErrors = dict[int, dict[str, str]]


def raise_row_errors(errors: RowErrors, total: int, *, what: str = "annotations", code: str | None = None) -> None:
    """Raise one 422 describing every failing row (nothing has been written)."""
    if not errors:
        return
    rows = sorted(errors)
    listed = []
    for row in rows:
        for path, problem in errors[row].items():
            if len(listed) < MAX_LISTED:
                listed.append(f"row {row}: {path}: {problem}" if path else f"row {row}: {problem}")
    message = (
        f"{len(rows)} of {total} {what} cannot be stored, so nothing was written; fix these rows and send "
        f"the batch again. " + "; ".join(listed) + (" …" if sum(len(e) for e in errors.values()) > len(listed) else "")
    )
    reported = {str(r): errors[r] for r in rows[:MAX_ROWS_REPORTED]}
    raise AnnotationsInvalid(message, code=code, data={"errors": reported, "failed_rows": len(rows), "total_rows": total})


@dataclass
class ParsedRow:
    """A checked annotation: flat values (positions as (x, y, z) tuples or None) and its ``valid``."""

    values: dict[str, Any]
    valid: bool
    id: int | None = None


def text_problem(value: str) -> str | None:
    """Why a string cannot be stored (PostgreSQL holds neither NUL nor lone surrogates), or None."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode; it holds a lone surrogate (an unpaired \\ud800-\\udfff escape)"
    return None


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _as_int(value: Any, bounds: tuple[int, int]) -> tuple[int | None, str | None]:
    if isinstance(value, bool):
        return None, "must be an integer, not a boolean"
    if isinstance(value, float):
        if not value.is_integer():
            return None, f"must be an integer; got {value!r}"
        value = int(value)
    elif isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            return None, f"must be an integer; got {value!r}"
    if not isinstance(value, int):
        return None, f"must be an integer; got {type(value).__name__}"
    if not bounds[0] <= value <= bounds[1]:
        return None, f"{value} is out of range ({bounds[0]}..{bounds[1]})"
    return value, None


def _as_float(value: Any) -> tuple[float | None, str | None]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"must be a number; got {type(value).__name__}"
    value = float(value)
    if not math.isfinite(value):
        return None, f"must be a finite number; got {value}"
    return value, None


def _as_bool(value: Any) -> tuple[bool | None, str | None]:
    if isinstance(value, bool):
        return value, None
    if isinstance(value, int) and value in (0, 1):
        return bool(value), None
    if isinstance(value, str) and value.strip().lower() in TRUE_STRINGS | FALSE_STRINGS:
        return value.strip().lower() in TRUE_STRINGS, None
    return None, f"must be true or false; got {value!r}"


# Answers give positions as 32-bit voxel coordinates, so stored ones must fit in them.
POSITION_LIMIT = 2**31 - 1


def _as_position(value: Any) -> tuple[tuple[float, float, float] | None, str | None]:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        return None, f"must be a list of three numbers [x, y, z] in the table's voxels; got {value!r}"
    out = []
    for v in value:
        number, problem = _as_float(v)
        if problem:
            return None, f"must be a list of three finite numbers [x, y, z]; got {value!r}"
        if abs(number) > POSITION_LIMIT:  # type: ignore[arg-type]
            return None, f"coordinates must lie within ±{POSITION_LIMIT} voxels; got {value!r}"
        out.append(number)
    return (out[0], out[1], out[2]), None


def convert(kind: FieldKind, value: Any) -> tuple[Any, str | None]:
    """A payload value as stored for a field kind, or a problem description."""
    if kind is FieldKind.STRING:
        if not isinstance(value, str):
            return None, f"must be a string; got {type(value).__name__}"
        return value, text_problem(value)
    if kind is FieldKind.INTEGER:
        return _as_int(value, INT32)
    if kind in (FieldKind.BIGINT, FieldKind.USER_ID, FieldKind.REFERENCE):
        return _as_int(value, INT64)
    if kind is FieldKind.FLOAT:
        return _as_float(value)
    if kind is FieldKind.BOOLEAN:
        return _as_bool(value)
    if kind is FieldKind.POSITION:
        return _as_position(value)
    raise ValueError(f"no conversion for {kind}")


class PayloadParser:
    """Checks and flattens the payloads of one schema."""

    def __init__(self, schema_name: str):
        self.schema_name = schema_name
        self.schema: SchemaDef = get_schema(schema_name)

    def parse(self, item: Any, *, id_required: bool = False) -> tuple[ParsedRow | None, dict[str, str]]:
        """(row, {}) for a good payload, (None, {field path: problem}) otherwise."""
        errors: dict[str, str] = {}
        if not isinstance(item, dict):
            return None, {"": f"each annotation must be a JSON object; got {type(item).__name__}"}
        row_id = None
        if item.get("id") is not None:
            row_id, problem = _as_int(item["id"], (1, MAX_EXPLICIT_ID))
            if problem:
                errors["id"] = problem
        elif id_required:
            errors["id"] = "an update must name the annotation it replaces with 'id'"
        values: dict[str, Any] = {}
        self._walk(self.schema, item, "", "", values, errors)
        if errors:
            return None, errors
        return ParsedRow(values, self._valid(item), row_id), {}

    def _valid(self, item: dict) -> bool:
        """Rows are valid unless the schema's own rule (e.g. an allowed cell type) says otherwise."""
        if self.schema.valid_rule is None:
            return True
        decided = apply_valid_rule(self.schema_name, item).get("valid")
        return True if decided is None else bool(decided)

    def _walk(self, schema: SchemaDef, payload: dict, prefix: str, path: str, out: dict, errors: dict) -> None:
        for field in schema.fields:
            column, where = prefix + field.name, path + field.name
            if field.kind is FieldKind.SEGMENTATION or (not prefix and field.name == "valid"):
                continue  # supervoxels are looked up, roots derived, ``valid`` decided by the server
            value = payload.get(field.name)
            if _is_missing(value):
                if field.required:
                    errors[where] = MISSING
                elif field.kind is FieldKind.POINT:
                    self._null_point(field.point, column + "_", out)  # type: ignore[arg-type]
                else:
                    out[column] = None
                continue
            if field.kind is FieldKind.POINT:
                if not isinstance(value, dict):
                    errors[where] = f'must be an object like {{"position": [x, y, z]}}; got {value!r}'
                else:
                    self._walk(field.point, value, column + "_", where + ".", out, errors)  # type: ignore[arg-type]
                continue
            converted, problem = convert(field.kind, value)
            if problem is None and field.choices is not None and converted not in field.choices:
                problem = f"must be one of {list(field.choices)}; got {value!r}"
            if problem:
                errors[where] = problem
            else:
                out[column] = converted

    def _null_point(self, schema: SchemaDef, prefix: str, out: dict) -> None:
        for field in schema.fields:
            if field.kind is FieldKind.POINT:
                self._null_point(field.point, prefix + field.name + "_", out)  # type: ignore[arg-type]
            elif field.kind is not FieldKind.SEGMENTATION:
                out[prefix + field.name] = None

    def nest(self, values: dict[str, Any]) -> dict[str, Any]:
        """The nested payload of stored flat values (inverse of ``parse``; positions as lists)."""

        def build(schema: SchemaDef, prefix: str) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for field in schema.fields:
                column = prefix + field.name
                if field.kind is FieldKind.POINT:
                    inner = build(field.point, column + "_")  # type: ignore[arg-type]
                    if inner.get("position") is not None:
                        out[field.name] = inner
                elif field.kind is not FieldKind.SEGMENTATION and column in values:
                    value = values[column]
                    out[field.name] = list(value) if isinstance(value, tuple) else value
            return out

        return build(self.schema, "")
