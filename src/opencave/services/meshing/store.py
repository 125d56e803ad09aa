"""SQL access for meshes: stored fragments (``l2_meshes``) and queued remesh requests.

A fragment is written once per node with ``insert_ignoring_duplicates``: meshing is
deterministic, so when processes race the first row is as good as any.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine, delete, func, select, update

from opencave.storage.sql import insert_ignoring_duplicates, reader
from opencave.storage.tables import l2_meshes

BATCH = 2000


class MeshStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def sizes(self, table_id: str, l2_ids: Iterable[int]) -> dict[int, int]:
        """Byte size of each stored fragment (0: no surface); absent ids are not meshed yet."""
        ids = sorted({int(i) for i in l2_ids})
        found: dict[int, int] = {}
        with reader(self.engine).connect() as conn:
            for start in range(0, len(ids), BATCH):
                rows = conn.execute(
                    select(l2_meshes.c.l2_id, func.length(l2_meshes.c.fragment)).where(
                        l2_meshes.c.table_id == table_id, l2_meshes.c.l2_id.in_(ids[start : start + BATCH])
                    )
                )
                found.update({int(l2): int(size or 0) for l2, size in rows})
        return found

    def fragment(self, table_id: str, l2_id: int) -> bytes | None:
        with reader(self.engine).connect() as conn:
            value = conn.execute(
                select(l2_meshes.c.fragment).where(l2_meshes.c.table_id == table_id, l2_meshes.c.l2_id == int(l2_id))
            ).scalar()
        return None if value is None else bytes(value)

    def write(self, table_id: str, fragments: dict[int, bytes]) -> None:
        rows = [{"table_id": table_id, "l2_id": int(k), "fragment": v} for k, v in fragments.items()]
        with self.engine.begin() as conn:
            for start in range(0, len(rows), BATCH):
                insert_ignoring_duplicates(conn, l2_meshes, rows[start : start + BATCH])

    def replace(self, table_id: str, fragments: dict[int, bytes]) -> None:
        """Overwrite fragments (a node re-meshed after an edit changed the edges leaving it)."""
        with self.engine.begin() as conn:
            missing = {}
            for l2, data in fragments.items():
                result = conn.execute(
                    update(l2_meshes)
                    .where(l2_meshes.c.table_id == table_id, l2_meshes.c.l2_id == int(l2))
                    .values(fragment=data)
                )
                if result.rowcount == 0:
                    missing[l2] = data
            rows = [{"table_id": table_id, "l2_id": int(k), "fragment": v} for k, v in missing.items()]
            insert_ignoring_duplicates(conn, l2_meshes, rows)

    def forget(self, table_id: str, l2_ids: list[int]) -> None:
        """Delete stored fragments that are stale; they are meshed again when next needed."""
        with self.engine.begin() as conn:
            for start in range(0, len(l2_ids), BATCH):
                conn.execute(delete(l2_meshes).where(l2_meshes.c.table_id == table_id, l2_meshes.c.l2_id.in_(l2_ids[start : start + BATCH])))
