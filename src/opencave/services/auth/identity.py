"""Who a token belongs to and what they may do: middle_auth's "user cache" record.

Computing an identity takes a few joins, so identities are cached per process keyed by
``(user id, auth generation)``; any change to users, groups, grants or terms of service bumps
the generation in the store, so every process sees it on its next request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from sqlalchemy import Engine, select

from opencave.errors import Forbidden, NotFound, Unauthorized
from opencave.services.auth.tokens import TokenStore
from opencave.storage.sql import reader
from opencave.storage.state import GenerationCache, Generations, read_generations
from opencave.storage.tables import (
    dataset_admins,
    datasets,
    group_dataset_permissions,
    groups,
    permissions,
    service_tables,
    terms_of_service,
    user_groups,
    user_tos,
    users,
)

LEGACY_LEVELS = {"view": 1, "edit": 2}


@dataclass(frozen=True)
class Identity:
    id: int
    name: str
    email: str
    admin: bool
    parent_id: int | None = None
    pi: str = ""
    groups: tuple[str, ...] = ()
    groups_admin: tuple[str, ...] = ()
    datasets_admin: tuple[str, ...] = ()
    permissions_ignore_tos: dict[str, tuple[str, ...]] = field(default_factory=dict)
    permissions_v2: dict[str, tuple[str, ...]] = field(default_factory=dict)
    missing_tos: tuple[dict, ...] = ()
    token_id: int | None = None

    def has(self, permission: str, dataset: str, ignore_tos: bool = False) -> bool:
        if self.admin:
            return True
        granted = (self.permissions_ignore_tos if ignore_tos else self.permissions_v2).get(dataset, ())
        return permission in granted

    def cache_json(self) -> dict:
        """The JSON every CAVE service receives for a token (``GET /auth/api/v1/user/cache``)."""
        return {
            "id": self.id,
            "parent_id": self.parent_id,
            "service_account": self.parent_id is not None,
            "name": self.name,
            "email": self.email,
            "admin": self.admin,
            "pi": self.pi,
            "affiliations": [],
            "groups": list(self.groups),
            "permissions": {
                ds: max((LEGACY_LEVELS.get(p, 0) for p in perms), default=0) for ds, perms in self.permissions_v2.items()
            },
            "permissions_v2": {ds: list(p) for ds, p in self.permissions_v2.items()},
            "permissions_v2_ignore_tos": {ds: list(p) for ds, p in self.permissions_ignore_tos.items()},
            "missing_tos": list(self.missing_tos),
            "datasets_admin": list(self.datasets_admin),
            "groups_admin": list(self.groups_admin),
        }


@dataclass(frozen=True)
class AuthContext:
    """Who is calling, and the generation counters read with their token (for cache checks)."""

    identity: Identity
    generations: Generations


AUTH_DISABLED_IDENTITY = Identity(id=0, name="AUTH_DISABLED", email="AUTH_DISABLED@AUTH.DISABLED", admin=True)


class IdentityResolver:
    """Turns presented tokens into identities and answers permission questions."""

    def __init__(self, engine: Engine, tos_url: Callable[[int], str] = lambda tos_id: f"/sticky_auth/api/v1/tos/{tos_id}/accept"):
        self.engine = engine
        self.tokens = TokenStore(engine)
        self.tos_url = tos_url
        self._identities: GenerationCache[Identity] = GenerationCache()
        self._resources: tuple[str, dict[tuple[str, str], str]] | None = None

    def authenticate(self, token: str) -> AuthContext:
        match = self.tokens.match(token)
        if match is None:
            raise Unauthorized(
                "Unauthorized - Token is Invalid or Expired: create a new one on the tokens page "
                "(/sticky_auth/settings/tokens) and save it with client.auth.save_token().",
                code="invalid_token",
            )
        identity = self._identity(match.user_id, match.generations)
        if identity.token_id != match.token_id:
            identity = replace(identity, token_id=match.token_id)
        return AuthContext(identity, match.generations)

    def unauthenticated(self, identity: Identity) -> AuthContext:
        """A context for a fixed identity (authentication switched off)."""
        with reader(self.engine).connect() as conn:
            return AuthContext(identity, read_generations(conn))

    def identity_for_user(self, user_id: int) -> Identity:
        return self._compute(user_id)

    def context_for_user(self, user_id: int) -> AuthContext:
        """The context of a user named by other means than a token (a signed volume URL)."""
        with reader(self.engine).connect() as conn:
            generations = read_generations(conn)
        return AuthContext(self._identity(user_id, generations), generations)

    def _identity(self, user_id: int, generations: Generations) -> Identity:
        """The user's identity, computed once per auth generation."""
        return self._identities.get(user_id, generations.auth, lambda: self._compute(user_id))

    def dataset_of(self, namespace: str, name: str, generations: Generations) -> str | None:
        """The dataset a service resource belongs to (None when nothing maps it)."""
        cached = self._resources
        if cached is None or cached[0] != generations.auth:
            query = select(service_tables.c.service_name, service_tables.c.table_name, datasets.c.name).join(
                datasets, datasets.c.id == service_tables.c.dataset_id
            )
            with self.engine.connect() as conn:
                cached = (generations.auth, {(r[0], r[1]): r[2] for r in conn.execute(query)})
            self._resources = cached
        return cached[1].get((namespace, name))

    def require(self, context: AuthContext, permission: str, namespace: str, name: str, ignore_tos: bool = False) -> str:
        """Raise unless the caller holds ``permission`` on the dataset of resource ``name``."""
        identity = context.identity
        dataset = self.dataset_of(namespace, name, context.generations)
        if dataset is None:
            raise NotFound(f"No {namespace} named '{name}' is registered on this server.", code="unknown_resource")
        if identity.has(permission, dataset, ignore_tos):
            return dataset
        for missing in identity.missing_tos:
            if missing["dataset_name"] == dataset and permission in identity.permissions_ignore_tos.get(dataset, ()):
                raise Forbidden(
                    f"Need to accept Terms of Service to access resource: open {missing['tos_form_url']} in a browser.",
                    code="missing_tos",
                    data={
                        "tos_id": missing["tos_id"],
                        "tos_name": missing["tos_name"],
                        "tos_form_url": missing["tos_form_url"],
                    },
                )
        raise Forbidden(
            f"Missing permission: {permission} for dataset {dataset}; ask an administrator to grant it "
            f"(opencave permission grant GROUP {dataset} {permission}).",
            code="missing_permission",
            data={"required_permission": permission, "auth_dataset": dataset},
        )

    def _compute(self, user_id: int) -> Identity:
        with self.engine.connect() as conn:
            user = conn.execute(select(users).where(users.c.id == user_id)).first()
            if user is None:
                raise Unauthorized("Unauthorized - the token's user no longer exists.", code="invalid_token")
            memberships = conn.execute(
                select(groups.c.name, user_groups.c.admin)
                .join(user_groups, user_groups.c.group_id == groups.c.id)
                .where(user_groups.c.user_id == user_id)
                .order_by(groups.c.id)
            ).all()
            grants = conn.execute(
                select(datasets.c.name, permissions.c.name, datasets.c.tos_id, datasets.c.id)
                .select_from(group_dataset_permissions)
                .join(user_groups, user_groups.c.group_id == group_dataset_permissions.c.group_id)
                .join(datasets, datasets.c.id == group_dataset_permissions.c.dataset_id)
                .join(permissions, permissions.c.id == group_dataset_permissions.c.permission_id)
                .where(user_groups.c.user_id == user_id)
                .order_by(datasets.c.name, permissions.c.id)
            ).all()
            tos_owner = user.parent_id or user_id  # service accounts inherit their parent's acceptances
            accepted = set(conn.execute(select(user_tos.c.tos_id).where(user_tos.c.user_id == tos_owner)).scalars())
            tos_names = dict(conn.execute(select(terms_of_service.c.id, terms_of_service.c.name)).all())
            admin_of = conn.execute(
                select(datasets.c.name).join(dataset_admins, dataset_admins.c.dataset_id == datasets.c.id).where(
                    dataset_admins.c.user_id == user_id
                )
            ).scalars()
            admin_of = tuple(admin_of)

        ignore_tos: dict[str, list[str]] = {}
        with_tos: dict[str, list[str]] = {}
        missing: dict[str, dict] = {}
        for dataset, permission, tos_id, dataset_id in grants:
            if user.read_only and permission == "edit":
                continue
            bucket = ignore_tos.setdefault(dataset, [])
            if permission not in bucket:
                bucket.append(permission)
            if tos_id is None or tos_id in accepted:
                target = with_tos.setdefault(dataset, [])
                if permission not in target:
                    target.append(permission)
            else:
                missing[dataset] = {
                    "dataset_id": dataset_id,
                    "dataset_name": dataset,
                    "tos_id": tos_id,
                    "tos_name": tos_names.get(tos_id, ""),
                    "tos_form_url": self.tos_url(tos_id),
                }
        return Identity(
            id=user.id,
            name=user.name,
            email=user.email,
            admin=bool(user.admin),
            parent_id=user.parent_id,
            pi=user.pi,
            groups=tuple(name for name, _ in memberships),
            groups_admin=tuple(name for name, is_admin in memberships if is_admin),
            datasets_admin=admin_of,
            permissions_ignore_tos={k: tuple(v) for k, v in ignore_tos.items()},
            permissions_v2={k: tuple(v) for k, v in with_tos.items()},
            missing_tos=tuple(missing.values()),
        )

