"""Datasets, permissions granted to groups, service-resource mapping and terms of service.

A dataset is the unit of permission. Services name their resources differently (a datastack,
an aligned volume, a chunkedgraph table), so ``service_tables`` maps ``(namespace, name)`` to a
dataset, exactly as middle_auth does.
"""

from __future__ import annotations

from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError

from opencave.errors import BadRequest, Conflict, NotFound
from opencave.storage.state import bump_generation, utcnow
from opencave.storage.tables import (
    dataset_admins,
    datasets,
    group_dataset_permissions,
    groups,
    permissions,
    service_tables,
    terms_of_service,
    user_tos,
)

PERMISSION_NAMES = ("view", "edit", "admin")
NAMESPACES = ("datastack", "aligned_volume", "pychunkedgraph")


class Access:
    def __init__(self, engine: Engine):
        self.engine = engine

    def seed_permissions(self) -> None:
        with self.engine.begin() as conn:
            known = set(conn.execute(select(permissions.c.name)).scalars())
            for name in PERMISSION_NAMES:
                if name not in known:
                    conn.execute(insert(permissions).values(name=name))

    # -- datasets ------------------------------------------------------------------------------
    def create_dataset(self, name: str, tos_id: int | None = None) -> dict:
        name = name.strip()
        if not name:
            raise BadRequest("A dataset needs a non-empty name.", code="invalid_name")
        with self.engine.begin() as conn:
            try:
                dataset_id = conn.execute(insert(datasets).values(name=name, tos_id=tos_id)).inserted_primary_key[0]
            except IntegrityError:
                raise Conflict(f"Dataset '{name}' already exists.", code="dataset_exists") from None
            bump_generation(conn)
        return {"id": dataset_id, "name": name, "tos_id": tos_id}

    def list_datasets(self) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(datasets).order_by(datasets.c.id)).all()
        return [{"id": r.id, "name": r.name, "tos_id": r.tos_id} for r in rows]

    def dataset(self, name: str) -> dict:
        with self.engine.connect() as conn:
            row = conn.execute(select(datasets).where(datasets.c.name == name)).first()
        if row is None:
            raise NotFound(f"Unknown dataset '{name}'; list datasets with `opencave dataset list`.", code="unknown_dataset")
        return {"id": row.id, "name": row.name, "tos_id": row.tos_id}

    def _ids(self, conn, group: str, dataset: str, permission: str) -> tuple[int, int, int]:
        gid = conn.execute(select(groups.c.id).where(groups.c.name == group)).scalar()
        did = conn.execute(select(datasets.c.id).where(datasets.c.name == dataset)).scalar()
        pid = conn.execute(select(permissions.c.id).where(permissions.c.name == permission)).scalar()
        if gid is None:
            raise NotFound(f"Unknown group '{group}'.", code="unknown_group")
        if did is None:
            raise NotFound(f"Unknown dataset '{dataset}'.", code="unknown_dataset")
        if pid is None:
            raise BadRequest(f"Unknown permission '{permission}'; use one of {list(PERMISSION_NAMES)}.", code="unknown_permission")
        return gid, did, pid

    def require_group(self, group: str) -> None:
        """Refuse a group name that does not exist (before work that would end by granting to it)."""
        with self.engine.connect() as conn:
            if conn.execute(select(groups.c.id).where(groups.c.name == group)).scalar() is None:
                raise NotFound(f"Unknown group '{group}'; list groups with `opencave group list`.", code="unknown_group")

    def grant(self, group: str, dataset: str, permission: str) -> None:
        with self.engine.begin() as conn:
            gid, did, pid = self._ids(conn, group, dataset, permission)
            exists = conn.execute(
                select(group_dataset_permissions.c.id).where(
                    group_dataset_permissions.c.group_id == gid,
                    group_dataset_permissions.c.dataset_id == did,
                    group_dataset_permissions.c.permission_id == pid,
                )
            ).scalar()
            if exists is None:
                conn.execute(insert(group_dataset_permissions).values(group_id=gid, dataset_id=did, permission_id=pid))
            bump_generation(conn)

    def revoke(self, group: str, dataset: str, permission: str) -> None:
        with self.engine.begin() as conn:
            gid, did, pid = self._ids(conn, group, dataset, permission)
            conn.execute(
                delete(group_dataset_permissions).where(
                    group_dataset_permissions.c.group_id == gid,
                    group_dataset_permissions.c.dataset_id == did,
                    group_dataset_permissions.c.permission_id == pid,
                )
            )
            bump_generation(conn)

    def grants(self, dataset: str | None = None) -> list[dict]:
        query = (
            select(groups.c.name.label("group"), datasets.c.name.label("dataset"), permissions.c.name.label("permission"))
            .select_from(group_dataset_permissions)
            .join(groups, groups.c.id == group_dataset_permissions.c.group_id)
            .join(datasets, datasets.c.id == group_dataset_permissions.c.dataset_id)
            .join(permissions, permissions.c.id == group_dataset_permissions.c.permission_id)
            .order_by(datasets.c.name, groups.c.name, permissions.c.id)
        )
        if dataset is not None:
            query = query.where(datasets.c.name == dataset)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def add_dataset_admin(self, dataset: str, user_id: int) -> None:
        with self.engine.begin() as conn:
            did = conn.execute(select(datasets.c.id).where(datasets.c.name == dataset)).scalar()
            if did is None:
                raise NotFound(f"Unknown dataset '{dataset}'.", code="unknown_dataset")
            try:
                conn.execute(insert(dataset_admins).values(user_id=user_id, dataset_id=did))
            except IntegrityError:
                return
            bump_generation(conn)

    # -- service resources ---------------------------------------------------------------------
    def map_resource(self, namespace: str, name: str, dataset: str) -> None:
        """Declare that ``namespace``'s resource ``name`` belongs to ``dataset``."""
        with self.engine.begin() as conn:
            did = conn.execute(select(datasets.c.id).where(datasets.c.name == dataset)).scalar()
            if did is None:
                raise NotFound(f"Unknown dataset '{dataset}'.", code="unknown_dataset")
            conn.execute(
                delete(service_tables).where(service_tables.c.service_name == namespace, service_tables.c.table_name == name)
            )
            conn.execute(insert(service_tables).values(service_name=namespace, table_name=name, dataset_id=did))
            bump_generation(conn)

    # -- terms of service ----------------------------------------------------------------------
    def create_tos(self, name: str, text: str, dataset: str | None = None) -> dict:
        with self.engine.begin() as conn:
            try:
                tos_id = conn.execute(
                    insert(terms_of_service).values(name=name, text=text, created=utcnow())
                ).inserted_primary_key[0]
            except IntegrityError:
                raise Conflict(f"Terms of service '{name}' already exist.", code="tos_exists") from None
            if dataset is not None:
                updated = conn.execute(datasets.update().where(datasets.c.name == dataset).values(tos_id=tos_id))
                if updated.rowcount == 0:
                    raise NotFound(f"Unknown dataset '{dataset}'.", code="unknown_dataset")
            bump_generation(conn)
        return {"id": tos_id, "name": name, "text": text}

    def tos(self, tos_id: int) -> dict:
        with self.engine.connect() as conn:
            row = conn.execute(select(terms_of_service).where(terms_of_service.c.id == tos_id)).first()
        if row is None:
            raise NotFound(f"Terms of service {tos_id} don't exist.", code="unknown_tos")
        return {"id": row.id, "name": row.name, "text": row.text}

    def accept_tos(self, user_id: int, tos_id: int) -> None:
        self.tos(tos_id)
        with self.engine.begin() as conn:
            exists = conn.execute(
                select(user_tos.c.id).where(user_tos.c.user_id == user_id, user_tos.c.tos_id == tos_id)
            ).scalar()
            if exists is None:
                conn.execute(insert(user_tos).values(user_id=user_id, tos_id=tos_id, accepted=utcnow()))
            bump_generation(conn)
