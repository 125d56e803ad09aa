"""Users, service accounts and groups.

Every new user joins the ``default`` group, as in middle_auth, so granting a permission to
``default`` opens a dataset to everyone with an account.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from opencave.errors import BadRequest, Conflict, NotFound
from opencave.services.auth.passwords import MIN_PASSWORD_LENGTH, hash_password
from opencave.storage.state import as_utc, bump_generation, utcnow
from opencave.storage.tables import groups, user_groups, users

DEFAULT_GROUP = "default"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


@dataclass(frozen=True)
class User:
    id: int
    name: str
    email: str
    admin: bool
    pi: str
    gdpr_consent: bool
    read_only: bool
    parent_id: int | None
    created: datetime
    has_password: bool

    @property
    def service_account(self) -> bool:
        return self.parent_id is not None

    def public_json(self) -> dict:
        return {
            "id": self.id,
            "service_account": self.service_account,
            "name": self.name,
            "created": self.created.isoformat(),
            "pi": self.pi,
            "affiliations": [],
        }

    def full_json(self) -> dict:
        body = self.public_json() | {"gdpr_consent": self.gdpr_consent, "admin": self.admin, "email": self.email}
        if self.parent_id is not None:
            body["parent_id"] = self.parent_id
        return body


def _user(row) -> User:
    return User(
        id=row.id,
        name=row.name,
        email=row.email,
        admin=bool(row.admin),
        pi=row.pi,
        gdpr_consent=bool(row.gdpr_consent),
        read_only=bool(row.read_only),
        parent_id=row.parent_id,
        created=as_utc(row.created),
        has_password=row.password_hash is not None,
    )


def _group_id(connection: Connection, name: str) -> int:
    group_id = connection.execute(select(groups.c.id).where(groups.c.name == name)).scalar()
    if group_id is None:
        raise NotFound(f"Unknown group '{name}'; list groups with `opencave group list`.", code="unknown_group")
    return group_id


class Accounts:
    def __init__(self, engine: Engine):
        self.engine = engine

    # -- users ---------------------------------------------------------------------------------
    def create_user(
        self,
        email: str,
        name: str | None = None,
        *,
        admin: bool = False,
        password: str | None = None,
        pi: str = "",
        parent_id: int | None = None,
    ) -> User:
        email = email.strip().lower()
        if parent_id is None and not _EMAIL.match(email):
            raise BadRequest(f"'{email}' is not an e-mail address (expected name@host).", code="invalid_email")
        if password is not None and len(password) < MIN_PASSWORD_LENGTH:
            raise BadRequest(f"Passwords need at least {MIN_PASSWORD_LENGTH} characters.", code="weak_password")
        with self.engine.begin() as conn:
            try:
                user_id = conn.execute(
                    insert(users).values(
                        name=name or email.split("@")[0],
                        email=email,
                        admin=admin,
                        pi=pi,
                        gdpr_consent=False,
                        read_only=False,
                        parent_id=parent_id,
                        password_hash=hash_password(password) if password else None,
                        created=utcnow(),
                    )
                ).inserted_primary_key[0]
            except IntegrityError:
                raise Conflict(f"A user with e-mail {email} already exists.", code="user_exists") from None
            self._join(conn, user_id, self._ensure_group(conn, DEFAULT_GROUP))
            bump_generation(conn)
        return self.get_user(user_id)

    def create_service_account(self, name: str, parent_email: str) -> User:
        parent = self.get_user_by_email(parent_email)
        return self.create_user(f"{name.lower()}@serviceaccount", name, parent_id=parent.id)

    def get_user(self, user_id: int) -> User:
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.id == user_id)).first()
        if row is None:
            raise NotFound(f"User {user_id} doesn't exist.", code="unknown_user")
        return _user(row)

    def get_user_by_email(self, email: str) -> User:
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.email == email.strip().lower())).first()
        if row is None:
            raise NotFound(f"No user with e-mail {email}; add one with `opencave user add {email}`.", code="unknown_user")
        return _user(row)

    def password_hash(self, email: str) -> tuple[User, str | None] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.email == email.strip().lower())).first()
        return None if row is None else (_user(row), row.password_hash)

    def find_users(self, ids: list[int] | None = None, email: str | None = None, name: str | None = None) -> list[User]:
        query = select(users).order_by(users.c.id)
        if ids is not None:
            query = query.where(users.c.id.in_(ids))
        if email is not None:
            query = query.where(users.c.email == email.strip().lower())
        if name is not None:
            query = query.where(users.c.name == name)
        with self.engine.connect() as conn:
            return [_user(r) for r in conn.execute(query)]

    def update_user(self, user_id: int, **changes) -> User:
        allowed = {"admin", "name", "pi", "gdpr_consent", "read_only"}
        unknown = set(changes) - allowed
        if unknown:
            raise BadRequest(f"Cannot change {sorted(unknown)}; changeable fields are {sorted(allowed)}.", code="invalid_field")
        self.get_user(user_id)
        with self.engine.begin() as conn:
            conn.execute(update(users).where(users.c.id == user_id).values(**changes))
            bump_generation(conn)
        return self.get_user(user_id)

    def set_password(self, email: str, password: str) -> None:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise BadRequest(f"Passwords need at least {MIN_PASSWORD_LENGTH} characters.", code="weak_password")
        user = self.get_user_by_email(email)
        with self.engine.begin() as conn:
            conn.execute(update(users).where(users.c.id == user.id).values(password_hash=hash_password(password)))

    def delete_user(self, user_id: int) -> None:
        with self.engine.begin() as conn:
            if conn.execute(delete(users).where(users.c.id == user_id)).rowcount == 0:
                raise NotFound(f"User {user_id} doesn't exist.", code="unknown_user")
            bump_generation(conn)

    def count_users(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(users)).scalar_one()

    # -- groups --------------------------------------------------------------------------------
    @staticmethod
    def _ensure_group(connection: Connection, name: str) -> int:
        group_id = connection.execute(select(groups.c.id).where(groups.c.name == name)).scalar()
        if group_id is None:
            group_id = connection.execute(insert(groups).values(name=name)).inserted_primary_key[0]
        return group_id

    @staticmethod
    def _join(connection: Connection, user_id: int, group_id: int, admin: bool = False) -> None:
        exists = connection.execute(
            select(user_groups.c.id).where(user_groups.c.user_id == user_id, user_groups.c.group_id == group_id)
        ).scalar()
        if exists is None:
            connection.execute(insert(user_groups).values(user_id=user_id, group_id=group_id, admin=admin))
        elif admin:
            connection.execute(update(user_groups).where(user_groups.c.id == exists).values(admin=True))

    def create_group(self, name: str, admin_user_id: int | None = None) -> dict:
        name = name.strip()
        if not name:
            raise BadRequest("A group needs a non-empty name.", code="invalid_name")
        with self.engine.begin() as conn:
            if conn.execute(select(groups.c.id).where(groups.c.name == name)).scalar() is not None:
                raise Conflict(f"Group '{name}' already exists.", code="group_exists")
            group_id = conn.execute(insert(groups).values(name=name)).inserted_primary_key[0]
            if admin_user_id is not None:
                self._join(conn, admin_user_id, group_id, admin=True)
            bump_generation(conn)
        return {"id": group_id, "name": name}

    def list_groups(self, name: str | None = None) -> list[dict]:
        query = select(groups.c.id, groups.c.name).order_by(groups.c.id)
        if name is not None:
            query = query.where(groups.c.name == name)
        with self.engine.connect() as conn:
            return [{"id": r.id, "name": r.name} for r in conn.execute(query)]

    def get_group(self, group_id: int) -> dict:
        with self.engine.connect() as conn:
            row = conn.execute(select(groups.c.id, groups.c.name).where(groups.c.id == group_id)).first()
        if row is None:
            raise NotFound(f"Group {group_id} doesn't exist.", code="unknown_group")
        return {"id": row.id, "name": row.name}

    def group_id(self, name: str) -> int:
        with self.engine.connect() as conn:
            return _group_id(conn, name)

    def add_member(self, group_name: str, email: str, admin: bool = False) -> None:
        user = self.get_user_by_email(email)
        with self.engine.begin() as conn:
            self._join(conn, user.id, _group_id(conn, group_name), admin=admin)
            bump_generation(conn)

    def remove_member(self, group_name: str, email: str) -> None:
        user = self.get_user_by_email(email)
        with self.engine.begin() as conn:
            gid = _group_id(conn, group_name)
            removed = conn.execute(delete(user_groups).where(user_groups.c.user_id == user.id, user_groups.c.group_id == gid))
            if removed.rowcount == 0:
                raise NotFound(f"{email} is not a member of group '{group_name}'.", code="not_a_member")
            bump_generation(conn)

    def group_members(self, group_id: int) -> list[dict]:
        """Members as caveclient's ``get_group_users`` expects: ``[{"id", "name", "admin"}]``."""
        query = (
            select(users.c.id, users.c.name, users.c.email, user_groups.c.admin)
            .join(user_groups, user_groups.c.user_id == users.c.id)
            .where(user_groups.c.group_id == group_id)
            .order_by(users.c.id)
        )
        with self.engine.connect() as conn:
            return [{"id": r.id, "name": r.name, "email": r.email, "admin": bool(r.admin)} for r in conn.execute(query)]
