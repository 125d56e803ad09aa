"""Stored skeletons and the refusal list, in the SQL store (shared by every server process)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, String, and_, cast, delete, insert, select
from sqlalchemy.exc import IntegrityError

from opencave.storage.sql import insert_ignoring_duplicates, reader
from opencave.storage.tables import skeleton_refusals, skeletons

from .model import GENERATOR

ID_BATCH = 1000


class SkeletonStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- skeletons ---------------------------------------------------------------------------
    def get(self, datastack: str, root_id: int) -> bytes | None:
        """The stored payload made by the current generator, if any."""
        with reader(self.engine).connect() as conn:
            row = conn.execute(
                select(skeletons.c.payload).where(
                    skeletons.c.datastack == datastack,
                    skeletons.c.root_id == int(root_id),
                    skeletons.c.generator == GENERATOR,
                )
            ).first()
        return bytes(row.payload) if row is not None else None

    def put(self, datastack: str, root_id: int, payload: bytes) -> None:
        """Store (or replace an older generator's) skeleton; a concurrent equal insert is fine."""
        row = {"datastack": datastack, "root_id": int(root_id), "generator": GENERATOR, "payload": payload, "created": datetime.now(UTC)}
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    delete(skeletons).where(
                        skeletons.c.datastack == datastack,
                        skeletons.c.root_id == int(root_id),
                        skeletons.c.generator != GENERATOR,
                    )
                )
                insert_ignoring_duplicates(conn, skeletons, [row])
        except IntegrityError:  # another process stored it at the same moment
            pass

    def existing(self, datastack: str, root_ids: list[int]) -> set[int]:
        """The root ids among ``root_ids`` with a current stored skeleton."""
        return self._present(skeletons, root_ids, skeletons.c.datastack == datastack, skeletons.c.generator == GENERATOR)

    def _present(self, table, root_ids: list[int], *conditions) -> set[int]:
        """Which of ``root_ids`` have a row in ``table`` meeting ``conditions`` (in id batches)."""
        found: set[int] = set()
        with reader(self.engine).connect() as conn:
            for start in range(0, len(root_ids), ID_BATCH):
                batch = [int(r) for r in root_ids[start : start + ID_BATCH]]
                query = select(table.c.root_id).where(*conditions, table.c.root_id.in_(batch))
                found.update(conn.execute(query).scalars())
        return found

    def root_ids(self, datastack: str, prefix: str = "") -> list[int]:
        """Root ids with a current stored skeleton whose decimal form starts with ``prefix``."""
        query = select(skeletons.c.root_id).where(skeletons.c.datastack == datastack, skeletons.c.generator == GENERATOR)
        if prefix:
            query = query.where(cast(skeletons.c.root_id, String).like(prefix + "%"))
        with reader(self.engine).connect() as conn:
            return list(conn.execute(query.order_by(skeletons.c.root_id)).scalars())

    # -- refusal list ------------------------------------------------------------------------
    def refusals(self, datastack: str | None = None) -> list[tuple[str, int]]:
        query = select(skeleton_refusals.c.datastack, skeleton_refusals.c.root_id).order_by(
            skeleton_refusals.c.datastack, skeleton_refusals.c.root_id
        )
        if datastack is not None:
            query = query.where(skeleton_refusals.c.datastack == datastack)
        with reader(self.engine).connect() as conn:
            return [(r.datastack, int(r.root_id)) for r in conn.execute(query)]

    def refused(self, datastack: str, root_ids: list[int]) -> set[int]:
        """The root ids among ``root_ids`` on the refusal list."""
        return self._present(skeleton_refusals, root_ids, skeleton_refusals.c.datastack == datastack)

    def refuse(self, datastack: str, root_id: int) -> bool:
        """Add a root to the refusal list; False if it was there already."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(skeleton_refusals).values(datastack=datastack, root_id=int(root_id), added=datetime.now(UTC)))
        except IntegrityError:
            return False
        return True

    def unrefuse(self, datastack: str, root_id: int) -> bool:
        """Remove a root from the refusal list; False if it was not there."""
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(skeleton_refusals).where(
                    and_(skeleton_refusals.c.datastack == datastack, skeleton_refusals.c.root_id == int(root_id))
                )
            )
        return result.rowcount > 0
