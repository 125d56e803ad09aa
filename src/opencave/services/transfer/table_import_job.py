"""Table imports as jobs (``import.table``): the arguments a job carries and the upload folders it owns.

An import of files names them in its arguments as absolute local paths or URLs, read by
whichever process runs the job. An upload names the folder under ``<data dir>/imports/uploads``
that the request streamed its body into, by name only: every process that runs jobs shares the
data directory (wherever it is mounted), and no server path reaches the uploader through the job.
The job removes its upload folder when it ends, done or failed. A folder that no queued or
running job names and that nobody wrote to for ``UPLOAD_GRACE_S`` (an upload cut off with its
process, a job cancelled or given up before it ran) is removed when the next upload starts.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from opencave.errors import BadRequest, OpencaveError
from opencave.services.jobs.progress import Step
from opencave.services.jobs.queue import QUEUED, RUNNING, JobQueue
from opencave.services.jobs.runner import Progress
from opencave.services.transfer.inputs import is_url, shared_name
from opencave.services.transfer.table_import import UPLOADS, TableImporter

IMPORT_TABLE = "import.table"
UPLOAD_FOLDERS = "uploads"  # under the importer's work root (data dir/imports)
UPLOAD_GRACE_S = 6 * 3600.0  # an unnamed upload folder untouched this long is abandoned
ACTIVE_LISTED = 100_000  # queued and running import jobs read when looking for abandoned uploads


def import_options(
    *,
    schema: str,
    user_id: str,
    description: str | None = None,
    voxel_resolution: Sequence[float] | None = None,
    reference_table: str | None = None,
    renames: Mapping[str, str] | None = None,
    on_error: str = "reject",
) -> dict[str, Any]:
    """The keyword arguments of ``TableImporter.import_table`` as a job carries them."""
    return {
        "schema": schema,
        "user_id": str(user_id),
        "description": description,
        "voxel_resolution": None if voxel_resolution is None else [float(v) for v in voxel_resolution],
        "reference_table": reference_table,
        "renames": dict(renames or {}),
        "on_error": on_error,
    }


def files_payload(datastack: str, table_name: str, files: Sequence[str], options: dict[str, Any]) -> dict[str, Any]:
    """Arguments of a job importing ``files`` (named as on a command line in this process's
    working directory) into ``table_name`` of ``datastack``. Files given relative are named as
    given in the job's messages (``relative_to``), wherever it runs."""
    relative = any(not (is_url(f) or f.startswith("file://") or os.path.isabs(os.path.expanduser(f))) for f in files)
    return {
        "datastack": datastack,
        "table": table_name,
        "files": [shared_name(f) for f in files],
        "relative_to": os.getcwd() if relative else None,
        "options": options,
    }


def upload_payload(aligned_volume: str, table_name: str, folder: Path, file_name: str, header: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """Arguments of a job importing the file uploaded into ``folder`` (from ``new_upload``)."""
    return {
        "aligned_volume": aligned_volume,
        "table": table_name,
        "upload": {"folder": folder.name, "file_name": file_name, "header": header},
        "options": options,
    }


# -- upload folders ------------------------------------------------------------------------------
def upload_root(importer: TableImporter) -> Path:
    return importer.work_root / UPLOAD_FOLDERS


def new_upload(importer: TableImporter, queue: JobQueue, table_name: str) -> Path:
    """A fresh folder for an upload (its body goes to ``importer.upload_path``), after removing
    abandoned ones; a job given its name removes it, else its caller does."""
    root = upload_root(importer)
    remove_abandoned_uploads(root, queue)
    folder = root / f"{datetime.now(timezone.utc):%Y%m%d%H%M%S%f}-{secrets.token_hex(4)}-{table_name[:60]}"
    folder.mkdir(parents=True)
    return folder


def remove_abandoned_uploads(root: Path, queue: JobQueue, now: float | None = None) -> list[Path]:
    """Remove the upload folders no queued or running import job names, last written more than
    ``UPLOAD_GRACE_S`` ago (so an upload still streaming in keeps its folder); the removed ones."""
    folders = [f for f in root.iterdir() if f.is_dir()] if root.is_dir() else []
    if not folders:
        return []
    named = {
        (job.payload.get("upload") or {}).get("folder")
        for status in (QUEUED, RUNNING)
        for job in queue.list(status=status, kind=IMPORT_TABLE, limit=ACTIVE_LISTED)
    }
    cutoff = (time.time() if now is None else now) - UPLOAD_GRACE_S
    removed = []
    for folder in folders:
        if folder.name not in named and _last_written(folder) < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _last_written(folder: Path) -> float:
    latest = 0.0
    for directory, _, files in os.walk(folder):
        for path in [directory, *(os.path.join(directory, f) for f in files)]:
            try:
                latest = max(latest, os.stat(path).st_mtime)
            except OSError:  # removed meanwhile
                pass
    return latest


def _upload_folder(importer: TableImporter, name: str) -> Path:
    if not name or Path(name).name != name or name in (".", ".."):
        raise BadRequest(f"{name!r} does not name an upload folder.", code="invalid_upload")
    return upload_root(importer) / name


def _start_afresh(work: Path) -> None:
    """Remove what an earlier start of the job left beside the upload (its staged files)."""
    for entry in work.iterdir() if work.is_dir() else ():
        if entry.name == UPLOADS:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


# -- the job -------------------------------------------------------------------------------------
def run_import(importer: TableImporter, payload: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Run the import a job's ``payload`` describes: what ``TableImport.to_json`` gives. Reading
    progress is reported in percent and row progress in rows, as ``Step``s."""
    options = dict(payload["options"])

    def rows(phase: str, done: int, total: int) -> None:
        progress(Step(phase, done, total, "%" if phase == "reading" else "rows"))

    upload = payload.get("upload")
    if upload is None:
        given_from = payload.get("relative_to")
        hidden = [f"{given_from}{os.sep}"] if given_from else []
        try:
            result = importer.import_into_datastack(payload["datastack"], payload["table"], payload["files"], say=progress, progress=rows, **options)
        except OpencaveError as error:
            _name_as_given(error, hidden)
            raise
        result.problems = [_shown(p, hidden) for p in result.problems]
        return result.to_json()
    work = _upload_folder(importer, upload["folder"])
    hidden = [f"{work / UPLOADS}{os.sep}", f"{work}{os.sep}"]
    try:
        _start_afresh(work)
        item = importer.uploaded(work, upload["file_name"], upload.get("header"))
        result = importer.import_table(payload["aligned_volume"], payload["table"], [item], work=work, say=progress, progress=rows, **options)
    except OpencaveError as error:
        _name_as_given(error, hidden)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result.to_json()


def _shown(text: str, hidden: list[str]) -> str:
    for prefix in hidden:
        text = text.replace(prefix, "")
    return text


def _name_as_given(error: OpencaveError, hidden: list[str]) -> None:
    """Let ``error`` name files as their importer gave them (no server folders)."""
    error.message = _shown(error.message, hidden)
    error.args = (error.message,)


__all__ = ["IMPORT_TABLE", "files_payload", "import_options", "new_upload", "remove_abandoned_uploads", "run_import", "upload_payload"]
