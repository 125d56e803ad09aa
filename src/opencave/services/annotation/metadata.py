"""Annotation table metadata: checking what clients ask for and rendering what they read.

The rendered dict follows upstream's "table metadata" (the annotation and segmentation metadata
rows joined), with upstream's quirk fixed: ``table_name`` is always the annotation table's name.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from opencave.errors import BadRequest
from opencave.services.annotation.payloads import text_problem
from opencave.storage.state import as_utc

TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
MAX_NAME = 100
MAX_SOURCE = 300
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"
ROW_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
UPDATABLE = ("description", "flat_segmentation_source", "read_permission", "write_permission", "owner", "notice_text")


def format_time(value: datetime | None) -> str | None:
    """``YYYY-MM-DDTHH:MM:SS.ffffff`` (UTC, no zone), as CAVE services emit timestamps."""
    return None if value is None else as_utc(value).strftime(TIME_FORMAT)  # type: ignore[union-attr]


def check_table_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise BadRequest("Table name cannot be empty.", code="invalid_table_name")
    if not TABLE_NAME.match(name) or not any(c.isalpha() for c in name):
        raise BadRequest(
            f"Table name error: Invalid table name {name!r}. Table name must include at least one letter, "
            "and can only contain lowercase letters, numbers, and underscores (_).",
            code="invalid_table_name",
        )
    if len(name) > MAX_NAME:
        raise BadRequest(f"Table name error: {name!r} is longer than {MAX_NAME} characters.", code="invalid_table_name")
    return name


def _text(value: Any, name: str) -> Any:
    """Refuse NUL characters and lone surrogates, which PostgreSQL cannot store in text."""
    problem = text_problem(value) if isinstance(value, str) else None
    if problem:
        raise BadRequest(f"{name} {problem}.", code="invalid_text")
    return value


def check_description(value: Any) -> str:
    _text(value, "description")
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(
            "A table needs a description: say what it holds, how it was made and whom to ask about it.",
            code="missing_description",
        )
    return value


def check_resolution(value: Any) -> tuple[float, float, float]:
    try:
        x, y, z = (float(v) for v in value)
    except (TypeError, ValueError):
        raise BadRequest(
            f"voxel_resolution must be three numbers in nm, e.g. [4, 4, 40]; got {value!r}.", code="invalid_resolution"
        ) from None
    if not all(math.isfinite(v) and v > 0 for v in (x, y, z)):
        raise BadRequest(f"voxel_resolution must be three positive numbers in nm; got {value!r}.", code="invalid_resolution")
    return x, y, z


def check_source(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_SOURCE or text_problem(value):
        raise BadRequest(
            f"flat_segmentation_source must be a cloud path of at most {MAX_SOURCE} characters; got {value!r}.",
            code="invalid_source",
        )
    return value


def clean_notice(value: Any) -> str | None:
    """A notice text; ``""`` and ``"none"`` (any case) clear it, as upstream."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"notice_text must be a string; got {value!r}.", code="invalid_notice")
    _text(value, "notice_text")
    return None if value.strip() == "" or value.strip().lower() == "none" else value


def owner_id(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip() or len(str(value)) > 255:
        raise BadRequest(f"user_id must be a user id; got {value!r}.", code="invalid_user_id")
    return _text(str(value).strip(), "user_id")


def check_reference(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest(f"reference_table must be a table name; got {value!r}.", code="invalid_reference_table")
    return _text(value, "reference_table")


def render(row: Any, pcg_table: str | None, has_segmentation: bool) -> dict[str, Any]:
    """The metadata dict of an ``annotation_tables`` row."""
    deleted = row.deleted
    out = {
        "id": row.id,
        "schema_type": row.schema_type,
        "table_name": row.table_name,
        "valid": bool(row.valid) and deleted is None,
        "created": format_time(row.created),
        "deleted": format_time(deleted),
        "user_id": row.user_id,
        "description": row.description,
        "notice_text": row.notice_text,
        "reference_table": row.reference_table,
        "flat_segmentation_source": row.flat_segmentation_source,
        "voxel_resolution_x": row.voxel_resolution_x,
        "voxel_resolution_y": row.voxel_resolution_y,
        "voxel_resolution_z": row.voxel_resolution_z,
        "read_permission": row.read_permission,
        "write_permission": row.write_permission,
        "last_modified": format_time(row.last_modified),
        "segmentation_source": None,
        "pcg_table_name": None,
        "last_updated": None,
        "annotation_table": None,
    }
    if has_segmentation and pcg_table is not None:
        # Supervoxels are looked up on write and roots derived on read, so they are never stale.
        out.update(pcg_table_name=pcg_table, annotation_table=row.table_name, last_updated=out["last_modified"])
    return out

