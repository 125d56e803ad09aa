"""Table-level permissions: who may read, write and administer one annotation table.

These apply after the dataset-level ``view``/``edit`` check. ``PUBLIC`` lets everyone with the
dataset permission in, ``GROUP`` only the owner and users sharing a group with the owner (the
``default`` group every account joins does not count, as upstream excludes it), ``PRIVATE`` only
the owner. Superadmins may do everything. Refusals are 403 (upstream's 401 would make clients
think their token is bad).
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import Engine, select

from opencave.errors import BadRequest, Forbidden
from opencave.services.auth import DEFAULT_GROUP, Identity
from opencave.storage.sql import reader
from opencave.storage.tables import groups, user_groups

LEVELS = ("PUBLIC", "GROUP", "PRIVATE")
Action = Literal["read", "write", "own"]

REFUSALS = {
    ("read", "GROUP"): "You cannot read table '{table}' because you do not share a group with its owner (user {owner}).",
    ("read", "PRIVATE"): "Table '{table}' can only be read by its owner (user {owner}).",
    ("write", "GROUP"): "You cannot write to table '{table}' because you do not share a group with its owner (user {owner}).",
    ("write", "PRIVATE"): "Table '{table}' can only be written to by its owner (user {owner}).",
}


def permission_level(value: object, name: str) -> str:
    """A permission setting, normalised to upper case; 400 for anything else."""
    if isinstance(value, str) and value.strip().upper() in LEVELS:
        return value.strip().upper()
    raise BadRequest(f"{name} must be one of PUBLIC, GROUP or PRIVATE; got {value!r}.", code="invalid_permission")


class TableAccess:
    def __init__(self, engine: Engine):
        self.engine = engine

    def groups_of(self, user_id: str) -> set[str]:
        """Names of the groups a user (given as the string stored in table metadata) belongs to."""
        try:
            uid = int(user_id)
        except (TypeError, ValueError):
            return set()
        query = select(groups.c.name).join(user_groups, user_groups.c.group_id == groups.c.id).where(user_groups.c.user_id == uid)
        with reader(self.engine).connect() as conn:
            return set(conn.execute(query).scalars())

    def shares_group(self, identity: Identity, owner: str) -> bool:
        mine = set(identity.groups) - {DEFAULT_GROUP}
        return bool(mine and mine & self.groups_of(owner))

    def require(self, identity: Identity, metadata: dict, action: Action) -> None:
        """Raise 403 unless ``identity`` may ``action`` the table described by ``metadata``."""
        owner = str(metadata["user_id"])
        if identity.admin or str(identity.id) == owner:
            return
        table = metadata["table_name"]
        if action == "own":
            raise Forbidden(
                f"You cannot do this because you are not the owner of table '{table}' (user {owner}).",
                code="not_table_owner",
            )
        level = metadata["read_permission" if action == "read" else "write_permission"]
        if level == "PUBLIC" or (level == "GROUP" and self.shares_group(identity, owner)):
            return
        raise Forbidden(
            REFUSALS[(action, level)].format(table=table, owner=owner),
            code="table_permission",
            data={"table_name": table, "required": action, f"{action}_permission": level},
        )
