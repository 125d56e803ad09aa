"""Auth API (``/auth/api/v1``): middle_auth's endpoints that clients and services call."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict

from opencave.errors import BadRequest, NotFound
from opencave.server.params import Int32, Name, SerialId, SerialIdList, text
from opencave.server.security import current_context, current_identity, require_some_admin, require_superadmin, runtime_of
from opencave.services.auth import API, AuthContext, Identity
from opencave.wire.endpoints import AUTH, route_path
from opencave.wire.versions import AUTH_SERVER_VERSION

router = APIRouter(tags=["auth"])
V1 = AUTH.for_version(1)

UserIds = Annotated[SerialIdList | None, Query(alias="id", description="user ids: 1,2,3")]


def _path(key: str) -> str:
    return route_path(V1[key])


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    description: text(200) = ""


class NewUser(BaseModel):
    model_config = ConfigDict(extra="ignore")
    email: text(120, 3)
    name: text(80) | None = None
    admin: bool = False


class NewGroup(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: text(120, 1)


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
def usernames(request: Request, ids: UserIds = None, identity: Identity = Depends(current_identity)) -> list[dict]:
    users = runtime_of(request).accounts.find_users(ids=ids or [])
    return [{"id": u.id, "name": u.name} for u in users]


@router.get(_path("get_users"))
def get_users(
    request: Request,
    ids: UserIds = None,
    email: Annotated[text(320) | None, Query()] = None,
    name: Annotated[text(255) | None, Query()] = None,
    page: Annotated[Int32, Query(description="page of the unfiltered list, from 1")] = 1,
    per_page: Annotated[Int32, Query(description="users per page (at most 1000)")] = 20,
    identity: Identity = Depends(current_identity),
):
    require_some_admin(identity)
    accounts = runtime_of(request).accounts
    full = identity.admin or identity.parent_id is not None
    render = (lambda u: u.full_json()) if full else (lambda u: u.public_json())
    if ids is None and email is None and name is None:
        everyone = accounts.find_users()
        per_page = max(1, min(per_page, 1000))
        start = (max(page, 1) - 1) * per_page
        return {"pages": -(-len(everyone) // per_page), "items": [render(u) for u in everyone[start : start + per_page]]}
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
def delete_token(token_id: Annotated[SerialId, Path()], request: Request, identity: Identity = Depends(current_identity)) -> str:
    runtime_of(request).tokens.revoke_by_id(identity.id, token_id)
    return "success"


@router.get(_path("groups"))
def list_groups(request: Request, name: Annotated[text(120) | None, Query()] = None, identity: Identity = Depends(current_identity)) -> list[dict]:
    require_some_admin(identity)
    return runtime_of(request).accounts.list_groups(name)


@router.post(_path("groups"))
def create_group(request: Request, body: NewGroup, identity: Identity = Depends(current_identity)) -> dict:
    require_some_admin(identity)
    return runtime_of(request).accounts.create_group(body.name, admin_user_id=identity.id or None)


@router.get(_path("get_group_users"))
def group_users(group_id: Annotated[SerialId, Path()], request: Request, identity: Identity = Depends(current_identity)) -> list[dict]:
    require_some_admin(identity)
    return runtime_of(request).accounts.group_members(group_id)  # an unknown group has no members


@router.get(_path("datasets"))
def list_datasets(request: Request, identity: Identity = Depends(current_identity)) -> list[dict]:
    every = runtime_of(request).access.list_datasets()
    if identity.admin:
        return every
    return [d for d in every if d["name"] in identity.datasets_admin]


@router.get(_path("service_dataset"))
def service_dataset(
    namespace: Annotated[Name, Path(description="datastack, aligned_volume or pychunkedgraph")],
    table_name: Annotated[Name, Path(description="the resource's name")],
    request: Request,
    context: AuthContext = Depends(current_context),
) -> str:
    dataset = runtime_of(request).identities.dataset_of(namespace, table_name, context.generations)
    if dataset is None:
        raise NotFound(f"No {namespace} resource named '{table_name}' is mapped to a dataset.", code="unknown_resource")
    return dataset


# Registered last: its {user_id} pattern would otherwise shadow /user/token and friends.
@router.get(_path("get_user"))
def get_user(user_id: Annotated[SerialId, Path()], request: Request, identity: Identity = Depends(current_identity)) -> dict:
    user = runtime_of(request).accounts.get_user(user_id)
    return user.full_json() if identity.admin or identity.id == user_id else user.public_json()


def _no_synthetic(identity: Identity) -> None:
    if identity.id == 0:
        raise BadRequest("Authentication is switched off on this server, so there is no user to issue a token to.", code="auth_disabled")
