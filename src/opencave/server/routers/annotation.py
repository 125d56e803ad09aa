"""Annotation engine (``/annotation/api/v2``): live annotation tables of an aligned volume.

Thin: parse, check the dataset permission (``view`` to read, ``edit`` to write, on the aligned
volume), let the service check the table's own permissions and do the work off the event loop.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path as FilePath
from typing import Annotated, Any, ClassVar, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, WithJsonSchema, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from opencave.errors import BadRequest
from opencave.runtime import Runtime
from opencave.server.params import Coordinate, Flag, Moment, Name, Text, binary_body, clean_json_text, invalid, row_id_list, text
from opencave.server.security import current_context, runtime_of
from opencave.services.annotation import AnnotationService
from opencave.services.annotation.service import MAX_IDS, MAX_INSERT
from opencave.services.auth import AuthContext
from opencave.services.transfer.table_import import parse_renames
from opencave.services.transfer.table_import_job import IMPORT_TABLE, import_options, new_upload, upload_payload
from opencave.wire.endpoints import ANNOTATION, route_path

# Bodies are JSON whatever the Content-Type says (CAVE's servers read them so).
router = APIRouter(tags=["annotation"], strict_content_type=False)
V2 = ANNOTATION.for_version(2)
NAMESPACE = "aligned_volume"


def _path(key: str) -> str:
    return route_path(V2[key])


def _service(request: Request, context: AuthContext, aligned_volume: str, permission: str) -> AnnotationService:
    runtime: Runtime = runtime_of(request)
    runtime.identities.require(context, permission, NAMESPACE, aligned_volume)
    return runtime.annotations


def _notice(metadata: dict) -> dict[str, str]:
    """The ``Warning`` header caveclient logs for a table whose owner set a notice."""
    notice = metadata.get("notice_text")
    if not notice:
        return {}
    text = " ".join(notice.split()).encode("latin-1", "replace").decode("latin-1")
    return {"Warning": f"Table Owner Notice: {text}"}


def _user(context: AuthContext) -> str:
    return str(context.identity.id)


# -- declared inputs ---------------------------------------------------------------------------
AlignedVolume = Annotated[Name, Path(description="the aligned volume whose tables these are")]
TableName = Annotated[Name, Path(description="an annotation table of the aligned volume")]
ShortText = text(1_000)  # names the service checks itself (table names, schemas, permissions, sources)
UserId = Annotated[Any, WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0, "maximum": 2**63 - 1}, {"type": "string", "maxLength": 255}]})]


class _Body(BaseModel):
    """A JSON object whose unknown keys are named in a 400 with the allowed ones; every string
    in it (keys too) must be text every storage engine can hold."""

    model_config = ConfigDict(extra="forbid")
    where: ClassVar[str] = "the body"

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, body: Any) -> Any:
        if not isinstance(body, dict):
            raise invalid("invalid_body", f"{cls.where} must be a JSON object.")
        extra = sorted(map(str, set(body) - set(cls.model_fields)))
        if extra:
            raise invalid("invalid_body", f"Unknown keys {extra} in {cls.where}; allowed: {sorted(cls.model_fields)}.")
        return clean_json_text(body)


class ReferenceLink(_Body):
    where: ClassVar[str] = "metadata.table_metadata"

    reference_table: ShortText | None = None
    track_target_id_updates: Flag | None = None


class CreateMetadata(_Body):
    """A new table's metadata, as caveclient's ``create_table`` sends it."""

    where: ClassVar[str] = "metadata"

    description: Text | None = None
    voxel_resolution_x: Coordinate
    voxel_resolution_y: Coordinate
    voxel_resolution_z: Coordinate
    user_id: UserId = None
    table_metadata: ReferenceLink | None = None
    reference_table: ShortText | None = None
    track_target_id_updates: Flag | None = None
    flat_segmentation_source: ShortText | None = None
    read_permission: ShortText | None = None
    write_permission: ShortText | None = None
    notice_text: Text | None = None


class CreateTable(_Body):
    table_name: ShortText
    schema_type: ShortText
    metadata: CreateMetadata


class UpdateMetadata(_Body):
    """The metadata fields an owner can change (``user_id`` hands the table over)."""

    where: ClassVar[str] = "metadata"

    description: Text | None = None
    flat_segmentation_source: ShortText | None = None
    read_permission: ShortText | None = None
    write_permission: ShortText | None = None
    user_id: UserId = None
    notice_text: Text | None = None


class UpdateTable(_Body):
    table_name: Name
    metadata: UpdateMetadata = UpdateMetadata()


def _rows(value: Any) -> list:
    if not isinstance(value, list):
        raise invalid("invalid_body", 'Send {"annotations": [<annotation>, …]}: a list of annotations.')
    return value


Rows = Annotated[
    list[Any],
    BeforeValidator(_rows),
    WithJsonSchema({"type": "array", "items": {"type": "object", "description": "an annotation, nested as its schema says"}, "maxItems": MAX_INSERT}),
]


class AnnotationRows(_Body):
    """Annotations to insert, or (each with the ``id`` it replaces) to update; checked against the
    table's schema by the service, which reports every bad row at once."""

    annotations: Rows


class AnnotationIds(_Body):
    annotation_ids: row_id_list(MAX_IDS)


# -- tables ------------------------------------------------------------------------------------
@router.get(_path("tables"))
def list_tables(
    aligned_volume_name: AlignedVolume,
    request: Request,
    timestamp: Annotated[Moment, Query(description="the tables that existed then (default: now)")] = None,
    context: AuthContext = Depends(current_context),
) -> list[str]:
    service = _service(request, context, aligned_volume_name, "view")
    return service.table_names(aligned_volume_name, timestamp=timestamp)


@router.post(_path("tables"), response_class=Response, responses={200: {"description": "the new table's name", "content": {"text/html": {}}}})
async def create_table(aligned_volume_name: AlignedVolume, body: CreateTable, request: Request, context: AuthContext = Depends(current_context)) -> Response:
    meta = body.metadata
    link = meta.table_metadata or ReferenceLink()
    service = await run_in_threadpool(_service, request, context, aligned_volume_name, "edit")
    await run_in_threadpool(
        service.create_table,
        aligned_volume_name,
        body.table_name,
        body.schema_type,
        description=meta.description,
        voxel_resolution=[meta.voxel_resolution_x, meta.voxel_resolution_y, meta.voxel_resolution_z],
        user_id=meta.user_id if meta.user_id is not None else _user(context),
        reference_table=link.reference_table if link.reference_table is not None else meta.reference_table,
        track_target_id_updates=link.track_target_id_updates if link.track_target_id_updates is not None else meta.track_target_id_updates,
        flat_segmentation_source=meta.flat_segmentation_source,
        read_permission=meta.read_permission or "PUBLIC",
        write_permission=meta.write_permission or "PRIVATE",
        notice_text=meta.notice_text,
    )
    return Response(body.table_name, media_type="text/html")


@router.put(_path("tables"))
async def update_table(aligned_volume_name: AlignedVolume, body: UpdateTable, request: Request, context: AuthContext = Depends(current_context)) -> JSONResponse:
    fields: dict[str, Any] = body.metadata.model_dump(exclude_unset=True, exclude={"user_id"})
    if body.metadata.user_id is not None:
        fields["owner"] = body.metadata.user_id
    service = await run_in_threadpool(_service, request, context, aligned_volume_name, "edit")
    updated = await run_in_threadpool(
        lambda: service.update_table_metadata(aligned_volume_name, body.table_name, _user(context), admin=context.identity.admin, **fields)
    )
    return JSONResponse(updated)


@router.get(_path("table_info"))
def table_metadata(aligned_volume_name: AlignedVolume, table_name: TableName, request: Request, context: AuthContext = Depends(current_context)) -> JSONResponse:
    found = _service(request, context, aligned_volume_name, "view").table_metadata(aligned_volume_name, table_name)
    return JSONResponse(found, headers=_notice(found))


@router.delete(_path("table_info"))
def delete_table(aligned_volume_name: AlignedVolume, table_name: TableName, request: Request, context: AuthContext = Depends(current_context)) -> bool:
    service = _service(request, context, aligned_volume_name, "edit")
    service.delete_table(aligned_volume_name, table_name, _user(context), admin=context.identity.admin)
    return True


@router.get(_path("table_count"))
def count(aligned_volume_name: AlignedVolume, table_name: TableName, request: Request, context: AuthContext = Depends(current_context)) -> int:
    service = _service(request, context, aligned_volume_name, "view")
    service.authorize(aligned_volume_name, table_name, context.identity, "read")
    return service.count(aligned_volume_name, table_name)


# -- annotations -------------------------------------------------------------------------------
QueryIds = Annotated[row_id_list(), Query(min_length=1, description="the annotations to get: 1,2,3")]


@router.get(_path("annotations"))
def get_annotations(
    aligned_volume_name: AlignedVolume, table_name: TableName, annotation_ids: QueryIds, request: Request, context: AuthContext = Depends(current_context)
) -> JSONResponse:
    service = _service(request, context, aligned_volume_name, "view")
    found = service.authorize(aligned_volume_name, table_name, context.identity, "read")
    return JSONResponse(service.get(aligned_volume_name, table_name, annotation_ids), headers=_notice(found))


async def _writer(request: Request, context: AuthContext, aligned_volume: str, table_name: str) -> AnnotationService:
    service = await run_in_threadpool(_service, request, context, aligned_volume, "edit")
    await run_in_threadpool(service.authorize, aligned_volume, table_name, context.identity, "write")
    return service


@router.post(_path("annotations"))
async def insert_annotations(
    aligned_volume_name: AlignedVolume, table_name: TableName, body: AnnotationRows, request: Request, context: AuthContext = Depends(current_context)
) -> list[int]:
    service = await _writer(request, context, aligned_volume_name, table_name)
    return await run_in_threadpool(service.insert, aligned_volume_name, table_name, body.annotations)


@router.put(_path("annotations"))
async def update_annotations(
    aligned_volume_name: AlignedVolume, table_name: TableName, body: AnnotationRows, request: Request, context: AuthContext = Depends(current_context)
) -> dict[str, int]:
    service = await _writer(request, context, aligned_volume_name, table_name)
    mapping = await run_in_threadpool(service.update, aligned_volume_name, table_name, body.annotations)
    return {str(old): new for old, new in mapping.items()}


@router.delete(_path("annotations"))
async def delete_annotations(
    aligned_volume_name: AlignedVolume, table_name: TableName, body: AnnotationIds, request: Request, context: AuthContext = Depends(current_context)
) -> list[int]:
    service = await _writer(request, context, aligned_volume_name, table_name)
    return await run_in_threadpool(service.delete, aligned_volume_name, table_name, body.annotation_ids)


# -- importing a file into a table ---------------------------------------------------------------
IMPORT_PATH = re.compile("".join("[^/]+" if part.startswith("{") else re.escape(part) for part in re.split(r"(\{[^}]+\})", _path("table_import"))))
UPLOAD_WRITE = 1 << 20  # bytes gathered before each write of the streamed body to disk


def _resolution(value: Any) -> list[float] | None:
    if isinstance(value, list) and len(value) == 1:  # one query parameter: x,y,z
        value = value[0]
    if value is None or value == "":
        return None
    parts = value if isinstance(value, list) else str(value).strip("[]").split(",")
    if len(parts) != 3:
        raise invalid("bad_number", f"voxel_resolution must be three numbers in nm, e.g. 4,4,40; got {str(value)[:80]!r}.")
    try:
        numbers = [float(v) for v in parts]
    except (TypeError, ValueError):
        raise invalid("bad_number", f"voxel_resolution must be three numbers in nm, e.g. 4,4,40; got {str(value)[:80]!r}.") from None
    if not all(0 < v <= 1e9 for v in numbers):
        raise invalid("bad_number", f"voxel_resolution must be three positive numbers in nm; got {str(value)[:80]!r}.")
    return numbers


def _file_name(value: str) -> str:
    name = FilePath(value).name
    if name in ("", ".", "..") or name != value.strip():
        raise invalid("bad_text", f"file_name must be a plain file name such as synapses.csv.gz; got {value[:80]!r}.")
    return name


Resolution = Annotated[
    list[float] | None,
    BeforeValidator(_resolution),
    WithJsonSchema({"type": "string", "pattern": r"^[0-9.e+]+,[0-9.e+]+,[0-9.e+]+$", "maxLength": 100, "example": "4,4,40"}),
]
FileName = Annotated[Name, AfterValidator(_file_name)]
IMPORT_BODY = binary_body(
    "The file to import, streamed: CSV with a header row (optionally gzip-compressed), Parquet, or Feather/Arrow IPC "
    "(its format is told by file_name); with header, a CAVE static-export data file (no header row)."
)


async def _save_body(request: Request, path: FilePath) -> None:
    """The request body, streamed to ``path`` (memory holds one write's worth)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as sink:
        pending = bytearray()
        try:
            async for chunk in request.stream():
                pending += chunk
                if len(pending) >= UPLOAD_WRITE:
                    await run_in_threadpool(sink.write, bytes(pending))
                    pending.clear()
        except ClientDisconnect:
            raise BadRequest("The upload ended before the whole file arrived; nothing was imported.", code="incomplete_upload") from None
        if pending:
            await run_in_threadpool(sink.write, bytes(pending))


@router.post(_path("table_import"), openapi_extra=IMPORT_BODY, responses={202: {"description": "the import is still running: its job to follow"}})
async def import_table(
    aligned_volume_name: AlignedVolume,
    table_name: TableName,
    request: Request,
    schema: Annotated[ShortText, Query(description="the table's schema (the existing table's, or the new table's)")],
    file_name: Annotated[FileName, Query(description="the file's name; its ending tells the format: .csv, .csv.gz, .parquet, .feather, .arrow")],
    description: Annotated[Text | None, Query(description="what the table holds (required when the import creates it)")] = None,
    voxel_resolution: Annotated[Resolution, Query(description="nm per voxel of the positions, x,y,z (required when the import creates the table)")] = None,
    reference_table: Annotated[ShortText | None, Query(description="the table target_id points into (a new table of a reference schema)")] = None,
    columns: Annotated[text(10_000) | None, Query(description="renames NEW=OLD,… of the file's columns to the schema's")] = None,
    on_error: Annotated[Literal["reject", "skip"], Query(description="reject: import nothing when any row is bad; skip: leave bad rows out")] = "reject",
    header: Annotated[text(65_536) | None, Query(description="the static-export header file's text (column,postgres_type lines) when the body is a static-export data file")] = None,
    wait_s: Annotated[float, Query(ge=0, le=3600, description="on a server that runs no jobs itself: seconds to wait for the import before answering 202 with its job")] = 600,
    context: AuthContext = Depends(current_context),
) -> JSONResponse:
    """Rows of an uploaded file into a live annotation table, created when missing: the owner of an
    existing table or an admin of its dataset; anyone with edit permission creates a new one.

    The body is saved in the data directory, then imported as a job: by this request's thread
    when this process runs jobs, else by `opencave worker` processes, answering 202 with the job
    to follow when that takes longer than ``wait_s``."""
    runtime: Runtime = runtime_of(request)
    dataset = await run_in_threadpool(runtime.identities.require, context, "edit", NAMESPACE, aligned_volume_name)
    importer = runtime.table_imports
    await run_in_threadpool(importer.authorize, aligned_volume_name, table_name, context.identity, dataset)
    renames = parse_renames(columns)
    user = _user(context)
    options = import_options(
        schema=schema,
        user_id=user,
        description=description,
        voxel_resolution=voxel_resolution,
        reference_table=reference_table,
        renames=renames,
        on_error=on_error,
    )
    work = await run_in_threadpool(new_upload, importer, runtime.jobs, table_name)
    try:
        await _save_body(request, importer.upload_path(work, file_name))
        payload = upload_payload(aligned_volume_name, table_name, work, file_name, header, options)
    except BaseException:
        await run_in_threadpool(shutil.rmtree, work, True)
        raise
    job = await runtime.job_runner.run_for_request(IMPORT_TABLE, payload, user, wait_s)  # from here the job owns the upload
    if not job.done:
        message = f"The rows are being imported; follow the import at /jobs/api/v1/jobs/{job.id}."
        return JSONResponse({"job": job.to_json(), "message": message}, status_code=202)
    if job.error is not None:
        job.error.raise_()
    return JSONResponse(job.result)
