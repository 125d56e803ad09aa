"""Auth API (``/auth/api/v1``): middle_auth's endpoints that clients and services call."""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends, Request
from pydantic import BaseModel, Field

from opencave.errors import BadRequest, NotFound
from opencave.server.security import current_identity, require_some_admin, require_superadmin, runtime_of
from opencave.services.auth import API, Identity
from opencave.wire.endpoints import AUTH, route_path
from opencave.wire.versions import AUTH_SERVER_VERSION

router = APIRouter(tags=["auth"])
V1 = AUTH.for_version(1)


def _path(key: str) -> str:
    return route_path(V1[key])


def _id_list(raw: str, what: str = "id") -> list[int]:
    try:
        return [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise BadRequest(f"'{what}' must be comma-separated integers, e.g. ?{what}=1,2,3 (got '{raw}').", code="invalid_ids") from None


class TokenRequest(BaseModel):
    description: str = Field(default="", max_length=200)


class NewUser(BaseModel):
    email: str = Field(max_length=120)
    name: str | None = Field(default=None, max_length=80)
    admin: bool = False


class NewGroup(BaseModel):
    name: str = Field(min_length=1, max_length=120)


class NewMember(BaseModel):
    user_id: int


@router.get(_path("version"))
def auth_version() -> str:
    return AUTH_SERVER_VERSION


@router.get(_path("user_cache"))
def user_cache(identity: Identity = Depends(current_identity)) -> dict:
    return identity.cache_json()


@router.get(_path("my_permissions"))
def my_permissions(request: Request, identity: Identity = Depends(current_identity)) -> dict:
    if identity.id == 0:
        return identity.cache_json()
    return runtime_of(request).identities.identity_for_user(identity.id).cache_json()


@router.get(_path("get_me"))
def user_me(request: Request, identity: Identity = Depends(current_identity)) -> dict:
    return runtime_of(request).accounts.get_user(identity.id).full_json()


@router.get(_path("usernames"))
def usernames(request: Request, id: str = "", identity: Identity = Depends(current_identity)) -> list[dict]:
    users = runtime_of(request).accounts.find_users(ids=_id_list(id))
    return [{"id": u.id, "name": u.name} for u in users]


@router.get(_path("get_users"))
def get_users(
    request: Request,
    id: str | None = None,
    email: str | None = None,
    name: str | None = None,
    page: int = 1,
    per_page: int = 20,
    identity: Identity = Depends(current_identity),
):
    require_some_admin(identity)
    accounts = runtime_of(request).accounts
    full = identity.admin or identity.parent_id is not None
    render = (lambda u: u.full_json()) if full else (lambda u: u.public_json())
    if id is None and email is None and name is None:
        everyone = accounts.find_users()
        per_page = max(1, min(per_page, 1000))
        start = (max(page, 1) - 1) * per_page
        return {"pages": -(-len(everyone) // per_page), "items": [render(u) for u in everyone[start : start + per_page]]}
    ids = _id_list(id) if id is not None else None
    return [render(u) for u in accounts.find_users(ids=ids, email=email, name=name)]


@router.post(_path("get_users"))
def create_user(request: Request, body: NewUser, identity: Identity = Depends(current_identity)) -> dict:
    require_some_admin(identity)
    if body.admin:
        require_superadmin(identity)
    return runtime_of(request).accounts.create_user(body.email, body.name, admin=body.admin).full_json()


@router.get(_path("get_tokens"))
def list_tokens(request: Request, identity: Identity = Depends(current_identity)) -> list[dict]:
    return [t.as_json() for t in runtime_of(request).tokens.list_api_tokens(identity.id)]


@router.post(_path("get_tokens"))
def create_token_api(request: Request, body: TokenRequest = Body(default_factory=TokenRequest), identity: Identity = Depends(current_identity)) -> str:
    _no_synthetic(identity)
    return runtime_of(request).tokens.create(identity.id, API, body.description)


@router.delete(_path("delete_token"))
def delete_token(token_id: int, request: Request, identity: Identity = Depends(current_identity)) -> str:
    runtime_of(request).tokens.revoke_by_id(identity.id, token_id)
    return "success"


@router.get(_path("refresh_token"))
def refresh_token(request: Request, identity: Identity = Depends(current_identity)) -> str:
    """Deprecated upstream: replaces all of the caller's API tokens with one new token."""
    _no_synthetic(identity)
    tokens = runtime_of(request).tokens
    with tokens.engine.begin() as conn:
        tokens.revoke_all_api_tokens(identity.id, conn)
        return tokens.create(identity.id, API, "refresh_token", connection=conn)


@router.get(_path("logout"))
def logout(request: Request, identity: Identity = Depends(current_identity)) -> str:
    if identity.token_id is not None:
        runtime_of(request).tokens.revoke_by_id(identity.id, identity.token_id)
    return "success"


@router.get(_path("groups"))
def list_groups(request: Request, name: str | None = None, identity: Identity = Depends(current_identity)) -> list[dict]:
    require_some_admin(identity)
    return runtime_of(request).accounts.list_groups(name)


@router.post(_path("groups"))
def create_group(request: Request, body: NewGroup, identity: Identity = Depends(current_identity)) -> dict:
    require_some_admin(identity)
    return runtime_of(request).accounts.create_group(body.name, admin_user_id=identity.id or None)


@router.get(_path("get_group_users"))
def group_users(group_id: int, request: Request, identity: Identity = Depends(current_identity)) -> list[dict]:
    require_some_admin(identity)
    return runtime_of(request).accounts.group_members(group_id)  # an unknown group has no members


@router.get(_path("datasets"))
def list_datasets(request: Request, identity: Identity = Depends(current_identity)) -> list[dict]:
    every = runtime_of(request).access.list_datasets()
    if identity.admin:
        return every
    return [d for d in every if d["name"] in identity.datasets_admin]


@router.get(_path("service_dataset"))
def service_dataset(namespace: str, table_name: str, request: Request, identity: Identity = Depends(current_identity)) -> str:
    dataset = runtime_of(request).identities.dataset_of(namespace, table_name)
    if dataset is None:
        raise NotFound(f"No {namespace} resource named '{table_name}' is mapped to a dataset.", code="unknown_resource")
    return dataset


# Registered last: its {user_id} pattern would otherwise shadow /user/token and friends.
@router.get(_path("get_user"))
def get_user(user_id: int, request: Request, identity: Identity = Depends(current_identity)) -> dict:
    user = runtime_of(request).accounts.get_user(user_id)
    return user.full_json() if identity.admin or identity.id == user_id else user.public_json()


def _no_synthetic(identity: Identity) -> None:
    if identity.id == 0:
        raise BadRequest("Authentication is switched off on this server, so there is no user to issue a token to.", code="auth_disabled")
