"""JSON states and segment-property documents in the ``ngl_documents`` table.

A document is never changed once stored: its URL is shared and must keep meaning the same view.
New ids are random (ids in a shared URL should not reveal how many states exist or let anyone
walk through them) and below 2**53, so JavaScript, which reads JSON numbers as doubles, sees
them exactly.
"""

from __future__ import annotations

import secrets
import zlib
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from opencave.errors import BadRequest, Conflict, NotFound
from opencave.storage.sql import reader
from opencave.storage.state import as_utc, utcnow
from opencave.storage.tables import ngl_documents

from .payload import MAX_COMPRESSED_BYTES, check_json, compress_limited

NEW_ID_BOUND = 2**53  # new ids are below it
MAX_DOCUMENT_ID = 2**63 - 1  # ids given explicitly (e.g. migrated from another server) fit a bigint
_ID_ATTEMPTS = 8  # a collision among 2**53 ids is rare; eight in a row means something else is wrong


class DocumentKind(str, Enum):
    STATE = "state"
    PROPERTY = "property"

    @property
    def label(self) -> str:
        """How messages name a document of this kind."""
        return "state" if self is DocumentKind.STATE else "segment-properties document"


@dataclass(frozen=True)
class StoredDocument:
    kind: DocumentKind
    id: int
    payload: bytes  # the zlib stream of the posted JSON text
    user_id: str
    created: datetime

    def text(self) -> bytes:
        """The JSON text as it was posted."""
        return zlib.decompress(self.payload)


def check_document_id(value: int, kind: DocumentKind = DocumentKind.STATE) -> int:
    """``value`` if it can be a document id, else ``BadRequest``."""
    if not 0 < value <= MAX_DOCUMENT_ID:
        raise BadRequest(
            f"{value} cannot be a {kind.label} id: ids are positive integers below 2**63.", code="invalid_id"
        )
    return value


class DocumentStore:
    """Adds and reads documents; knows nothing of HTTP."""

    def __init__(self, engine: Engine, max_compressed_bytes: int = MAX_COMPRESSED_BYTES) -> None:
        self.engine = engine
        self.max_compressed_bytes = max_compressed_bytes

    def add(
        self,
        kind: DocumentKind,
        text: bytes,
        user_id: str,
        doc_id: int | None = None,
        created: datetime | None = None,
    ) -> int:
        """Store the JSON ``text`` and return its id.

        With ``doc_id`` the document takes that id (``Conflict`` if it is taken); otherwise a new
        random id is drawn. ``created`` defaults to now.
        """
        check_json(text, kind.label)
        payload = compress_limited(text, self.max_compressed_bytes, kind.label)
        row = {"kind": kind.value, "payload": payload, "user_id": user_id, "created": created or utcnow()}
        if doc_id is not None:
            check_document_id(doc_id, kind)
            if not self._insert({**row, "id": doc_id}):
                raise Conflict(
                    f"A {kind.label} with id {doc_id} exists already; stored documents never change, "
                    "so post without an id to get a new one.",
                    code="id_exists",
                )
            return doc_id
        for _ in range(_ID_ATTEMPTS):
            new_id = secrets.randbelow(NEW_ID_BOUND - 1) + 1
            if self._insert({**row, "id": new_id}):
                return new_id
        raise RuntimeError(f"no free {kind.label} id after {_ID_ATTEMPTS} random draws")

    def _insert(self, row: dict) -> bool:
        """Insert ``row``; False if its id is taken (each attempt is its own transaction, since a
        failed statement aborts a PostgreSQL transaction)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(ngl_documents).values(**row))
        except IntegrityError:
            return False
        return True

    def get(self, kind: DocumentKind, doc_id: int) -> StoredDocument:
        """The stored document, or ``NotFound``."""
        check_document_id(doc_id, kind)
        with reader(self.engine).connect() as conn:
            row = conn.execute(
                select(ngl_documents).where(ngl_documents.c.kind == kind.value, ngl_documents.c.id == doc_id)
            ).first()
        if row is None:
            raise NotFound(
                f"No {kind.label} with id {doc_id}; check the id (it is the number at the end of the URL "
                "the upload answered).",
                code=f"unknown_{kind.value}",
            )
        return StoredDocument(kind, int(row.id), bytes(row.payload), row.user_id, as_utc(row.created))
