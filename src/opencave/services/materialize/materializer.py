"""Building a materialized version: every annotation table frozen at one moment.

For each table the rows alive at the version's timestamp are read from the live store, their
supervoxels resolved to the roots of that moment, and the result written as Parquet (plus
clustered copies per root column). Views are then computed from the frozen tables. The version
is registered RUNNING first and published only after its last file is on disk; a builder that
dies leaves a RUNNING row that ``discard_abandoned`` removes with its files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from opencave.errors import BadRequest
from opencave.services.materialize.layout import FrozenLayout, frozen_layout
from opencave.services.materialize.manifest import write_version_manifest
from opencave.services.materialize.roots import roots_of
from opencave.services.materialize.versions import FrozenTable, Version, VersionRegistry, format_time
from opencave.storage.snapshots import SnapshotEngine, parquet_source, write_frozen_table, write_parquet
from opencave.storage.version_files import VersionFiles

if TYPE_CHECKING:
    from opencave.services.annotation import AnnotationService
    from opencave.services.chunkedgraph.service import GraphService
    from opencave.services.info import InfoRegistry
    from opencave.services.materialize.views import ViewRegistry

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


def discard_files(files: VersionFiles, location: str) -> None:
    """Remove a discarded version's files and staging directories; a storage that cannot be
    reached is logged (the version is already unpublished, its files only take space)."""
    files.remove_staging(location)
    try:
        files.delete(location)
    except Exception:  # noqa: BLE001 - whatever the storage library raises
        log.warning("could not remove the files of the discarded version at %s", location, exc_info=True)


def supervoxel_ids(rows: pa.Table, column: str) -> np.ndarray:
    """A supervoxel column as int64 (null, i.e. not looked up, as 0)."""
    return rows.column(column).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)


def frozen_rows(
    rows: pa.Table, layout: FrozenLayout, roots: Callable[[np.ndarray], np.ndarray]
) -> pa.Table:
    """Live rows (``AnnotationService.read_rows`` columns) in the frozen layout, roots filled."""
    arrays = []
    for name, dtype in layout.columns:
        if name == "valid":
            arrays.append(pa.array(np.ones(rows.num_rows, dtype=bool)))
        elif name.endswith("root_id") and any(p.root_column == name for p in layout.bound_points):
            point = next(p for p in layout.bound_points if p.root_column == name)
            arrays.append(pa.array(roots(supervoxel_ids(rows, point.supervoxel_column)), type=pa.int64()))
        else:
            arrays.append(rows.column(name).cast(dtype))
    return pa.Table.from_arrays(arrays, schema=layout.arrow_schema)


class Materializer:
    def __init__(
        self,
        registry: VersionRegistry,
        annotations: "AnnotationService",
        graphs: "GraphService",
        info: "InfoRegistry",
        views: "ViewRegistry",
        version_root: str | Path,
        snapshots: SnapshotEngine,
    ) -> None:
        self.registry = registry
        self.annotations = annotations
        self.graphs = graphs
        self.info = info
        self.views = views
        self.version_root = str(version_root)  # a directory or a URL (``VersionFiles``)
        self.snapshots = snapshots

    def create_version(
        self,
        datastack: str,
        timestamp: datetime | None = None,
        expires_on: datetime | None = None,
        progress: Progress | None = None,
    ) -> Version:
        """Freeze every table of ``datastack`` at ``timestamp`` (default: now) as a new version."""
        say = progress or (lambda message: None)
        now = datetime.now(timezone.utc)
        moment = (timestamp or now).astimezone(timezone.utc)
        if moment > now:
            raise BadRequest(f"Cannot materialize the future ({format_time(moment)}); pick a time up to now.", code="timestamp_in_future")
        aligned_volume = self.info.aligned_volume_of(datastack)
        graph_table = self.annotations.segmentation_of(aligned_volume)
        index = self.graphs.graph(graph_table).index if graph_table else None
        # the tables that existed at the moment, including those deleted since
        tables = self.annotations.tables_metadata(aligned_volume, timestamp=moment)
        self.annotations.settle(aligned_volume, [meta["table_name"] for meta in tables])
        files = self.registry.files
        version = self.registry.begin(datastack, moment, expires_on, self.version_root)
        directory = files.staging(version.location)
        say(f"version {version.version} of {datastack} at {format_time(moment)}: {len(tables)} tables")
        try:
            files.delete(version.location)  # leftovers of an earlier, discarded attempt
            with self.registry.keep_alive(version.id):
                self._build(datastack, version, directory, moment, tables, aligned_volume, graph_table, index, say)
                directory.mkdir(parents=True, exist_ok=True)
                frozen = self.registry.tables(version, "table") + self.registry.tables(version, "view")
                write_version_manifest(directory, version, frozen)
                files.publish_directory(version.location, directory)  # uploads when remote
            self.registry.publish(version.id)
        except BaseException as error:
            self.registry.fail(version.id, f"{type(error).__name__}: {error}")
            discard_files(files, version.location)
            raise
        say(f"version {version.version} published")
        return self.registry.version(datastack, version.version)

    def _build(
        self,
        datastack: str,
        version: Version,
        directory: Path,
        moment: datetime,
        tables: list[dict[str, Any]],
        aligned_volume: str,
        graph_table: str | None,
        index: Any,
        say: Progress,
    ) -> None:
        """Write the version's files and register them (the caller publishes or discards)."""
        posix = moment.timestamp()
        for number, meta in enumerate(tables, 1):
            name = meta["table_name"]
            layout = frozen_layout(meta["schema_type"])
            rows = self.annotations.read_rows(aligned_volume, name, alive_at=posix)
            if index is not None:
                table = frozen_rows(rows, layout, lambda svs: roots_of(index, svs, posix))
            else:
                table = frozen_rows(rows, layout, lambda svs: np.zeros(svs.size, dtype=np.int64))
            file = f"{name}.parquet"
            write_frozen_table(directory, file, table, layout.root_columns)
            self.registry.add_table(
                version.id,
                FrozenTable(
                    kind="table",
                    table_name=name,
                    schema=meta["schema_type"],
                    row_count=table.num_rows,
                    file=file,
                    created=datetime.now(timezone.utc),
                    metadata=self._frozen_metadata(meta, aligned_volume, graph_table),
                ),
            )
            self.registry.heartbeat(version.id)
            say(f"  [{number}/{len(tables)}] {name}: {table.num_rows:,} rows")
        self._freeze_views(datastack, version, directory, [m["table_name"] for m in tables], say)

    def _frozen_metadata(self, meta: dict[str, Any], aligned_volume: str, graph_table: str | None) -> dict[str, Any]:
        out = {k: v for k, v in meta.items() if k not in ("deleted",)}
        out.update(
            aligned_volume=aligned_volume,
            schema=meta["schema_type"],
            table_name=meta["table_name"],
            valid=True,
            pcg_table_name=graph_table,
            segmentation_source=f"graphene://{{local_server}}/segmentation/table/{graph_table}" if graph_table else None,
        )
        return out

    def _freeze_views(self, datastack: str, version: Version, directory: Path, tables: list[str], say: Progress) -> None:
        definitions = self.views.list(datastack)
        if not definitions:
            return
        cursor = self.snapshots.cursor().cursor()
        try:
            for name in tables:
                cursor.execute(f'CREATE OR REPLACE TEMP VIEW "{name}" AS SELECT * FROM {parquet_source(directory / f"{name}.parquet")}')
            for view in definitions:
                missing = [t for t in view.tables if t not in tables]
                if missing:
                    say(f"  view {view.name}: skipped, table(s) {missing} not in this version")
                    continue
                result = cursor.sql(view.query).to_arrow_table()
                file = f"view.{view.name}.parquet"
                write_parquet(directory / file, result)
                self.registry.add_table(
                    version.id,
                    FrozenTable(
                        kind="view",
                        table_name=view.name,
                        schema=None,
                        row_count=result.num_rows,
                        file=file,
                        created=datetime.now(timezone.utc),
                        metadata=view.metadata(),
                    ),
                )
                say(f"  view {view.name}: {result.num_rows:,} rows")
        finally:
            cursor.close()

    def discard_abandoned(self) -> list[int]:
        """Remove versions whose builder died mid-way (their files and registry rows)."""
        discarded = []
        for version in self.registry.abandoned():
            self.registry.fail(version.id, "discarded: the process building it stopped before it was finished")
            discard_files(self.registry.files, version.location)
            log.warning("discarded unfinished version %s of %s", version.version, version.datastack)
            discarded.append(version.version)
        return discarded

    def expire(self, now: datetime | None = None) -> list[tuple[str, int]]:
        """Drop the files of versions past their expiry (never a datastack's newest valid version)."""
        now = now or datetime.now(timezone.utc)
        dropped = []
        for datastack in self.info.datastack_names():
            versions = self.registry.list(datastack)
            newest = versions[-1].version if versions else None
            for version in versions:
                if version.expires_on is not None and version.expires_on <= now and version.version != newest:
                    self.registry.mark_expired(version.id)
                    discard_files(self.registry.files, version.location)
                    dropped.append((datastack, version.version))
        return dropped

