"""Info service (``/info``): aligned volumes, datastacks, image mirrors."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from opencave.server.params import Name, SerialId
from opencave.server.security import current_context, runtime_of
from opencave.services.auth import AuthContext
from opencave.wire.endpoints import INFO, route_path
from opencave.wire.versions import INFO_API_VERSIONS, INFO_SERVER_VERSION

router = APIRouter(tags=["info"])
V2 = INFO.for_version(2)


DatastackName = Annotated[Name, Path(description="a datastack's name")]
VolumeName = Annotated[Name, Path(description="an aligned volume's name")]


def _path(key: str) -> str:
    return route_path(V2[key])


@router.get(_path("get_version"))
def info_version() -> str:
    return INFO_SERVER_VERSION


@router.get(_path("get_api_versions"))
def info_api_versions() -> list[int]:
    return INFO_API_VERSIONS


def _visible(request: Request, context: AuthContext, namespace: str, names: list[str]) -> list[str]:
    identities = runtime_of(request).identities
    visible = []
    for name in names:
        dataset = identities.dataset_of(namespace, name, context.generations)
        if dataset is not None and context.identity.has("view", dataset, ignore_tos=True):
            visible.append(name)
    return visible


@router.get(_path("aligned_volumes"))
def aligned_volumes(request: Request, context: AuthContext = Depends(current_context)) -> list[str]:
    names = runtime_of(request).info.aligned_volume_names()
    return _visible(request, context, "aligned_volume", names)


@router.get(_path("aligned_volume_by_id"))
def aligned_volume_by_id(aligned_volume_id: Annotated[SerialId, Path()], request: Request, context: AuthContext = Depends(current_context)) -> dict:
    runtime = runtime_of(request)
    volume = runtime.info.aligned_volume_by_id(aligned_volume_id, runtime.settings.server_url)
    runtime.identities.require(context, "view", "aligned_volume", volume["name"], ignore_tos=True)
    return volume


@router.get(_path("aligned_volume_info"))
def aligned_volume_info(aligned_volume_name: VolumeName, request: Request, context: AuthContext = Depends(current_context)) -> dict:
    runtime = runtime_of(request)
    volume = runtime.info.aligned_volume(aligned_volume_name, runtime.settings.server_url)
    runtime.identities.require(context, "view", "aligned_volume", aligned_volume_name, ignore_tos=True)
    return volume


@router.get(_path("datastacks_from_aligned_volume"))
def datastacks_of_volume(aligned_volume_name: VolumeName, request: Request, context: AuthContext = Depends(current_context)) -> list[str]:
    names = runtime_of(request).info.datastacks_of_volume(aligned_volume_name)
    return _visible(request, context, "datastack", names)


@router.get(_path("datastacks"))
def datastacks(request: Request, context: AuthContext = Depends(current_context)) -> list[str]:
    return _visible(request, context, "datastack", runtime_of(request).info.datastack_names())


@router.get(_path("datastack_info"))
async def datastack_info(
    datastack_name: DatastackName,
    request: Request,
    image_source_name: Annotated[Name | None, Query(description="serve this image mirror's source")] = None,
    context: AuthContext = Depends(current_context),
) -> dict:
    runtime = runtime_of(request)
    record = runtime.info.cached_datastack_info(
        datastack_name, runtime.settings.server_url, context.generations, image_source_name
    )
    runtime.identities.require(context, "view", "datastack", datastack_name)
    return record


@router.get(_path("image_sources"))
def image_sources(datastack_name: DatastackName, request: Request, context: AuthContext = Depends(current_context)) -> list[dict]:
    runtime = runtime_of(request)
    mirrors = runtime.info.image_sources(datastack_name, runtime.settings.server_url)
    runtime.identities.require(context, "view", "datastack", datastack_name)
    return mirrors
