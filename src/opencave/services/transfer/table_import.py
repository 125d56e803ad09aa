"""Importing rows into a live annotation table from CSV, CSV.gz, Parquet, Feather or a static export.

Three steps, so that nothing is written unless everything fits:

1. stage (``staging.stage``): every row of the files read once, typed and checked against the
   schema; errors name the file, row and column.
2. check: the staged rows, a batch at a time — ids against the table's sequence, each bound
   point's supervoxel looked up from its position exactly as for rows posted through the API
   (a position outside the volume is a bad row), reference targets against the referenced
   table, ``valid`` decided by the schema's rule — written as the table's physical columns to a
   local Parquet file.
3. load: that file, a batch at a time, into the table in one transaction
   (``AnnotationService.load_batches``), so a failed or killed import leaves no rows and
   running it again adds each row once.

Root ids are never stored: they follow the chunkedgraph from the supervoxels, as for every live
row. Memory is bounded by the batch size whatever the table's size; the work directory (staged
files, uploads) is removed at the end.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from opencave.errors import BadRequest, Conflict, Forbidden, NotFound, OpencaveError
from opencave.services.annotation import AnnotationService, bulk, metadata
from opencave.services.annotation.layout import RowLayout, row_layout
from opencave.services.annotation.lookup import PointLookup
from opencave.services.annotation.payloads import MAX_EXPLICIT_ID
from opencave.services.auth import Identity
from opencave.services.info import InfoRegistry
from opencave.services.schemas import FieldKind, get_schema
from opencave.services.transfer.inputs import InputFile, format_of, header_name, input_file, resolve_files, static_export_file
from opencave.services.transfer.workspace import new_folder
from opencave.services.transfer.staging import SHOWN_PROBLEMS, OnError, RowsRejected, Staged, Target, connect, stage

BATCH_ROWS = 100_000
READING_POLL_S = 0.25
ON_ERROR = ("reject", "skip")
UPLOADS = "upload"  # the work directory's folder for uploaded files
Say = Callable[[str], None]
RowProgress = Callable[[str, int, int], None]  # ("reading", percent, 100) | ("checking" | "writing", rows done, rows in all)
CRUD_WRITTEN = ("id", "created", "deleted", "superceded_id")  # set by the load, not by the files


@dataclass
class TableImport:
    """What an import did (the upload endpoint answers ``to_json()``)."""

    aligned_volume: str
    table_name: str
    schema: str
    created: bool  # the table was created by this import
    rows: int  # rows imported
    skipped: int  # bad rows left out (--on-error skip)
    not_valid: int  # rows the files mark not valid, left out
    problems: list[str] = field(default_factory=list)  # the first bad rows: file, row, column, what
    first_id: int | None = None
    last_id: int | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "aligned_volume": self.aligned_volume,
            "table_name": self.table_name,
            "schema": self.schema,
            "created_table": self.created,
            "rows": self.rows,
            "skipped": self.skipped,
            "not_valid": self.not_valid,
            "problems": self.problems,
            "first_id": self.first_id,
            "last_id": self.last_id,
            "seconds": round(self.seconds, 3),
        }


def parse_renames(text: str | None) -> dict[str, str]:
    """``NEW=OLD,NEW2=OLD2`` (as ``--columns`` takes it) as {new name: column of the file}."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        new, sep, old = part.partition("=")
        if not sep or not new.strip() or not old.strip():
            raise BadRequest(f"columns takes NEW=OLD pairs separated by commas (e.g. size=syn_size); got {part.strip()!r}.", code="invalid_columns")
        if new.strip() in out:
            raise BadRequest(f"columns renames {new.strip()!r} twice.", code="invalid_columns")
        out[new.strip()] = old.strip()
    return out


@dataclass
class _Into:
    """The table rows go into, as far as checking them needs."""

    aligned_volume: str
    table_name: str
    schema: str
    layout: RowLayout
    lookup: PointLookup
    next_id: int
    reference_table: str | None
    exists: bool


@dataclass
class _Checked:
    path: Path
    rows: int = 0
    bad: int = 0
    explicit_ids: tuple[int, int] | None = None
    problems: list[str] = field(default_factory=list)


class TableImporter:
    """``import_table``: rows of files into a live annotation table, created when missing."""

    def __init__(self, annotations: AnnotationService, info: InfoRegistry, work_root: Path) -> None:
        self.annotations = annotations
        self.info = info
        self.work_root = Path(work_root)

    def new_workspace(self, table_name: str) -> Path:
        """A fresh work directory for one import (its staged files); the caller removes it.

        Named after the process, so the directories of imports whose process was killed are
        found and removed by the next import (as version imports name and remove theirs)."""
        return new_folder(self.work_root, f"table-{table_name[:60]}")

    @staticmethod
    def upload_path(work: Path, file_name: str) -> Path:
        """Where an uploaded file is put in a work directory (``file_name`` is a plain name)."""
        return work / UPLOADS / file_name

    @staticmethod
    def uploaded(work: Path, file_name: str, header: str | None = None) -> InputFile:
        """The uploaded file (at ``upload_path``) as an input named as the uploader named it; with
        ``header`` (a static-export header file's text) it is read as a static-export data file."""
        path = TableImporter.upload_path(work, file_name)
        if header is None:
            return input_file(path, file_name)
        if format_of(file_name) != "csv":
            raise BadRequest(f"header goes with a static-export data file (X.csv.gz); {file_name} is not a CSV file.", code="invalid_header")
        label = header_name(file_name)
        (path.parent / label).write_text(header, encoding="utf-8")
        return static_export_file(path, file_name, path.parent / label, label)

    @contextmanager
    def workspace(self, table_name: str) -> Iterator[Path]:
        """A fresh work directory removed afterwards, whatever happens."""
        work = self.new_workspace(table_name)
        try:
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)

    # -- who may import --------------------------------------------------------------------------
    def owner_of(self, aligned_volume: str, table_name: str) -> str | None:
        """The owner's user id of an existing table, None when there is no such table."""
        try:
            return str(self.annotations.table_metadata(aligned_volume, table_name)["user_id"])
        except NotFound as error:
            if error.code != "unknown_table":
                raise
            return None

    def authorize(self, aligned_volume: str, table_name: str, identity: Identity, dataset: str) -> None:
        """Into an existing table: its owner or an admin of its dataset (anyone with edit
        permission on the dataset may create a new table, and owns it)."""
        owner = self.owner_of(aligned_volume, table_name)
        if owner is None or identity.admin or str(identity.id) == owner:
            return
        if identity.has("admin", dataset) or dataset in identity.datasets_admin:
            return
        raise Forbidden(
            f"Only the owner of table '{table_name}' (user {owner}) or an admin of dataset '{dataset}' may import rows into it.",
            code="not_table_owner",
        )

    # -- importing -------------------------------------------------------------------------------
    def import_into_datastack(self, datastack: str, table_name: str, files: Sequence[str | Path | InputFile], **options: Any) -> TableImport:
        """``import_table`` into the aligned volume of ``datastack``."""
        return self.import_table(self.info.aligned_volume_of(datastack), table_name, files, **options)

    def import_table(
        self,
        aligned_volume: str,
        table_name: str,
        files: Sequence[str | Path | InputFile],
        *,
        schema: str,
        user_id: str,
        description: str | None = None,
        voxel_resolution: Sequence[float] | None = None,
        reference_table: str | None = None,
        renames: Mapping[str, str] | None = None,
        on_error: OnError = "reject",
        work: Path | None = None,
        say: Say | None = None,
        progress: RowProgress | None = None,
    ) -> TableImport:
        """Import every row of ``files`` into the table (created with ``schema``, ``description`` and
        ``voxel_resolution``, owned by ``user_id``, when it does not exist).

        ``on_error="reject"`` imports nothing when any row is bad (``RowsRejected`` names the first
        ones by file, row and column); ``"skip"`` leaves bad rows out and counts them.
        """
        if on_error not in ON_ERROR:
            raise BadRequest(f"on_error must be one of {list(ON_ERROR)}; got {on_error!r}.", code="invalid_on_error")
        if not files:
            raise BadRequest("Name at least one file to import.", code="missing_file")
        started = time.monotonic()
        into = self._target(aligned_volume, table_name, schema, description, voxel_resolution, reference_table)
        run = partial(self._run, into, files, user_id=user_id, description=description, voxel_resolution=voxel_resolution,
                      reference_table=reference_table, renames=renames, on_error=on_error, say=say, progress=progress, started=started)  # fmt: skip
        if work is None:
            with self.workspace(table_name) as own:
                return run(own)
        try:
            return run(work)
        except OpencaveError as error:  # files put in the work directory (uploads) are named as given
            error.message = error.message.replace(f"{work / UPLOADS}{os.sep}", "").replace(f"{work}{os.sep}", "")
            error.args = (error.message,)
            raise

    def _run(
        self,
        into: _Into,
        files: Sequence[str | Path | InputFile],
        work: Path,
        *,
        user_id: str,
        description: str | None,
        voxel_resolution: Sequence[float] | None,
        reference_table: str | None,
        renames: Mapping[str, str] | None,
        on_error: OnError,
        say: Say | None,
        progress: RowProgress | None,
        started: float,
    ) -> TableImport:
        say = say or (lambda message: None)
        progress = progress or (lambda phase, done, total: None)
        inputs = [item for f in files for item in ([f] if isinstance(f, InputFile) else resolve_files([str(f)], work / "download", say))]
        con = connect(work)
        try:
            target = Target.table(into.schema, keep_segmentation=False, id_required=False)
            with _reading_progress(con, len(inputs), say, progress) as said:
                # bad rows are counted here and refused after the next step, so that one answer names them all
                staged = stage(con, inputs, target, work / "staged", renames=dict(renames or {}), on_error="skip", say=said)
        finally:
            con.close()
        checked = self._check(into, staged, work / "rows.parquet", on_error, progress)
        result = TableImport(
            into.aligned_volume,
            into.table_name,
            into.schema,
            created=not into.exists,
            rows=0,
            skipped=staged.skipped + checked.bad,
            not_valid=staged.not_valid,
            problems=checked.problems,
        )
        create = None
        if not into.exists:
            create = dict(
                schema_type=into.schema,
                description=description or "",
                voxel_resolution=voxel_resolution,
                user_id=user_id,
                reference_table=reference_table,
            )
        if checked.rows or create is not None:
            say(f"writing {checked.rows:,} rows into {'a new table ' if create else ''}{into.table_name}")
            first, last = self.annotations.load_batches(
                into.aligned_volume,
                into.table_name,
                pq.ParquetFile(checked.path, pre_buffer=False).iter_batches(BATCH_ROWS),
                rows=checked.rows,
                explicit_ids=checked.explicit_ids,
                progress=lambda done: progress("writing", done, checked.rows),
                create=create,
            )
            if checked.rows:
                result.first_id, result.last_id = first, last
        result.rows = checked.rows
        result.seconds = time.monotonic() - started
        return result

    def _target(
        self,
        aligned_volume: str,
        table_name: str,
        schema: str,
        description: str | None,
        voxel_resolution: Sequence[float] | None,
        reference_table: str | None,
    ) -> _Into:
        """The table rows go into, or what creating it needs, checked before any file is read."""
        try:
            layout = row_layout(schema)
        except NotFound as error:
            raise BadRequest(f"{error.message} (--schema names the table's schema)", code="unknown_schema") from None
        try:
            found = self.annotations.table_metadata(aligned_volume, table_name, include_deleted=True)
        except NotFound as error:
            if error.code != "unknown_table":
                raise
            found = None
        if found is not None:
            if found["deleted"] is not None:
                raise Conflict(f"Table {table_name} was deleted; names of deleted tables stay reserved, so choose another name.", code="table_exists")
            if found["schema_type"] != schema:
                raise Conflict(
                    f"Table {table_name} exists with schema {found['schema_type']!r}, not {schema!r}; import rows of that schema "
                    "or choose another table name.",
                    code="schema_mismatch",
                )
            resolution = (found["voxel_resolution_x"], found["voxel_resolution_y"], found["voxel_resolution_z"])
            if voxel_resolution is not None and tuple(float(v) for v in voxel_resolution) != tuple(float(v) for v in resolution):
                raise BadRequest(
                    f"Table {table_name} holds positions in voxels of {list(resolution)} nm; give positions in that resolution "
                    "(leave out --voxel-resolution).",
                    code="invalid_resolution",
                )
            next_id = self.annotations.next_free_id(aligned_volume, table_name)
            return _Into(aligned_volume, table_name, schema, layout, self.annotations.point_lookup(aligned_volume, resolution), next_id, found["reference_table"], True)
        metadata.check_table_name(table_name)
        if description is None or not str(description).strip():
            raise BadRequest(
                f"Table {table_name} does not exist, so this import creates it: give it a description "
                "(what it holds, how it was made, whom to ask about it).",
                code="missing_description",
            )
        metadata.check_description(description)
        if voxel_resolution is None:
            raise BadRequest(
                f"Table {table_name} does not exist, so this import creates it: give the voxel resolution of its positions "
                "(nm per voxel, e.g. 4 4 40).",
                code="missing_voxel_resolution",
            )
        resolution = metadata.check_resolution(voxel_resolution)
        if layout.is_reference and not reference_table:
            raise BadRequest(f"Schema {schema!r} annotates rows of another table: give the reference table.", code="missing_reference_table")
        if reference_table and not layout.is_reference:
            raise BadRequest(f"Schema {schema!r} is not a reference schema, so it takes no reference table.", code="invalid_reference_table")
        return _Into(aligned_volume, table_name, schema, layout, self.annotations.point_lookup(aligned_volume, resolution), 1, reference_table, False)

    # -- step 2: ids, supervoxels, references, validity ------------------------------------------
    def _check(self, into: _Into, staged: Staged, out: Path, on_error: OnError, progress: RowProgress) -> _Checked:
        checked = _Checked(out, problems=list(staged.problems))
        explicit = _explicit_ids(staged)
        targets = np.sort(self.annotations.row_ids(into.aligned_volume, into.reference_table)) if into.reference_table else None
        written = [c for c in into.layout.arrow_schema if c.name not in CRUD_WRITTEN or (c.name == "id" and explicit)]
        schema = pa.schema(written)
        decide_valid = _valid_rule(into.schema)
        low, high = None, None
        done = 0
        bad_total = staged.skipped
        with pq.ParquetWriter(out, schema, compression="lz4") as writer:
            for file, label in zip(staged.files, staged.labels):
                for batch in pq.ParquetFile(file).iter_batches(BATCH_ROWS):
                    keep = pc.and_(pc.equal(batch.column("_bad"), 0), batch.column("valid"))
                    batch = batch.filter(keep)
                    n = batch.num_rows
                    if not n:
                        continue
                    bad = np.zeros(n, dtype=bool)
                    problems: list[tuple[np.ndarray, str, Callable[[int], str]]] = []
                    columns: dict[str, pa.Array] = {}
                    if explicit:
                        ids = batch.column("id")
                        missing = ids.is_null().to_numpy(zero_copy_only=False)
                        values = ids.fill_null(0).to_numpy()
                        problems.append((missing, "id", lambda i: "is empty, but other rows give ids: give every row an id or none"))
                        problems.append((~missing & (values < into.next_id), "id", lambda i, v=values: f"{v[i]} is below {into.next_id}, the table's next free id (ids given must be new)"))
                        problems.append((~missing & ((values > MAX_EXPLICIT_ID) | (values < 1)), "id", lambda i, v=values: f"{v[i]} is not between 1 and {MAX_EXPLICIT_ID}"))
                        columns["id"] = ids
                    for point in into.layout.points:
                        xyz = np.stack([batch.column(a).to_numpy(zero_copy_only=False).astype(np.float64) for a in point.axes], axis=1)
                        if point.supervoxel is None:
                            continue
                        found, null, outside = bulk.find_supervoxels(into.lookup, xyz)
                        where = into.lookup.describe_bounds()
                        problems.append(
                            (outside, point.name, lambda i, p=xyz: f"position {[float(v) for v in p[i]]} is outside the volume, which spans {where} in this table's voxels")
                        )
                        columns[point.supervoxel] = pa.array(found, mask=null)
                    if targets is not None and "target_id" in batch.schema.names:
                        given = batch.column("target_id")
                        values = given.fill_null(0).to_numpy()
                        present = ~given.is_null().to_numpy(zero_copy_only=False)
                        unknown = present & ~_member(values, targets)
                        problems.append((unknown, "target_id", lambda i, v=values: f"no annotation {v[i]} in table '{into.reference_table}'"))
                    for mask, column, what in problems:
                        bad |= mask
                        for i in np.flatnonzero(mask)[: SHOWN_PROBLEMS - len(checked.problems)]:
                            checked.problems.append(f"{label}, row {batch.column('_row')[int(i)].as_py()}, column {column}: {what(int(i))}")
                    columns["valid"] = pa.array(decide_valid(batch))
                    rows = pa.record_batch([columns[c.name] if c.name in columns else batch.column(c.name).cast(c.type) for c in written], schema=schema)
                    bad_total += int(bad.sum())
                    if bad.any():
                        rows = rows.filter(pa.array(~bad))
                    if on_error == "skip" or not bad_total:
                        writer.write_batch(rows)
                        checked.rows += rows.num_rows
                        if explicit and rows.num_rows:
                            bounds = pc.min_max(rows.column("id"))
                            low = min(bounds["min"].as_py(), low if low is not None else MAX_EXPLICIT_ID)
                            high = max(bounds["max"].as_py(), high if high is not None else 0)
                    done += n
                    progress("checking", done, staged.rows)
        checked.bad = bad_total - staged.skipped
        if bad_total and on_error == "reject":
            raise RowsRejected.naming(bad_total, f"cannot go into table {into.table_name}", checked.problems)
        if explicit and low is not None:
            checked.explicit_ids = (int(low), int(high))  # type: ignore[arg-type]
        return checked


@contextmanager
def _reading_progress(con: duckdb.DuckDBPyConnection, files: int, say: Say, progress: RowProgress) -> Iterator[Say]:
    """Progress of the files' reading, in percent, from DuckDB's progress of the running query
    (polled by a thread); the ``say`` it yields counts the files as staging names them."""
    con.execute("SET enable_progress_bar = true")
    con.execute("SET enable_progress_bar_print = false")
    state = {"file": -1, "best": 0.0}
    stop = threading.Event()

    def said(message: str) -> None:
        if message.lstrip().startswith("reading "):
            state["file"], state["best"] = state["file"] + 1, 0.0
        say(message)

    def poll() -> None:
        while not stop.wait(READING_POLL_S):
            state["best"] = max(state["best"], con.query_progress())
            if state["file"] >= 0:
                progress("reading", min(99, int((state["file"] + state["best"] / 100) / files * 100)), 100)

    thread = threading.Thread(target=poll, name="import-reading-progress", daemon=True)
    thread.start()
    try:
        yield said
    finally:
        stop.set()
        thread.join()
    progress("reading", 100, 100)


def _explicit_ids(staged: Staged) -> bool:
    """Whether the files give ids (some kept row has one): then every row must."""
    for file in staged.files:
        for batch in pq.ParquetFile(file).iter_batches(BATCH_ROWS, columns=["id", "_bad"]):
            if pc.any(pc.and_(pc.is_valid(batch.column("id")), pc.equal(batch.column("_bad"), 0))).as_py():
                return True
    return False


def _member(values: np.ndarray, sorted_targets: np.ndarray) -> np.ndarray:
    if not sorted_targets.size:
        return np.zeros(values.shape, dtype=bool)
    where = np.clip(np.searchsorted(sorted_targets, values), 0, sorted_targets.size - 1)
    return sorted_targets[where] == values


def _valid_rule(schema: str) -> Callable[[pa.RecordBatch], np.ndarray]:
    """``valid`` of each row as the API decides it for a posted annotation: by the schema's rule
    (cell types of a known classification system, …), from the row's top-level text fields (each
    distinct combination decided once); True for schemas without a rule."""
    definition = get_schema(schema)
    rule = definition.valid_rule
    fields = [f.name for f in definition.fields if f.kind is FieldKind.STRING]

    def decide(batch: pa.RecordBatch) -> np.ndarray:
        n = batch.num_rows
        if rule is None:
            return np.ones(n, dtype=bool)
        if not fields:
            return np.full(n, rule.apply({}).get("valid") is not False)
        seen: dict[tuple, bool] = {}
        out = np.empty(n, dtype=bool)
        for i, key in enumerate(zip(*(batch.column(f).to_pylist() for f in fields))):
            if key not in seen:
                seen[key] = rule.apply({f: v for f, v in zip(fields, key) if v is not None}).get("valid") is not False
            out[i] = seen[key]
        return out

    return decide


__all__ = ["TableImport", "TableImporter", "parse_renames"]
