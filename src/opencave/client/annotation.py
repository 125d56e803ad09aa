"""The annotation engine client (``client.annotation``): create annotation tables and add,
update, read and delete their annotations (the live, editable data that materialized
versions are frozen from).

Requests are caveclient 8.2.1's. Annotations are plain dicts nested as the table's schema
says (``{"pt": {"position": [x, y, z]}, "cell_type": "BC"}``); DataFrames with flat
``<point>_position`` columns are converted by ``process_position_columns``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import requests
from tqdm import tqdm

from ..wire.endpoints import ANNOTATION
from ..wire.json_encoding import dumps
from .auth import AuthClient
from .base import ServiceClient, handle_response
from .jobs import POLL_S, answer_or_job_result
from .query_frames import TIMESTAMP_FORMAT
from .session import Timeout
from .stage import StagedAnnotations


PERMISSIONS = ("PRIVATE", "GROUP", "PUBLIC")
JSON_HEADERS = {"Content-Type": "application/json"}


def _check_permission(kind: str, value: str | None) -> None:
    if value is not None and value not in PERMISSIONS:
        raise ValueError(f"{kind} must be one of PRIVATE GROUP or PUBLIC")


def _notice(notice_text: str) -> str:
    """ "none" in any case means "no notice", sent as an empty string."""
    return "" if notice_text.lower() == "none" else notice_text


def _static_header(name: str) -> str:
    """``X.csv.gz`` -> ``X_header.csv``: the header file a CAVE static export keeps beside its data."""
    for suffix in (".csv.gz", ".csv"):
        if name.endswith(suffix):
            return name[: -len(suffix)] + "_header.csv"
    return name


def _as_list(value: Any) -> Any:
    """A single item (a dict, or anything not iterable) as a one-element list."""
    if isinstance(value, dict):
        return [value]
    try:
        iter(value)
    except TypeError:
        return [value]
    return value


class AnnotationClient(ServiceClient):
    """Client of an annotation engine (``client.annotation``), API v2.

    Every method takes ``aligned_volume_name`` (default: the client's). The schema client
    (for ``stage_annotations``) is ``schema_client``, else the CAVEclient's.
    """

    service = ANNOTATION

    def __init__(
        self,
        server_address: str | None = None,
        aligned_volume_name: str | None = None,
        auth_client: AuthClient | None = None,
        api_version: int | str = "latest",
        verify: bool | str = True,
        max_retries: int | None = None,
        pool_maxsize: int | None = None,
        pool_block: bool | None = None,
        over_client: Any = None,
        schema_client: Any = None,
        timeout: Timeout | None = None,
    ):
        super().__init__(
            server_address,
            auth_client,
            api_version,
            verify=verify,
            max_retries=max_retries,
            pool_maxsize=pool_maxsize,
            pool_block=pool_block,
            over_client=over_client,
            timeout=timeout,
        )
        self._aligned_volume_name = aligned_volume_name
        if schema_client is None and over_client is not None:
            schema_client = over_client.schema
        self._schema_client = schema_client

    @property
    def aligned_volume_name(self) -> str | None:
        """The aligned volume whose tables this client works with."""
        return self._aligned_volume_name

    def _table_url(self, endpoint: str, aligned_volume_name: str | None, table_name: str | None = None) -> str:
        volume = self.aligned_volume_name if aligned_volume_name is None else aligned_volume_name
        return self._url(endpoint, aligned_volume_name=volume, table_name=table_name)

    # -- tables --------------------------------------------------------------------------

    def get_tables(self, aligned_volume_name: str | None = None, timestamp: datetime | None = None) -> list[str]:
        """Names of the annotation tables, as of ``timestamp`` if given.

        caveclient refuses ``timestamp`` always (its version gate needs a server version the
        annotation engine never reports); this client sends it. Note that upstream engines
        ignore it and list the current tables.
        """
        params = {"timestamp": timestamp.strftime(TIMESTAMP_FORMAT)} if timestamp is not None else {}
        url = self._table_url("tables", aligned_volume_name)
        return handle_response(self.session.get(url, params=params))

    def get_annotation_count(self, table_name: str, aligned_volume_name: str | None = None) -> int:
        """Number of rows of a table (deleted and superseded rows included)."""
        return handle_response(self.session.get(self._table_url("table_count", aligned_volume_name, table_name)))

    def get_table_metadata(self, table_name: str, aligned_volume_name: str | None = None) -> dict[str, Any]:
        """A table's metadata, with ``voxel_resolution: [x, y, z]`` in place of
        ``voxel_resolution_x/y/z`` (which the server must send)."""
        metadata = handle_response(self.session.get(self._table_url("table_info", aligned_volume_name, table_name)))
        metadata["voxel_resolution"] = [metadata.pop(f"voxel_resolution_{axis}") for axis in "xyz"]
        return metadata

    def delete_table(self, table_name: str, aligned_volume_name: str | None = None) -> Any:
        """Mark a table deleted (its owner or an admin only); returns the server's answer."""
        return handle_response(self.session.delete(self._table_url("table_info", aligned_volume_name, table_name)))

    def create_table(
        self,
        table_name: str,
        schema_name: str,
        description: str,
        voxel_resolution: list[float],
        reference_table: str | None = None,
        track_target_id_updates: bool | None = None,
        flat_segmentation_source: str | None = None,
        user_id: int | None = None,
        aligned_volume_name: str | None = None,
        write_permission: str = "PRIVATE",
        read_permission: str = "PUBLIC",
        notice_text: str | None = None,
    ) -> requests.Response:
        """Create a table of annotations of type ``schema_name``.

        ``description`` should say what the table holds, who made it and whom to ask.
        ``voxel_resolution`` (nm per voxel) is the unit of the positions uploaded. A reference
        schema needs ``reference_table``, the table its annotations point at;
        ``track_target_id_updates`` makes references follow updates of their targets.
        Permissions are PRIVATE, GROUP or PUBLIC; ``notice_text`` is shown to readers.
        Returns the HTTP response (as caveclient does).
        """
        _check_permission("read_permission", read_permission)
        _check_permission("write_permission", write_permission)
        metadata: dict[str, Any] = {
            "description": description,
            "voxel_resolution_x": float(voxel_resolution[0]),
            "voxel_resolution_y": float(voxel_resolution[1]),
            "voxel_resolution_z": float(voxel_resolution[2]),
            "read_permission": read_permission,
            "write_permission": write_permission,
        }
        if user_id is not None:
            metadata["user_id"] = user_id
        if notice_text is not None:
            metadata["notice_text"] = _notice(notice_text)
        if reference_table is not None:
            metadata["table_metadata"] = {
                "reference_table": reference_table,
                "track_target_id_updates": track_target_id_updates,
            }
        if flat_segmentation_source is not None:
            metadata["flat_segmentation_source"] = flat_segmentation_source
        data = {"schema_type": schema_name, "table_name": table_name, "metadata": metadata}
        response = self.session.post(self._table_url("tables", aligned_volume_name), json=data)
        return handle_response(response, as_json=False)

    def update_metadata(
        self,
        table_name: str,
        description: str | None = None,
        flat_segmentation_source: str | None = None,
        read_permission: str | None = None,
        write_permission: str | None = None,
        user_id: int | None = None,
        notice_text: str | None = None,
        aligned_volume_name: str | None = None,
    ) -> Any:
        """Change the given metadata fields of a table (None leaves a field as it is).

        ``notice_text`` "" or "none" (any case) removes the notice. Giving the table to
        another ``user_id`` may lock you out of it.
        """
        _check_permission("read_permission", read_permission)
        _check_permission("write_permission", write_permission)
        metadata: dict[str, Any] = {}
        if description is not None:
            metadata["description"] = description
        if read_permission is not None:
            metadata["read_permission"] = read_permission
        if write_permission is not None:
            metadata["write_permission"] = write_permission
        if flat_segmentation_source is not None:
            metadata["flat_segmentation_source"] = flat_segmentation_source
        if user_id is not None:
            metadata["user_id"] = user_id
        if notice_text is not None:
            metadata["notice_text"] = _notice(notice_text)
        data = {"table_name": table_name, "metadata": metadata}
        return handle_response(self.session.put(self._table_url("tables", aligned_volume_name), json=data))

    # -- annotations -------------------------------------------------------------------

    def get_annotation(
        self, table_name: str, annotation_ids: int | Iterable[int], aligned_volume_name: str | None = None
    ) -> list[dict[str, Any]]:
        """Annotations by id (ids not in the table are left out)."""
        ids = ",".join(str(a) for a in _as_list(annotation_ids))
        url = self._table_url("annotations", aligned_volume_name, table_name)
        return handle_response(self.session.get(url, params={"annotation_ids": ids}))

    def _send_annotations(self, method: str, table_name: str, data: Any, aligned_volume_name: str | None) -> Any:
        url = self._table_url("annotations", aligned_volume_name, table_name)
        body = dumps({"annotations": _as_list(data)})
        return handle_response(self.session.request(method, url, data=body, headers=JSON_HEADERS))

    def post_annotation(
        self, table_name: str, data: dict[str, Any] | list[dict[str, Any]], aligned_volume_name: str | None = None
    ) -> list[int]:
        """Add annotations (one dict or a list, nested as the schema says); returns their new
        ids. To change or remove annotations see ``update_annotation`` and
        ``delete_annotation``."""
        return self._send_annotations("POST", table_name, data, aligned_volume_name)

    @staticmethod
    def process_position_columns(
        df: pd.DataFrame, position_columns: Iterable[str] | Mapping[str, str] | None
    ) -> list[dict[str, Any]]:
        """Rows of ``df`` as annotations, position columns nested as ``{"position": value}``.

        ``position_columns``: None → every column ending ``_position``; a list, array or
        Index of columns → each goes to the field named before its last ``_``
        (``pt_position`` → ``pt``); a dict → ``{column: field}``.
        """
        if position_columns is None:
            position_columns = [c for c in df.columns if c.endswith("_position")]
        if isinstance(position_columns, (list, np.ndarray, pd.Index)):
            position_columns = {c: c.rsplit("_", 1)[0] for c in position_columns}
        if not isinstance(position_columns, dict):
            raise ValueError("position_columns must be a list, dict or None")  # noqa: TRY004 - caveclient's type
        records = df.to_dict(orient="records")
        for record in records:
            for column, field_name in position_columns.items():
                record[field_name] = {"position": record.pop(column)}
        return records

    def post_annotation_df(
        self,
        table_name: str,
        df: pd.DataFrame,
        position_columns: Iterable[str] | Mapping[str, str] | None,
        aligned_volume_name: str | None = None,
    ) -> list[int]:
        """``post_annotation`` for the rows of a DataFrame (see ``process_position_columns``)."""
        data = self.process_position_columns(df, position_columns)
        return self.post_annotation(table_name, data, aligned_volume_name=aligned_volume_name)

    def update_annotation(
        self, table_name: str, data: dict[str, Any] | list[dict[str, Any]], aligned_volume_name: str | None = None
    ) -> dict[str, int]:
        """Replace annotations (each dict with the ``id`` it replaces, and all its fields).

        The old rows are kept as superseded and the new ones get new ids; returns
        ``{"<old id>": new id}``.
        """
        return self._send_annotations("PUT", table_name, data, aligned_volume_name)

    def update_annotation_df(
        self,
        table_name: str,
        df: pd.DataFrame,
        position_columns: Iterable[str] | Mapping[str, str] | None,
        aligned_volume_name: str | None = None,
    ) -> dict[str, int]:
        """``update_annotation`` for the rows of a DataFrame (with an ``id`` column)."""
        data = self.process_position_columns(df, position_columns)
        return self.update_annotation(table_name, data, aligned_volume_name=aligned_volume_name)

    def delete_annotation(
        self, table_name: str, annotation_ids: int | Iterable[int], aligned_volume_name: str | None = None
    ) -> Any:
        """Mark annotations deleted (rows are kept, so deletions can be traced)."""
        url = self._table_url("annotations", aligned_volume_name, table_name)
        body = dumps({"annotation_ids": _as_list(annotation_ids)})
        return handle_response(self.session.delete(url, data=body, headers=JSON_HEADERS))

    def import_table(
        self,
        table_name: str,
        path_or_file: str | os.PathLike | BinaryIO,
        *,
        schema: str,
        description: str | None = None,
        voxel_resolution: Sequence[float] | None = None,
        columns: Mapping[str, str] | str | None = None,
        on_error: str = "reject",
        reference_table: str | None = None,
        file_name: str | None = None,
        aligned_volume_name: str | None = None,
        timeout: Timeout = (60.0, None),
        wait_s: float | None = None,
        poll_s: float = POLL_S,
        progress: bool = False,
    ) -> dict[str, Any]:
        """Import every row of a file into a table, streamed from disk (opencave servers only).

        The file is CSV with a header row (``.csv``, ``.csv.gz``), Parquet or Feather (told by
        its name, or ``file_name`` for an open file), or a static-export ``X.csv.gz`` whose
        ``X_header.csv`` lies next to it. Positions come split (``pt_position_x``, …) or as one
        ``[x, y, z]`` column; ``columns`` renames the file's columns (``{new: old}``). The table
        is created (``schema``, ``description``, ``voxel_resolution``) when it does not exist.
        Every row is checked; with ``on_error="reject"`` nothing is imported when any row is bad
        (the error names the file, row and column), with ``"skip"`` bad rows are left out.
        Returns ``{"rows", "skipped", "problems", "first_id", "last_id", …}``. Importing into an
        existing table takes its owner or an admin of its dataset.

        The import is a job on the server. A server whose jobs run in `opencave worker`
        processes answers 202 with the job once ``wait_s`` seconds (its default: 600) have
        passed; the client then follows the job, polling every ``poll_s`` seconds at most and
        printing its progress to stderr only with ``progress``, and returns the same summary,
        or raises ``JobFailedError`` (a ``requests.HTTPError`` with the answer's ``status_code``
        and ``code``, e.g. 400 ``invalid_rows``) if the job fails.
        """
        if isinstance(columns, Mapping):
            columns = ",".join(f"{new}={old}" for new, old in columns.items())
        params: dict[str, Any] = {"schema": schema, "on_error": on_error}
        for key, value in (("description", description), ("columns", columns), ("reference_table", reference_table)):
            if value is not None:
                params[key] = value
        if voxel_resolution is not None:
            params["voxel_resolution"] = ",".join(repr(float(v)) for v in voxel_resolution)
        if wait_s is not None:
            params["wait_s"] = wait_s
        url = self._table_url("table_import", aligned_volume_name, table_name)
        headers = {"Content-Type": "application/octet-stream"}
        if hasattr(path_or_file, "read"):
            if not file_name:
                raise ValueError("give file_name (e.g. synapses.parquet) with an open file: its ending tells the format")
            params["file_name"] = file_name
            response = self.session.post(url, params=params, data=path_or_file, headers=headers, timeout=timeout)
        else:
            path = Path(os.fspath(path_or_file))
            params["file_name"] = file_name or path.name
            header = path.with_name(_static_header(path.name))
            if header != path and header.is_file():
                params["header"] = header.read_text(encoding="utf-8")
            with open(path, "rb") as handle:
                response = self.session.post(url, params=params, data=handle, headers=headers, timeout=timeout)
        return answer_or_job_result(response, self.session, self.server_address, poll_s=poll_s, progress=progress)

    # -- staging -----------------------------------------------------------------------

    def stage_annotations(
        self,
        table_name: str | None = None,
        schema_name: str | None = None,
        update: bool = False,
        id_field: bool = False,
        table_resolution: list[float] | None = None,
        annotation_resolution: list[float] | None = None,
    ) -> StagedAnnotations:
        """A ``StagedAnnotations`` for a table (its schema and resolution are looked up) or
        for a schema (``schema_name``; set ``table_name`` on it before uploading).

        ``update`` stages replacements of existing annotations (``id`` needed);
        ``annotation_resolution`` is the unit of the coordinates you will add.
        """
        if table_name is not None:
            metadata = self.get_table_metadata(table_name)
            schema_name = metadata["schema_type"]
            table_resolution = metadata["voxel_resolution"]
        elif schema_name is None:
            raise ValueError("Must specify either table name or schema name")
        if self._schema_client is None:
            raise ValueError("No schema client: pass schema_client= or use client.annotation of a CAVEclient")
        return StagedAnnotations(
            self._schema_client.schema_definition(schema_name),
            name=table_name if table_name is not None else schema_name,
            update=update,
            id_field=id_field,
            annotation_resolution=annotation_resolution,
            table_resolution=table_resolution,
            table_name=table_name,
        )

    def upload_staged_annotations(
        self,
        staged_annos: StagedAnnotations,
        aligned_volume_name: str | None = None,
        batch_size: int = 10_000,
        progress: bool = True,
        retries: int = 3,
    ) -> list[int] | dict[str, int]:
        """Upload the staged annotations not uploaded yet, in batches of ``batch_size``.

        Posts return the new ids in order; update stages the merged ``{"<old id>": new id}``.
        Each batch is tried up to ``retries`` times, sleeping 2, 4, ... s in between; the
        last error is raised, and batches already sent stay marked uploaded, so calling again
        resumes. At least one attempt is made (caveclient silently uploads nothing when
        ``retries`` < 1), and an answer that does not fit the batch is raised rather than
        retried (caveclient retries it, posting the batch again).
        """
        if staged_annos.table_name is None:
            raise ValueError("Only annotation guide objects with a specified table name can be used here")
        upload = self.update_annotation if staged_annos.is_update else self.post_annotation
        posted: list[int] = []
        updated: dict[str, int] = {}
        batches = staged_annos._annotation_batches(batch_size)
        for batch in tqdm(batches, desc="Annotation Batches", disable=not progress):
            data = [staged_annos._process_annotation(a) for a in batch]
            attempt = 0
            while True:
                try:
                    ids = upload(staged_annos.table_name, data, aligned_volume_name=aligned_volume_name)
                    break
                except Exception:
                    attempt += 1
                    if attempt >= retries:
                        raise
                    time.sleep(2**attempt)
            staged_annos._apply_upload_result(batch, ids)
            if staged_annos.is_update:
                updated.update(ids)
            else:
                posted.extend(ids)
        return updated if staged_annos.is_update else posted
