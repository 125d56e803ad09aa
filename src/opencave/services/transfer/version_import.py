"""Importing a released version as it was published: every table frozen with its root ids as given.

Sources: an opencave version package (``version.json`` beside Parquet datasets or a static
export), a CAVE static export (``{table}_merged.csv.gz`` + ``{table}_merged_header.csv``, views as
``{view}.csv.gz`` + ``{view}_header.csv``), or a folder of Parquet/Feather files, one per table;
in a local folder or at any fsspec/cloud-files URL (copied to a work directory first).

Everything is checked before the version is registered: every table is staged (read, typed and
validated) first; only then is the version numbered RUNNING, its files written sorted by id and
by each root column (as the materializer writes them), and published. A failure at any point
removes what was written, so a version is either complete or absent.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from opencave.errors import BadRequest, Conflict, NotFound
from opencave.services.materialize.clustering import ensure_version_clustered
from opencave.services.materialize.manifest import write_version_manifest
from opencave.services.materialize.materializer import discard_files
from opencave.services.materialize.versions import FrozenTable, Version, VersionRegistry, format_time
from opencave.services.schemas import get_schema
from opencave.services.transfer.inputs import (
    ARROW_OF_DUCKDB,
    InputFile,
    InputProblem,
    Remote,
    _quote,
    format_of,
    input_file,
    is_url,
    local_path,
    static_export_file,
    strip_suffix,
)
from opencave.services.transfer.package import MANIFEST, PARQUET_KEY, VersionPackage, entry_files, parse_manifest, read_package
from opencave.services.transfer.workspace import new_folder
from opencave.services.transfer.staging import (
    Kept,
    Staged,
    Target,
    check_unique_ids,
    connect,
    ids_ascending,
    infer_schema,
    source_columns,
    stage,
    write_kept,
)
from opencave.storage.snapshots import COMPRESSION, ROW_GROUP_ROWS

Progress = Callable[[str], None]
MERGED = "_merged"


@dataclass
class SourceTable:
    """One table or view of the source, with what is known about it before reading rows."""

    name: str
    kind: str  # "table" | "view"
    inputs: list[InputFile]
    schema: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Source:
    tables: list[SourceTable]
    package: VersionPackage | None
    where: str


def _say(progress: Progress | None) -> Progress:
    return progress or (lambda message: None)


# -- finding the tables of a source -------------------------------------------------------------------
def _local_copy(source: str, work: Path, say: Progress) -> Path:
    """A local directory holding the source (remote files are copied into ``work/download``)."""
    if not is_url(source):
        path = local_path(source)
        if not path.is_dir():
            raise InputProblem(f"{source}: no such directory", code="missing_file")
        return path
    remote = Remote(source)
    target = work / "download"
    names = remote.names()
    if MANIFEST in names or (not names and remote.exists(MANIFEST)):
        package = parse_manifest(remote.copy(MANIFEST, target, say).read_text(), source)
        for entry in package.tables:
            if package.files == "parquet":
                sub = Remote(f"{source.rstrip('/')}/{entry.path}")
                for name in sub.names():
                    if format_of(name) == "parquet":
                        sub.copy(name, target / entry.path, say)
            else:
                data = entry.path
                remote.copy(data, target, say)
                remote.copy(f"{strip_suffix(data)}_header.csv", target, say)
        return target
    if not names:
        raise InputProblem(f"{source}: cannot list its files and it has no {MANIFEST}; copy it locally first", code="unreadable_source")
    for name in names:
        if format_of(name) is not None:
            remote.copy(name, target, say)
    return target


def find_tables(directory: Path, label: str) -> Source:
    """The tables and views in ``directory`` (a version package, a static export or a folder of files)."""
    package = read_package(directory)
    if package is not None:
        tables = []
        for entry in package.tables:
            if package.files == "parquet":
                files = entry_files(directory, entry)
                if not files and entry.row_count:
                    raise InputProblem(f"{label}/{entry.path}: missing; the manifest lists it with {entry.row_count:,} rows", code="missing_file")
                inputs = [input_file(f, f"{label}/{f.relative_to(directory)}") for f in files]
            else:
                data = directory / entry.path
                header = f"{strip_suffix(entry.path)}_header.csv"
                inputs = [static_export_file(data, f"{label}/{entry.path}", directory / header, f"{label}/{header}")]
            tables.append(SourceTable(entry.name, entry.kind, inputs, entry.schema, dict(entry.metadata)))
        return Source(tables, package, label)
    tables = []
    names = sorted(p.name for p in directory.iterdir() if p.is_file())
    headers = {n for n in names if n.endswith("_header.csv")}
    for name in names:
        if name in headers or format_of(name) is None:
            continue
        stem = strip_suffix(name)
        path = directory / name
        if format_of(name) == "csv":
            header = f"{stem}_header.csv"
            if header not in headers:
                raise InputProblem(
                    f"{label}/{header}: missing; the static-export data file {name} has no header file naming its columns",
                    code="missing_header",
                )
            item = static_export_file(path, f"{label}/{name}", directory / header, f"{label}/{header}")
            if stem.endswith(MERGED):
                tables.append(SourceTable(stem[: -len(MERGED)], "table", [item]))
            else:
                tables.append(SourceTable(stem, "view", [item]))
        else:
            item = input_file(path, f"{label}/{name}")
            tables.append(SourceTable(stem, "table", [item], **_described(path)))
    for header in sorted(headers):
        stem = header[: -len("_header.csv")]
        if not any(strip_suffix(n) == stem for n in names if n not in headers):
            raise InputProblem(f"{label}/{header}: a header file whose data file {stem}.csv.gz is missing", code="missing_file")
    if not tables:
        raise InputProblem(f"{label}: holds no tables (no {MANIFEST}, no *_merged.csv.gz, no .parquet or .feather files)", code="missing_file")
    return Source(tables, None, label)


def _described(path: Path) -> dict[str, Any]:
    """Schema and metadata a Parquet file of an opencave package carries about itself."""
    if format_of(path.name) != "parquet":
        return {}
    import json

    with suppress(Exception):
        meta = pq.read_schema(path).metadata or {}
        if PARQUET_KEY in meta:
            entry = json.loads(meta[PARQUET_KEY])
            return {"schema": entry.get("schema"), "metadata": dict(entry.get("metadata") or {})}
    return {}


# -- writing a version ------------------------------------------------------------------------------
# As the materializer's files (LZ4, 65,536-row groups), without dictionary pages: DuckDB tries
# them on every column and gives up on ids and positions, a third of the write for nothing.
FROZEN_COPY = f"FORMAT parquet, COMPRESSION {COMPRESSION}, ROW_GROUP_SIZE {ROW_GROUP_ROWS}, DICTIONARY_SIZE_LIMIT 1000"


def _copy_sorted(con: duckdb.DuckDBPyConnection, select: str, order: Sequence[str], path: Path) -> None:
    """Write ``select`` sorted by ``order`` (empty: in order already) as a frozen Parquet file, atomically."""
    partial = path.with_name(path.name + f".partial-{os.getpid()}")
    keys = ", ".join(f'"{c}"' for c in order)
    # A sorted copy is written in parallel (its order is the ORDER BY's); one in file order, in order.
    con.execute(f"SET preserve_insertion_order = {'false' if order else 'true'}")
    try:
        con.execute(
            f"COPY ({select}{f' ORDER BY {keys}' if order else ''}) TO {_quote(partial)} ({FROZEN_COPY})"
        )
    finally:
        con.execute("SET preserve_insertion_order = true")
    _fsync(partial)
    os.replace(partial, path)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _move(source: Path, path: Path) -> None:
    """Move a finished file into a version's folder, atomically (copied first across devices)."""
    _fsync(source)
    try:
        os.replace(source, path)
    except OSError:  # another file system
        partial = path.with_name(path.name + f".partial-{os.getpid()}")
        shutil.copyfile(source, partial)
        _fsync(partial)
        os.replace(partial, path)


def _repeats_ids(con: duckdb.DuckDBPyConnection, rows: str) -> bool:
    return bool(con.execute(f"SELECT 1 FROM ({rows}) GROUP BY id HAVING count(*) > 1 LIMIT 1").fetchall())


def _resolution(table: SourceTable, given: Sequence[float] | None) -> tuple[float, float, float]:
    if given is not None:
        return tuple(float(v) for v in given)  # type: ignore[return-value]
    meta = table.metadata
    try:
        return (float(meta["voxel_resolution_x"]), float(meta["voxel_resolution_y"]), float(meta["voxel_resolution_z"]))
    except (KeyError, TypeError, ValueError):
        raise BadRequest(
            f"The voxel resolution of {table.name} is unknown; give --voxel-resolution X Y Z "
            "(the size in nm of one voxel of the positions in the files, e.g. 4 4 40).",
            code="missing_voxel_resolution",
        ) from None


def table_metadata(
    table: SourceTable, schema: str | None, aligned_volume: str, resolution: tuple[float, float, float], moment: datetime, datastack: str
) -> dict[str, Any]:
    """The metadata the materialize API answers for an imported table (given values kept)."""
    x, y, z = resolution
    if table.kind == "view":
        out: dict[str, Any] = {
            "table_name": table.name,
            "description": "",
            "datastack_name": datastack,
            "notice_text": None,
            "live_compatible": False,
        }
    else:
        stamp = format_time(moment)
        out = {
            "id": None,
            "schema_type": schema,
            "table_name": table.name,
            "valid": True,
            "created": stamp,
            "deleted": None,
            "user_id": None,
            "description": "",
            "notice_text": None,
            "reference_table": None,
            "flat_segmentation_source": None,
            "read_permission": "PUBLIC",
            "write_permission": "PRIVATE",
            "last_modified": stamp,
            "segmentation_source": None,
            "pcg_table_name": None,
            "last_updated": stamp,
            "annotation_table": table.name,
        }
    out.update(table.metadata)  # what the source says wins, empty values included
    out.update(voxel_resolution_x=x, voxel_resolution_y=y, voxel_resolution_z=z, table_name=table.name)
    if table.kind == "table":
        out.update(aligned_volume=aligned_volume, schema=schema, schema_type=schema, valid=True)
    return out


@dataclass
class Prepared:
    table: SourceTable
    schema: str | None
    target: Target
    staged: Staged | None  # None: every row was good, and ``kept`` holds them all
    kept: Kept | None = None  # the checked rows in file order, as a frozen file
    ids_ascending: bool = False  # in file order already: the id-sorted file needs no sort

    @property
    def rows(self) -> int:
        return self.kept.rows if self.kept is not None else self.staged.rows  # type: ignore[union-attr]

    def select(self, con: duckdb.DuckDBPyConnection) -> str:
        """SQL of the rows to write, in file order."""
        if self.kept is not None:
            return f"SELECT * FROM read_parquet({_quote(self.kept.file)})"
        assert self.staged is not None
        return self.staged.relation(self.target.names)


class VersionImporter:
    """``import_version``: a released version into the registry, checked completely first."""

    def __init__(self, registry: VersionRegistry, info: Any, access: Any, version_root: str | Path, work_root: Path) -> None:
        self.registry = registry
        self.info = info
        self.access = access
        self.version_root = str(version_root)  # a directory or a URL (``VersionFiles``)
        self.work_root = Path(work_root)

    def import_version(
        self,
        datastack: str,
        source: str | Path,
        *,
        version: int | None = None,
        timestamp: datetime | None = None,
        schemas: Mapping[str, str] | None = None,
        voxel_resolution: Sequence[float] | None = None,
        tables: Sequence[str] | None = None,
        renames: Mapping[str, Mapping[str, str]] | None = None,
        dataset: str | None = None,
        aligned_volume: str | None = None,
        image_source: str | None = None,
        segmentation_source: str | None = None,
        cluster: bool = True,
        progress: Progress | None = None,
    ) -> Version:
        """Import ``source`` as version ``version`` of ``datastack``. The version answers queries
        as soon as its id-sorted files are written; with ``cluster``, the copies clustered by root
        id that make selective queries fast are then built before returning (otherwise a server
        builds them; queries read the id-sorted files meanwhile)."""
        say = _say(progress)
        source = str(source)
        work = new_folder(self.work_root, f"version-{datastack[:60]}")
        try:
            directory = _local_copy(source, work, say)
            found = find_tables(directory, source)
            package = found.package
            number = version if version is not None else (package.version if package else None)
            moment = timestamp if timestamp is not None else (package.time_stamp if package else None)
            if number is None or moment is None:
                raise BadRequest(
                    f"{source} is a static export without a {MANIFEST}: give --version N and --timestamp T (when it was frozen).",
                    code="missing_version",
                )
            moment = moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
            chosen = self._chosen(found, tables, schemas or {})
            self._check_free(datastack, number)
            con = connect(work)
            try:
                prepared = self._stage_all(con, chosen, schemas or {}, renames or {}, work, say)
                volume = self._ensure_datastack(datastack, dataset, aligned_volume, image_source, segmentation_source, voxel_resolution, prepared, say)
                published = self._write(con, datastack, number, moment, volume, prepared, voxel_resolution, say)
            finally:
                con.close()
            if cluster:
                self._cluster(published.location, prepared, say)
            return published
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _cluster(self, location: str, prepared: list[Prepared], say: Progress) -> None:
        """The copies of each table sorted by each root-id column, which queries for a few
        neurons read instead of the whole table."""
        for item in prepared:
            if item.table.kind == "table" and item.target.layout.root_columns:
                say(f"clustering {item.table.name} by {', '.join(item.target.layout.root_columns)} for queries by root id")
                ensure_version_clustered(self.registry.files, location, f"{item.table.name}.parquet", item.target.layout.root_columns, say)

    # -- steps --------------------------------------------------------------------------------------
    @staticmethod
    def _chosen(found: Source, tables: Sequence[str] | None, schemas: Mapping[str, str]) -> list[SourceTable]:
        names = [t.name for t in found.tables]
        unknown = sorted(set(tables or []) - set(names)) + sorted(set(schemas) - set(names))
        if unknown:
            raise NotFound(f"{found.where} has no table(s) {sorted(set(unknown))}; it has {names}.", code="unknown_table")
        chosen = [t for t in found.tables if not tables or t.name in tables]
        return chosen

    def _check_free(self, datastack: str, number: int) -> None:
        with suppress(NotFound):
            self.registry.version(datastack, number, include_expired=True)
            raise Conflict(
                f"Version {number} of {datastack} exists already; import under another --version number or into another datastack.",
                code="version_exists",
            )

    def _stage_all(
        self,
        con: duckdb.DuckDBPyConnection,
        chosen: list[SourceTable],
        schemas: Mapping[str, str],
        renames: Mapping[str, Mapping[str, str]],
        work: Path,
        say: Progress,
    ) -> list[Prepared]:
        out = []
        for number, table in enumerate(chosen, 1):
            say(f"[{number}/{len(chosen)}] checking {table.kind} {table.name}")
            if table.kind == "view":
                target = self._view_target(con, table)
                schema = None
            else:
                schema = schemas.get(table.name) or table.schema or self._infer(con, table)
                get_schema(schema)  # NotFound naming the registry's schemas
                target = Target.table(schema)
            out.append(self._checked(con, table, schema, target, dict(renames.get(table.name, {})), work, say))
        return out

    @staticmethod
    def _checked(
        con: duckdb.DuckDBPyConnection, table: SourceTable, schema: str | None, target: Target, renames: dict[str, str], work: Path, say: Progress
    ) -> Prepared:
        """Every row of one table checked: written once as its frozen file when all are good
        (the common case), else staged, so bad rows are named and repeated ids found."""
        kept = write_kept(con, table.inputs, target, work / "kept" / f"{table.name}.parquet", FROZEN_COPY, renames=renames, say=say)
        if kept is not None:
            rows = f"SELECT * FROM read_parquet({_quote(kept.file)})"
            ascending = table.kind == "table" and ids_ascending(con, rows)
            if table.kind == "view" or ascending or not _repeats_ids(con, rows):
                say(f"  {kept.rows:,} rows")
                return Prepared(table, schema, target, None, kept, ascending)
            kept.file.unlink()  # repeated ids: staged below, where they are named
        staged = stage(con, table.inputs, target, work / "staged" / table.name, renames=renames, check_unique=False, direct=True, say=say)
        ascending = table.kind == "table" and staged.ids_ascending(con)  # ids that ascend are unique
        if table.kind == "table" and not ascending:
            check_unique_ids(con, staged)
        extra = f", {staged.not_valid:,} not valid left out" if staged.not_valid else ""
        say(f"  {staged.rows:,} rows{extra}")
        return Prepared(table, schema, target, staged, None, ascending)

    @staticmethod
    def _infer(con: duckdb.DuckDBPyConnection, table: SourceTable) -> str:
        first = table.inputs[0]
        return infer_schema(list(source_columns(con, first)), first.label)

    @staticmethod
    def _view_target(con: duckdb.DuckDBPyConnection, table: SourceTable) -> Target:
        first = table.inputs[0]
        types = first.typed_header if first.format == "cave-csv" else source_columns(con, first)
        columns = tuple((name, ARROW_OF_DUCKDB.get(kind, pa.string())) for name, kind in types.items() if name not in ("deleted",))
        return Target(columns=columns, schema=None, keep_segmentation=True, id_required=False)

    def _ensure_datastack(
        self,
        datastack: str,
        dataset: str | None,
        aligned_volume: str | None,
        image_source: str | None,
        segmentation_source: str | None,
        voxel_resolution: Sequence[float] | None,
        prepared: list[Prepared],
        say: Progress,
    ) -> str:
        """The datastack's aligned volume, creating the dataset, volume and datastack when missing."""
        if datastack in self.info.datastack_names():
            return self.info.aligned_volume_of(datastack)
        dataset = dataset or datastack
        volume = aligned_volume or datastack
        with suppress(Conflict):
            self.access.create_dataset(dataset)
        if volume not in self.info.aligned_volume_names():
            self.info.add_aligned_volume(volume, image_source or "", description=f"Aligned volume of the imported datastack {datastack}.")
            self.access.map_resource("aligned_volume", volume, dataset)
        fields: dict[str, Any] = {"description": f"Imported versions of {datastack}."}
        if segmentation_source:
            fields["segmentation_source"] = segmentation_source
        resolution = voxel_resolution
        if resolution is None:
            with suppress(BadRequest):
                resolution = next((_resolution(p.table, None) for p in prepared if p.table.kind == "table"), None)
        if resolution is not None:
            fields.update(zip(("viewer_resolution_x", "viewer_resolution_y", "viewer_resolution_z"), (float(v) for v in resolution)))
        self.info.add_datastack(datastack, volume, **fields)
        self.access.map_resource("datastack", datastack, dataset)
        say(f"created datastack {datastack} (aligned volume {volume}, dataset {dataset}); grant access with `opencave permission grant GROUP {dataset} view`")
        return volume

    def _write(
        self,
        con: duckdb.DuckDBPyConnection,
        datastack: str,
        number: int,
        moment: datetime,
        aligned_volume: str,
        prepared: list[Prepared],
        voxel_resolution: Sequence[float] | None,
        say: Progress,
    ) -> Version:
        resolutions = {p.table.name: _resolution(p.table, voxel_resolution) for p in prepared}
        files = self.registry.files
        version = self.registry.begin_numbered(datastack, number, moment, self.version_root)
        directory = files.staging(version.location)  # the version's directory when local
        try:
            files.delete(version.location)  # leftovers of an earlier, failed attempt
            directory.mkdir(parents=True, exist_ok=True)
            with self.registry.keep_alive(version.id):
                for item in prepared:
                    self._write_one(con, version, directory, item, aligned_volume, resolutions[item.table.name], moment, datastack, say)
                write_version_manifest(directory, version, self.registry.tables(version, "table") + self.registry.tables(version, "view"))
                files.publish_directory(version.location, directory)  # uploads when remote
            self.registry.publish(version.id)
        except BaseException as error:
            self.registry.fail(version.id, f"{type(error).__name__}: {error}")
            discard_files(files, version.location)
            raise
        say(f"version {number} of {datastack} is available (frozen at {format_time(moment)})")
        return self.registry.version(datastack, number)

    def _write_one(
        self,
        con: duckdb.DuckDBPyConnection,
        version: Version,
        directory: Path,
        item: Prepared,
        aligned_volume: str,
        resolution: tuple[float, float, float],
        moment: datetime,
        datastack: str,
        say: Progress,
    ) -> None:
        table = item.table
        file = f"view.{table.name}.parquet" if table.kind == "view" else f"{table.name}.parquet"
        in_order = table.kind == "view" or item.ids_ascending  # a view as its query ordered it
        if item.kept is not None and in_order:
            _move(item.kept.file, directory / file)
        else:
            _copy_sorted(con, item.select(con), [] if in_order else ["id"], directory / file)
        self.registry.add_table(
            version.id,
            FrozenTable(
                kind=table.kind,
                table_name=table.name,
                schema=item.schema,
                row_count=item.rows,
                file=file,
                created=datetime.now(timezone.utc),
                metadata=table_metadata(table, item.schema, aligned_volume, resolution, moment, datastack),
            ),
        )
        self.registry.heartbeat(version.id)
        say(f"  wrote {table.kind} {table.name}: {item.rows:,} rows")


__all__ = ["VersionImporter", "find_tables"]
