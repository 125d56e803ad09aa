"""Bearer tokens: 32 lowercase hex characters, stored only as SHA-256 digests.

A token has 128 random bits, so a fast digest is enough to make a leaked database useless and
keeps a token check to one indexed lookup (no password hasher on the request path). ``api``
tokens live until revoked; ``login`` tokens back a browser session and expire.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, bindparam, delete, insert, literal, or_, select, update

from opencave.errors import NotFound
from opencave.storage.sql import QuickRead
from opencave.storage.state import GENERATION_KEYS, Generations, as_utc, utcnow
from opencave.storage.tables import server_state, tokens

API = "api"
LOGIN = "login"
LOGIN_LIFETIME = timedelta(days=7)
LAST_USED_RESOLUTION = timedelta(minutes=5)


def new_token() -> str:
    return secrets.token_hex(16)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def hint(token: str) -> str:
    """What a token list shows instead of the token: enough to recognise it, not to use it."""
    return f"{token[:4]}…{token[-4:]}"


@dataclass(frozen=True)
class TokenRecord:
    id: int
    user_id: int
    kind: str
    description: str
    hint: str
    created: datetime
    last_used: datetime | None
    expires: datetime | None

    def as_json(self) -> dict:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "token": self.hint,
            "description": self.description,
            "created": self.created.isoformat(),
            "updated": self.created.isoformat(),
            "last_used": self.last_used.isoformat() if self.last_used else None,
        }


@dataclass(frozen=True)
class TokenMatch:
    """A presented token that exists and has not expired, plus the generations seen with it."""

    token_id: int
    user_id: int
    kind: str
    generations: Generations


# One round trip per request: the token's row joined with the generation counters. The keys are
# compared one by one: an IN list is re-rendered on every execution (an "expanding" parameter),
# which made the query a quarter slower.
_MATCH_QUERY = (
    select(tokens.c.id, tokens.c.user_id, tokens.c.kind, tokens.c.expires, tokens.c.last_used, server_state.c.key, server_state.c.value)
    .select_from(tokens.outerjoin(server_state, or_(*(server_state.c.key == literal(key) for key in GENERATION_KEYS))))
    .where(tokens.c.token_hash == bindparam("token_hash"))
)


def _record(row) -> TokenRecord:
    return TokenRecord(
        id=row.id,
        user_id=row.user_id,
        kind=row.kind,
        description=row.description,
        hint=row.hint,
        created=as_utc(row.created),
        last_used=as_utc(row.last_used),
        expires=as_utc(row.expires),
    )


class TokenStore:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._match = QuickRead(engine, _MATCH_QUERY)

    def create(self, user_id: int, kind: str = API, description: str = "", connection: Connection | None = None) -> str:
        """Mint a token for ``user_id``; the plain token is returned once and never stored."""
        token = new_token()
        now = utcnow()
        values = dict(
            user_id=user_id,
            token_hash=digest(token),
            hint=hint(token),
            kind=kind,
            description=description[:200],
            created=now,
            expires=now + LOGIN_LIFETIME if kind == LOGIN else None,
        )
        if connection is not None:
            connection.execute(insert(tokens).values(**values))
        else:
            with self.engine.begin() as conn:
                conn.execute(insert(tokens).values(**values))
        return token

    def list_api_tokens(self, user_id: int) -> list[TokenRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(tokens)
                .where(tokens.c.user_id == user_id, tokens.c.kind == API)
                .order_by(tokens.c.created.desc(), tokens.c.id.desc())
            ).all()
        return [_record(r) for r in rows]

    def revoke_by_id(self, user_id: int, token_id: int) -> None:
        with self.engine.begin() as conn:
            result = conn.execute(delete(tokens).where(tokens.c.id == token_id, tokens.c.user_id == user_id))
        if result.rowcount == 0:
            raise NotFound(f"No token with id {token_id} belongs to you; list yours with GET /auth/api/v1/user/token.", code="unknown_token")

    def revoke(self, token: str) -> int:
        """Revoke a token given in full; returns the owner's user id."""
        with self.engine.begin() as conn:
            row = conn.execute(select(tokens.c.id, tokens.c.user_id).where(tokens.c.token_hash == digest(token))).first()
            if row is None:
                raise NotFound("No such token: it was never issued or is already revoked.", code="unknown_token")
            conn.execute(delete(tokens).where(tokens.c.id == row.id))
        return row.user_id

    def replace_api_tokens(self, user_id: int, description: str = "") -> str:
        """Revoke every API token of ``user_id`` and mint one new one, atomically."""
        with self.engine.begin() as conn:
            conn.execute(delete(tokens).where(tokens.c.user_id == user_id, tokens.c.kind == API))
            return self.create(user_id, API, description, connection=conn)

    def match(self, token: str) -> TokenMatch | None:
        """Look a presented token up; None when unknown or expired. One query, no hashing cost."""
        rows = self._match.rows(token_hash=digest(token))
        if not rows:
            return None
        (token_id, user_id, kind, expires, last_used, _, _), now = rows[0], utcnow()
        expires = as_utc(expires)
        if expires is not None and expires <= now:
            return None
        last_used = as_utc(last_used)
        if last_used is None or now - last_used > LAST_USED_RESOLUTION:
            with self.engine.begin() as conn:
                conn.execute(update(tokens).where(tokens.c.id == token_id).values(last_used=now))
        generations = Generations.from_pairs((key, value) for *_, key, value in rows)
        return TokenMatch(token_id=token_id, user_id=user_id, kind=kind, generations=generations)
