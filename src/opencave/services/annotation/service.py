"""The annotation engine: live annotation tables of an aligned volume and their rows.

Each table has a metadata row (``annotation_tables``) and a physical row table. Writes are
copy-on-write and soft (``deleted``/``superceded_id``), so every past state can be read back.
Every write request is one transaction that first updates the table's metadata row: that
serialises writers of a table (a row lock on PostgreSQL, the write lock on SQLite) and keeps the
id sequence (``next_id``) consistent. All rows of a request are checked and their supervoxels
looked up before anything is written, so a rejected batch writes nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, Engine, and_, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from opencave.errors import BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge
from opencave.services.annotation import bulk, metadata
from opencave.services.annotation.layout import RowLayout, row_layout
from opencave.services.annotation.lookup import PointLookup
from opencave.services.annotation.payloads import MAX_EXPLICIT_ID, ParsedRow, PayloadParser, RowErrors, raise_row_errors
from opencave.services.annotation.permissions import Action, TableAccess, permission_level
from opencave.services.annotation.rows import flat_values, lookup_supervoxels, physical, public
from opencave.services.auth import Identity
from opencave.services.chunkedgraph.service import GraphService
from opencave.services.info import InfoRegistry
from opencave.storage.annotation_rows import (
    alive_at as alive_filter,
    changed_between as changed_filter,
    count_rows,
    create_indexes,
    create_row_table,
    drop_indexes,
    existing_ids,
    id_batches,
    insert_arrow,
    new_row_table_name,
    row_table,
    rows_by_id,
)
from opencave.storage.sql import reader
from opencave.storage.state import CATALOG_GENERATION, GenerationCache, as_utc, bump_generation
from opencave.storage.tables import annotation_tables as meta_table

MAX_INSERT = 10_000  # rows per insert/update request, as upstream
MAX_IDS = 100_000  # ids per get/delete request
MAX_SQL_IDS = 50_000  # read_rows(ids=…) beyond this filters after reading
MAX_ROW_ID = 2**63 - 1  # ids are signed 64-bit integers in SQL
GRAPHENE = re.compile(r"^graphene://.*?/segmentation/(?:api/v1/)?table/([^/?#]+)/?$")


def _epoch(timestamp: datetime | None) -> float:
    return time.time() if timestamp is None else as_utc(timestamp).timestamp()  # type: ignore[union-attr]


def _moment(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _id_list(ids: Any, name: str = "annotation_ids") -> list[int]:
    if isinstance(ids, (int, np.integer)) and not isinstance(ids, bool):
        ids = [ids]
    if isinstance(ids, np.ndarray):
        ids = ids.tolist()
    if not isinstance(ids, (list, tuple)):
        raise BadRequest(f"{name} must be a list of annotation ids.", code="invalid_ids")
    if len(ids) > MAX_IDS:
        raise PayloadTooLarge(f"Too many ids ({len(ids):,}); send at most {MAX_IDS:,} per request.", code="too_many_ids")
    out = []
    for value in ids:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) and not (isinstance(value, str) and value.strip().isdigit()):
            raise BadRequest(f"{name} must hold integer annotation ids; got {value!r}.", code="invalid_ids")
        number = int(value)
        if not 0 <= number <= MAX_ROW_ID:
            raise BadRequest(f"{name}: {number} is not an annotation id (ids are between 0 and {MAX_ROW_ID}).", code="invalid_ids")
        out.append(number)
    return out


class AnnotationService:
    def __init__(self, engine: Engine, info: InfoRegistry, graphs: GraphService):
        self.engine = engine
        self.info = info
        self.graphs = graphs
        self.access = TableAccess(engine)
        self._permissions: GenerationCache[dict] = GenerationCache()

    # -- where rows live ---------------------------------------------------------------------
    def _check_volume(self, aligned_volume: str) -> None:
        self.info.aligned_volume(aligned_volume, "")  # NotFound for unknown volumes

    def segmentation_of(self, aligned_volume: str) -> str | None:
        """The chunkedgraph table whose supervoxels rows of this aligned volume hold (None: none)."""
        for datastack in self.info.datastacks_of_volume(aligned_volume):
            source = self.info.datastack_info(datastack, "").get("segmentation_source") or ""
            match = GRAPHENE.match(source)
            if match and self.graphs.exists(match.group(1)):
                return match.group(1)
        return None

    def point_lookup(self, aligned_volume: str, resolution: Any) -> PointLookup:
        """Supervoxel lookups for positions in ``resolution`` (nm per voxel) on this volume's segmentation."""
        table_id = self.segmentation_of(aligned_volume)
        volume = self.graphs.graph(table_id).volume if table_id else None
        return PointLookup(volume, resolution)

    def _lookup(self, record: Any) -> PointLookup:
        return self.point_lookup(record.aligned_volume, (record.voxel_resolution_x, record.voxel_resolution_y, record.voxel_resolution_z))

    @staticmethod
    def _rows(record: Any):
        return row_table(record.row_table, row_layout(record.schema_type).columns)

    def _record(self, aligned_volume: str, table_name: str, conn: Connection | None = None, include_deleted: bool = False) -> Any:
        query = select(meta_table).where(meta_table.c.aligned_volume == aligned_volume, meta_table.c.table_name == table_name)
        if conn is None:
            with reader(self.engine).connect() as own:
                row = own.execute(query).first()
        else:
            row = conn.execute(query).first()
        if row is None or (row.deleted is not None and not include_deleted):
            self._check_volume(aligned_volume)
            state = "was deleted" if row is not None else "does not exist"
            raise NotFound(
                f"Table '{table_name}' {state} in aligned volume '{aligned_volume}'; "
                "client.annotation.get_tables() lists the tables.",
                code="unknown_table",
            )
        return row

    @staticmethod
    def _take_lock(conn: Connection, record: Any) -> None:
        """The table's write lock: a row lock on PostgreSQL, the database write lock on SQLite."""
        conn.execute(update(meta_table).where(meta_table.c.id == record.id).values(next_id=meta_table.c.next_id))

    def _lock(self, conn: Connection, record: Any, timestamp: datetime | None) -> tuple[int, float]:
        """Take the table's write lock (first statement of the transaction), then stamp the write;
        returns (next free id, stamp).

        Stamping under the lock is what makes versions complete: a write stamped before a
        version's moment held this lock before that moment, so ``settle`` waits for it.
        """
        self._take_lock(conn, record)
        now = _epoch(timestamp)
        conn.execute(update(meta_table).where(meta_table.c.id == record.id).values(last_modified=_moment(now)))
        row = conn.execute(select(meta_table.c.next_id, meta_table.c.deleted).where(meta_table.c.id == record.id)).one()
        if row.deleted is not None:
            raise NotFound(f"Table '{record.table_name}' was deleted.", code="unknown_table")
        return int(row.next_id), now

    def settle(self, aligned_volume: str, table_names: list[str]) -> None:
        """Return once every write to these tables stamped before now has committed.

        A version reads its tables after settling them, so no write stamped before the
        version's moment can commit after the version has read the table.
        """
        for name in table_names:
            record = self._record(aligned_volume, name, include_deleted=True)
            with self.engine.begin() as conn:
                self._take_lock(conn, record)

    # -- tables --------------------------------------------------------------------------------
    def create_table(self, aligned_volume: str, table_name: str, schema_type: str, **options: Any) -> dict:
        """Create a table in a transaction of its own (``create_table_in`` names the options)."""
        with self.engine.begin() as conn:
            self.create_table_in(conn, aligned_volume, table_name, schema_type, **options)
        return self.table_metadata(aligned_volume, table_name)

    def create_table_in(
        self,
        conn: Connection,
        aligned_volume: str,
        table_name: str,
        schema_type: str,
        *,
        description: str,
        voxel_resolution: Any,
        user_id: str,
        reference_table: str | None = None,
        track_target_id_updates: bool | None = None,
        flat_segmentation_source: str | None = None,
        read_permission: str = "PUBLIC",
        write_permission: str = "PRIVATE",
        notice_text: str | None = None,
        timestamp: datetime | None = None,
    ) -> None:
        """Create a table within the caller's transaction (an import creates it with its rows,
        so a failed or killed import leaves no empty table behind)."""
        self._check_volume(aligned_volume)
        metadata.check_table_name(table_name)
        layout = self._schema_layout(schema_type)
        reference_table = metadata.check_reference(reference_table)
        values = dict(
            aligned_volume=aligned_volume,
            table_name=table_name,
            schema_type=schema_type,
            description=metadata.check_description(description),
            notice_text=metadata.clean_notice(notice_text),
            flat_segmentation_source=metadata.check_source(flat_segmentation_source),
            read_permission=permission_level(read_permission, "read_permission"),
            write_permission=permission_level(write_permission, "write_permission"),
            user_id=metadata.owner_id(user_id),
            valid=True,
            next_id=1,
            row_table=new_row_table_name(),
        )
        values.update(zip(("voxel_resolution_x", "voxel_resolution_y", "voxel_resolution_z"), metadata.check_resolution(voxel_resolution)))
        if layout.is_reference:
            if not reference_table:
                raise BadRequest(
                    f"Schema '{schema_type}' annotates rows of another table: give reference_table "
                    "(the table whose ids target_id holds).",
                    code="missing_reference_table",
                )
            if reference_table == table_name:
                raise BadRequest(f"Table '{table_name}' cannot reference itself.", code="invalid_reference_table")
            values.update(reference_table=reference_table, track_target_id_updates=bool(track_target_id_updates))
        elif reference_table:
            raise BadRequest(
                f"Schema '{schema_type}' is not a reference schema, so reference_table must not be set.",
                code="invalid_reference_table",
            )
        moment = as_utc(timestamp) if timestamp is not None else datetime.now(UTC)
        values.update(created=moment, last_modified=moment)
        exists = conn.execute(
            select(meta_table.c.deleted).where(meta_table.c.aligned_volume == aligned_volume, meta_table.c.table_name == table_name)
        ).first()
        if exists is not None:
            raise self._exists(table_name, exists.deleted is not None)
        if reference_table:
            target = conn.execute(
                select(meta_table.c.id).where(
                    meta_table.c.aligned_volume == aligned_volume,
                    meta_table.c.table_name == reference_table,
                    meta_table.c.deleted.is_(None),
                )
            ).first()
            if target is None:
                raise BadRequest(f"No table named '{reference_table}' exists.", code="unknown_reference_table")
        try:  # a concurrent creator of the same name: the caller's transaction rolls back
            conn.execute(insert(meta_table).values(**values))
            bump_generation(conn, CATALOG_GENERATION)
        except IntegrityError:
            raise self._exists(table_name, False) from None
        create_row_table(conn, row_table(values["row_table"], layout.columns))

    @staticmethod
    def _exists(table_name: str, deleted: bool) -> Conflict:
        extra = " (it was deleted; names of deleted tables stay reserved)" if deleted else ""
        return Conflict(f"Table {table_name} already exists{extra}; choose another name.", code="table_exists")

    @staticmethod
    def _schema_layout(schema_type: str) -> RowLayout:
        if not isinstance(schema_type, str):
            raise BadRequest(f"schema_type must be a schema name; got {schema_type!r}.", code="unknown_schema")
        try:
            return row_layout(schema_type)
        except NotFound as exc:
            raise BadRequest(exc.message, code="unknown_schema", data=exc.data) from None

    def update_table_metadata(self, aligned_volume: str, table_name: str, user_id: str, *, admin: bool = False, **fields: Any) -> dict:
        """Change description, permissions, notice, flat source or owner (``owner=``); owner only."""
        unknown = sorted(set(fields) - set(metadata.UPDATABLE))
        if unknown:
            raise BadRequest(f"Cannot update {unknown}; updatable: {list(metadata.UPDATABLE)} (owner as user_id over HTTP).", code="invalid_field")
        changes: dict[str, Any] = {}
        if fields.get("description") is not None:
            changes["description"] = metadata.check_description(fields["description"])
        if "flat_segmentation_source" in fields and fields["flat_segmentation_source"] is not None:
            changes["flat_segmentation_source"] = metadata.check_source(fields["flat_segmentation_source"])
        for key in ("read_permission", "write_permission"):
            if fields.get(key) is not None:
                changes[key] = permission_level(fields[key], key)
        if fields.get("owner") is not None:
            changes["user_id"] = metadata.owner_id(fields["owner"])
        if fields.get("notice_text") is not None:
            changes["notice_text"] = metadata.clean_notice(fields["notice_text"])
        with self.engine.begin() as conn:
            record = self._record(aligned_volume, table_name, conn)
            self._require_owner(record, user_id, admin)
            if changes:
                conn.execute(update(meta_table).where(meta_table.c.id == record.id).values(**changes))
                bump_generation(conn, CATALOG_GENERATION)
        return self.table_metadata(aligned_volume, table_name)

    @staticmethod
    def _require_owner(record: Any, user_id: str, admin: bool) -> None:
        if not admin and str(user_id) != record.user_id:
            raise Forbidden(
                f"You cannot do this because you are not the owner of table '{record.table_name}' (user {record.user_id}).",
                code="not_table_owner",
            )

    def delete_table(self, aligned_volume: str, table_name: str, user_id: str, *, admin: bool = False) -> None:
        """Soft delete: the table disappears from listings; its rows and name are kept."""
        with self.engine.begin() as conn:
            record = self._record(aligned_volume, table_name, conn)
            self._require_owner(record, user_id, admin)
            conn.execute(update(meta_table).where(meta_table.c.id == record.id).values(deleted=datetime.now(UTC), valid=False))
            bump_generation(conn, CATALOG_GENERATION)

    def _records(self, aligned_volume: str, timestamp: datetime | None, include_deleted: bool) -> list[Any]:
        self._check_volume(aligned_volume)
        query = select(meta_table).where(meta_table.c.aligned_volume == aligned_volume)
        if timestamp is not None:
            moment = as_utc(timestamp)
            query = query.where(meta_table.c.created <= moment, (meta_table.c.deleted.is_(None)) | (meta_table.c.deleted > moment))
        elif not include_deleted:
            query = query.where(meta_table.c.deleted.is_(None))
        with reader(self.engine).connect() as conn:
            return list(conn.execute(query.order_by(meta_table.c.table_name)))

    def table_names(self, aligned_volume: str, *, timestamp: datetime | None = None, include_deleted: bool = False) -> list[str]:
        """Tables of an aligned volume (those existing at ``timestamp``, default now)."""
        return [r.table_name for r in self._records(aligned_volume, timestamp, include_deleted)]

    def table_metadata(self, aligned_volume: str, table_name: str, *, include_deleted: bool = False) -> dict:
        record = self._record(aligned_volume, table_name, include_deleted=include_deleted)
        return self._render(record, self.segmentation_of(aligned_volume))

    def tables_metadata(self, aligned_volume: str, *, include_deleted: bool = False, timestamp: datetime | None = None) -> list[dict]:
        """Metadata of the tables (those existing at ``timestamp``, deleted since or not)."""
        records = self._records(aligned_volume, timestamp, include_deleted)
        pcg = self.segmentation_of(aligned_volume) if records else None
        return [self._render(r, pcg) for r in records]

    @staticmethod
    def _render(record: Any, pcg: str | None) -> dict:
        return metadata.render(record, pcg, bool(row_layout(record.schema_type).bound_points))

    def permissions(self, aligned_volume: str, table_name: str, *, include_deleted: bool = False, catalog: str | None = None) -> dict:
        """What ``access.require`` reads of a table (owner, name, read and write permission):
        one query, where the whole metadata also looks the segmentation up; none when the
        request's ``catalog`` generation is given and the answer is known for it."""

        def read() -> dict:
            record = self._record(aligned_volume, table_name, include_deleted=include_deleted)
            return {
                "user_id": record.user_id,
                "table_name": record.table_name,
                "read_permission": record.read_permission,
                "write_permission": record.write_permission,
            }

        return self._permissions.get((aligned_volume, table_name, include_deleted), catalog, read)

    def authorize(self, aligned_volume: str, table_name: str, identity: Identity, action: Action) -> dict:
        """The table's metadata, after checking its read/write permission (or ownership) for ``identity``."""
        found = self.table_metadata(aligned_volume, table_name)
        self.access.require(identity, found, action)
        return found

    # -- rows ----------------------------------------------------------------------------------
    def count(self, aligned_volume: str, table_name: str) -> int:
        """Every row ever written, including deleted and superseded ones (as upstream)."""
        record = self._record(aligned_volume, table_name)
        with reader(self.engine).connect() as conn:
            return count_rows(conn, self._rows(record))

    def get(self, aligned_volume: str, table_name: str, ids: list[int]) -> list[dict]:
        """Rows by id (unknown ids are skipped), flat, without segmentation columns."""
        record = self._record(aligned_volume, table_name)
        wanted = _id_list(ids)
        layout = row_layout(record.schema_type)
        with reader(self.engine).connect() as conn:
            return [public(layout, r) for r in rows_by_id(conn, self._rows(record), wanted)]

    @staticmethod
    def _check_batch(annotations: Any) -> list:
        if not isinstance(annotations, list):
            raise BadRequest('Send {"annotations": [<annotation>, …]}: a list of annotations.', code="invalid_body")
        if len(annotations) > MAX_INSERT:
            raise PayloadTooLarge(
                f"{MAX_INSERT} -> The insertion limit is {MAX_INSERT}, {len(annotations)} were attempted to be inserted; "
                f"send at most {MAX_INSERT:,} per request (upload_staged_annotations batches for you).",
                code="too_many_annotations",
            )
        return annotations

    def _checked(self, record: Any, lookup: PointLookup, parser: PayloadParser, items: list, id_required: bool) -> tuple[list[ParsedRow], list[dict]]:
        """Parse every row and look up its supervoxels; one 422 listing all bad rows."""
        parsed: list[ParsedRow] = []
        errors: RowErrors = {}
        for i, item in enumerate(items):
            row, problems = parser.parse(item, id_required=id_required)
            if problems:
                errors[i] = problems
            else:
                parsed.append(row)  # type: ignore[arg-type]
        raise_row_errors(errors, len(items))
        seen: dict[int, int] = {}
        for i, row in enumerate(parsed):
            if row.id is not None:
                if row.id in seen:
                    errors[i] = {"id": f"id {row.id} appears twice in this batch (also row {seen[row.id]})"}
                seen.setdefault(row.id, i)
        raise_row_errors(errors, len(items))
        supervoxels, outside = lookup_supervoxels(lookup, row_layout(record.schema_type), parsed)
        raise_row_errors(outside, len(items), code="position_outside_volume")
        return parsed, supervoxels

    def _check_targets(self, conn: Connection, record: Any, rows: list[ParsedRow]) -> None:
        """Reference tables: every target_id must be a row of the referenced table."""
        if not record.reference_table:
            return
        target = self._record(record.aligned_volume, record.reference_table, conn, include_deleted=True)
        wanted = [r.values.get("target_id") for r in rows]
        found = existing_ids(conn, self._rows(target), [t for t in wanted if t is not None])
        errors = {
            i: {"target_id": f"no annotation {t} in table '{record.reference_table}'"}
            for i, t in enumerate(wanted)
            if t is not None and t not in found
        }
        raise_row_errors(errors, len(rows), code="unknown_target")

    def insert(self, aligned_volume: str, table_name: str, annotations: list[dict], *, timestamp: datetime | None = None) -> list[int]:
        """New rows (created now, valid unless the schema's rule says otherwise); their ids in order.

        Explicit ids are honoured and advance the sequence past them.
        """
        record = self._record(aligned_volume, table_name)
        items = self._check_batch(annotations)
        if not items:
            return []
        layout = row_layout(record.schema_type)
        parsed, supervoxels = self._checked(record, self._lookup(record), PayloadParser(record.schema_type), items, False)
        rows = self._rows(record)
        with self.engine.begin() as conn:
            next_id, now = self._lock(conn, record, timestamp)
            explicit = [r.id for r in parsed if r.id is not None]
            taken = existing_ids(conn, rows, explicit)
            if taken:
                raise Conflict(
                    f"Annotation ids {sorted(taken)[:20]} already exist in table '{table_name}'; leave 'id' out to get new ids.",
                    code="annotation_id_exists",
                    data={"ids": sorted(taken)[:1000]},
                )
            self._check_targets(conn, record, parsed)
            fresh = max(next_id, max(explicit, default=0) + 1)
            ids = []
            for row in parsed:
                if row.id is None:
                    row.id, fresh = fresh, fresh + 1
                ids.append(row.id)
            conn.execute(insert(rows), [physical(layout, r, r.id, now, sv) for r, sv in zip(parsed, supervoxels)])  # type: ignore[arg-type]
            conn.execute(update(meta_table).where(meta_table.c.id == record.id).values(next_id=fresh))
        return ids

    def update(self, aligned_volume: str, table_name: str, annotations: list[dict], *, timestamp: datetime | None = None) -> dict[int, int]:
        """Copy-on-write: each annotation (with ``id``) becomes a new row; the old one is superseded.

        Fields not sent keep their stored values. Returns {old id: new id}.
        """
        record = self._record(aligned_volume, table_name)
        items = self._check_batch(annotations)
        if not items:
            return {}
        layout = row_layout(record.schema_type)
        parser = PayloadParser(record.schema_type)
        old_ids = self._update_ids(items)
        lookup = self._lookup(record)
        rows = self._rows(record)
        with self.engine.begin() as conn:
            next_id, now = self._lock(conn, record, timestamp)
            stored = {r["id"]: r for r in rows_by_id(conn, rows, old_ids)}
            self._check_replaceable(table_name, old_ids, stored)
            merged = [{**parser.nest(flat_values(layout, stored[old])), **item} for old, item in zip(old_ids, items)]
            parsed, supervoxels = self._checked(record, lookup, parser, merged, True)
            self._check_targets(conn, record, parsed)
            mapping = {old: next_id + k for k, old in enumerate(old_ids)}
            conn.execute(insert(rows), [physical(layout, r, mapping[r.id], now, sv) for r, sv in zip(parsed, supervoxels)])  # type: ignore[index]
            self._supersede(conn, rows, mapping, now)
            conn.execute(update(meta_table).where(meta_table.c.id == record.id).values(next_id=next_id + len(old_ids)))
            self._follow_targets(conn, record, mapping, now)
        return mapping

    @staticmethod
    def _update_ids(items: list) -> list[int]:
        errors: RowErrors = {}
        ids: list[int] = []
        first: dict[int, int] = {}
        for i, item in enumerate(items):
            value = item.get("id") if isinstance(item, dict) else None
            if isinstance(value, bool) or not isinstance(value, int):
                errors[i] = {"id": "an update must name the annotation it replaces with an integer 'id'"}
                continue
            if not 0 <= value <= MAX_ROW_ID:
                errors[i] = {"id": f"{value} is not an annotation id (ids are between 0 and {MAX_ROW_ID})"}
                continue
            if value in first:
                errors[i] = {"id": f"annotation {value} is updated twice in this batch (also row {first[value]})"}
            first.setdefault(value, i)
            ids.append(value)
        raise_row_errors(errors, len(items))
        return ids

    @staticmethod
    def _check_replaceable(table_name: str, ids: list[int], stored: dict[int, dict]) -> None:
        missing = [i for i in ids if i not in stored]
        if missing:
            raise NotFound(f"annotation_id {missing[:20]} not in table {table_name}.", code="unknown_annotation", data={"ids": missing[:1000]})
        for old in ids:
            row = stored[old]
            if row["superceded_id"] is not None:
                new = int(row["superceded_id"])
                raise Conflict(
                    f"Error update ID {old} -> Annotation with ID {old} has already been superseded by annotation ID {new}, "
                    f"update annotation ID {new} instead",
                    code="annotation_superseded",
                    data={"id": old, "superceded_id": new},
                )
            if row["deleted"] is not None:
                raise Conflict(
                    f"Error update ID {old} -> Annotation with ID {old} was deleted; insert a new annotation instead.",
                    code="annotation_deleted",
                    data={"id": old},
                )

    @staticmethod
    def _supersede(conn: Connection, rows: Any, mapping: dict[int, int], now: float) -> None:
        statement = (
            update(rows)
            .where(rows.c.id == bindparam("old_id"))
            .values(deleted=bindparam("at"), valid=False, superceded_id=bindparam("new_id"))
        )
        conn.execute(statement, [{"old_id": old, "new_id": new, "at": now} for old, new in mapping.items()])

    def _follow_targets(self, conn: Connection, record: Any, mapping: dict[int, int], now: float) -> None:
        """Reference tables created with track_target_id_updates follow updated targets (copy-on-write)."""
        followers = conn.execute(
            select(meta_table).where(
                meta_table.c.aligned_volume == record.aligned_volume,
                meta_table.c.reference_table == record.table_name,
                meta_table.c.track_target_id_updates.is_(True),
                meta_table.c.deleted.is_(None),
            )
        ).all()
        for follower in followers:
            rows = self._rows(follower)
            moved: list[dict] = []
            for batch in id_batches(list(mapping)):
                query = select(rows).where(and_(rows.c.target_id.in_(batch), rows.c.deleted.is_(None)))
                moved.extend(dict(r._mapping) for r in conn.execute(query))
            if not moved:
                continue
            next_id, _ = self._lock(conn, follower, _moment(now))
            renumber = {}
            for k, row in enumerate(sorted(moved, key=lambda r: r["id"])):
                renumber[row["id"]] = next_id + k
                row.update(id=next_id + k, created=now, target_id=mapping[row["target_id"]])
            conn.execute(insert(rows), moved)
            self._supersede(conn, rows, renumber, now)
            conn.execute(update(meta_table).where(meta_table.c.id == follower.id).values(next_id=next_id + len(moved)))

    def delete(self, aligned_volume: str, table_name: str, ids: list[int], *, timestamp: datetime | None = None) -> list[int]:
        """Soft delete; the ids now marked deleted (already deleted ones are left as they were)."""
        record = self._record(aligned_volume, table_name)
        wanted = _id_list(ids)
        rows = self._rows(record)
        with self.engine.begin() as conn:
            _, now = self._lock(conn, record, timestamp)
            stored = rows_by_id(conn, rows, wanted)
            if not stored:
                raise NotFound(f"annotation_id {wanted[:20]} not in table {table_name}.", code="unknown_annotation")
            alive = [int(r["id"]) for r in stored if r["deleted"] is None]
            for batch in id_batches(alive):
                conn.execute(update(rows).where(rows.c.id.in_(batch)).values(deleted=now, valid=False))
        return alive

    # -- bulk paths --------------------------------------------------------------------------
    def insert_columns(
        self,
        aligned_volume: str,
        table_name: str,
        columns: dict[str, np.ndarray],
        *,
        created: np.ndarray,
        deleted: np.ndarray | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Load many rows column-wise; their ids (int64, in row order).

        ``columns`` uses flat names (a position as an (n, 3) array under e.g. ``pt_position``);
        optional extras: ``id`` (explicit ids, all above the current sequence), ``valid``
        (default: not deleted), ``superceded_id`` (NaN or <= 0 = none). Everything is checked and
        every supervoxel looked up before the first write; rows are then written in chunks of
        ``bulk.BULK_CHUNK``, one transaction each (ids are reserved first, so the sequence stays
        consistent even if a later chunk fails).
        """
        record = self._record(aligned_volume, table_name)
        layout = row_layout(record.schema_type)
        n = len(created)
        values = bulk.prepare_columns(layout, columns, n)
        values["created"], values["deleted"] = bulk.times(created, deleted, n)
        valid = columns.get("valid")
        values["valid"] = bulk.Values(np.isnan(values["deleted"].data) if valid is None else np.asarray(valid, dtype=bool))
        values["superceded_id"] = self._superseding(columns.get("superceded_id"), n)
        bulk.add_supervoxels(layout, self._lookup(record), values, n)
        rows = self._rows(record)
        if record.reference_table and "target_id" in values:
            target = self._record(aligned_volume, record.reference_table, include_deleted=True)
            known = bulk.column_ids(self.engine, self._rows(target))
            bad = ~np.isin(values["target_id"].data, known)
            if bad.any():
                raise BadRequest(f"target_id values are not rows of '{record.reference_table}' in {bulk._rows_named(bad)}.", code="unknown_target")
        ids = self._reserve(record, columns.get("id"), n)
        values["id"] = bulk.Values(ids)
        bulk.write_chunks(self.engine, rows, layout, values, n, progress)
        return ids

    def next_free_id(self, aligned_volume: str, table_name: str) -> int:
        """The id the table's next new row gets (explicit ids must be at least this)."""
        return int(self._record(aligned_volume, table_name).next_id)

    def row_ids(self, aligned_volume: str, table_name: str) -> np.ndarray:
        """Every id of a table's rows, deleted ones included (the targets a reference may name)."""
        return bulk.column_ids(self.engine, self._rows(self._record(aligned_volume, table_name, include_deleted=True)))

    def load_batches(
        self,
        aligned_volume: str,
        table_name: str,
        batches: Iterable[pa.RecordBatch],
        *,
        rows: int,
        explicit_ids: tuple[int, int] | None = None,
        progress: Callable[[int], None] | None = None,
        create: dict[str, Any] | None = None,
    ) -> tuple[int, int]:
        """Rows checked and looked up already (Arrow batches named as the table's physical columns,
        without ``id`` unless ``explicit_ids`` = (min, max) says they carry their own, and without
        ``created``/``deleted``/``superceded_id``) in one transaction; (first id, last id).

        All or nothing: a load that fails or is killed leaves no rows (and, with ``create`` — the
        keyword arguments of ``create_table`` — no table), so running it again adds each row once. The table's write lock is held throughout (on SQLite the database's);
        loading into an empty table, its indexes are rebuilt once at the end, in the transaction.
        """
        with self.engine.begin() as conn:
            if create is not None:  # a new table: created in this transaction, with its rows
                self.create_table_in(conn, aligned_volume, table_name, **create)
            record = self._record(aligned_volume, table_name, conn=conn)
            table = self._rows(record)
            next_id, now = self._lock(conn, record, None)
            if explicit_ids is not None and explicit_ids[0] < next_id:
                raise Conflict(
                    f"Explicit ids must be at least {next_id} (the next free id of table '{table_name}'); the smallest given is {explicit_ids[0]}.",
                    code="annotation_id_exists",
                )
            empty = rows > bulk.BULK_CHUNK and count_rows(conn, table) == 0
            if empty:
                drop_indexes(conn, table)
            done = 0
            for batch in batches:
                n = batch.num_rows
                batch = batch.append_column("created", pa.array(np.full(n, now)))
                if explicit_ids is None:
                    batch = batch.append_column("id", pa.array(np.arange(next_id + done, next_id + done + n, dtype=np.int64)))
                insert_arrow(conn, table, batch)
                done += n
                if progress is not None:
                    progress(done)
            if empty:
                create_indexes(conn, table)
            first, last = (next_id, next_id + done - 1) if explicit_ids is None else explicit_ids
            if done:
                conn.execute(update(meta_table).where(meta_table.c.id == record.id).values(next_id=max(next_id, last + 1)))
        return first, last

    @staticmethod
    def _superseding(raw: Any, n: int) -> bulk.Values:
        if raw is None:
            return bulk.Values(np.zeros(n, np.int64), np.ones(n, dtype=bool))
        arr = np.asarray(raw, dtype=np.float64)
        null = np.isnan(arr) | (arr <= 0)
        return bulk.Values(np.where(null, 0, arr).astype(np.int64), null)

    def _reserve(self, record: Any, explicit: Any, n: int) -> np.ndarray:
        """Reserve ``n`` ids in one short transaction (or validate explicit ones against the sequence)."""
        with self.engine.begin() as conn:
            next_id, _ = self._lock(conn, record, None)
            if explicit is None:
                ids = np.arange(next_id, next_id + n, dtype=np.int64)
            else:
                ids = np.asarray(explicit, dtype=np.int64)
                if ids.shape != (n,) or np.unique(ids).size != n or (n and (ids.min() < next_id or ids.max() > MAX_EXPLICIT_ID)):
                    raise BadRequest(f"Explicit ids must be {n} distinct integers of at least {next_id} (the next free id).", code="invalid_ids")
            if n:
                conn.execute(update(meta_table).where(meta_table.c.id == record.id).values(next_id=int(ids.max()) + 1))
        return ids

    def read_rows(
        self,
        aligned_volume: str,
        table_name: str,
        *,
        alive_at: float | None = None,
        changed_between: tuple[float, float] | None = None,
        ids: Any = None,
        include_deleted_table: bool = True,
    ) -> pa.Table:
        """Rows as Arrow (columns of ``row_layout(schema).arrow_schema``), ascending by id.

        ``alive_at=t``: created <= t and not deleted by t; ``changed_between=(a, b)``: created or
        deleted in (a, b]; ``ids``: only these. Filters combine with AND. Rows of deleted tables
        stay readable (past materializations need them).
        """
        record = self._record(aligned_volume, table_name, include_deleted=include_deleted_table)
        rows = self._rows(record)
        clauses = []
        if alive_at is not None:
            clauses.append(alive_filter(rows, float(alive_at)))
        if changed_between is not None:
            clauses.append(changed_filter(rows, float(changed_between[0]), float(changed_between[1])))
        wanted = None
        if ids is not None:
            wanted = np.unique(np.asarray(ids, dtype=np.int64))
            if wanted.size <= MAX_SQL_IDS:
                clauses.append(rows.c.id.in_([int(i) for i in wanted]))
        table = bulk.read_table(self.engine, rows, row_layout(record.schema_type), and_(*clauses) if clauses else None)
        if wanted is not None and wanted.size > MAX_SQL_IDS:
            table = table.filter(pc.is_in(table["id"], value_set=pa.array(wanted)))
        return table
