"""Opens the live store and wires the domain services together; shared by server and CLI."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from opencave.config import Settings
from opencave.services.auth import Access, Accounts, IdentityResolver, TokenStore
from opencave.services.chunkedgraph.service import GraphService
from opencave.services.info import InfoRegistry
from opencave.services.l2cache.cache import L2Cache
from opencave.storage.sql import create_store_engine, upgrade_schema
from opencave.errors import Conflict
from opencave.storage.state import ensure_secret_key, get_value, set_default

ADMIN_EMAIL = "admin@localhost"
DEMO_REGISTERED = "demo_registered"
DEMO_GRAPH_READY = "demo_graph_ready"
DEMO_WORLD = ("small", 0)
WORLD_CACHE_ENV = "OPENCAVE_WORLD_CACHE"  # size and seed of the demo datastack's world


@dataclass
class FirstRun:
    """What a first start created, to tell the operator."""

    admin_email: str
    admin_password: str


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    accounts: Accounts
    tokens: TokenStore
    access: Access
    identities: IdentityResolver
    info: InfoRegistry
    graphs: GraphService
    l2cache: L2Cache
    secret_key: str

    @classmethod
    def open(cls, settings: Settings) -> "Runtime":
        """Open (and migrate) the store named by ``settings``."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_store_engine(settings.database_url)
        upgrade_schema(engine)
        with engine.begin() as conn:
            secret_key = ensure_secret_key(conn)
        base = settings.server_url
        return cls(
            settings=settings,
            engine=engine,
            accounts=Accounts(engine),
            tokens=TokenStore(engine),
            access=Access(engine),
            identities=IdentityResolver(
                engine, tos_url=lambda tos_id: f"{base}/sticky_auth/api/v1/tos/{tos_id}/accept"
            ),
            info=InfoRegistry(engine),
            graphs=GraphService(engine),
            l2cache=L2Cache(engine),
            secret_key=secret_key,
        )

    def initialise(self, with_demo: bool = True) -> FirstRun | None:
        """Set up an empty store: permissions, an admin and the demo datastack.

        Every step is idempotent and the demo is marked done only after its last step, so a
        start that was killed half-way is completed by the next one; concurrent starts are safe.
        """
        from opencave.demo.registration import register_demo

        self.access.seed_permissions()
        first_run = None
        if self.accounts.count_users() == 0:
            password = secrets.token_urlsafe(12)
            try:
                self.accounts.create_user(ADMIN_EMAIL, "admin", admin=True, password=password)
                first_run = FirstRun(ADMIN_EMAIL, password)
            except Conflict:  # another process created it first
                pass
        if with_demo:
            with self.engine.connect() as conn:
                done = get_value(conn, DEMO_REGISTERED)
            if done is None:
                register_demo(self.access, self.info, self.settings.viewer_site)
                with self.engine.begin() as conn:
                    set_default(conn, DEMO_REGISTERED, "1")
            self._ensure_demo_graph()
        return first_run

    def _ensure_demo_graph(self) -> None:
        """Build the demo's world and proofread chunkedgraph once (the first start)."""
        from opencave.demo.graph import build_world_graph
        from opencave.demo.registration import DEMO_GRAPH_TABLE

        with self.engine.connect() as conn:
            if get_value(conn, DEMO_GRAPH_READY) is not None:
                return
        size, seed = DEMO_WORLD
        cache = os.environ.get(WORLD_CACHE_ENV)  # a shared directory of built worlds (tests, fleets)
        world_dir = Path(cache) / f"{size}-{seed}" if cache else self.settings.data_dir / "worlds" / DEMO_GRAPH_TABLE
        build_world_graph(self.graphs, self.l2cache, DEMO_GRAPH_TABLE, world_dir, size, seed)
        with self.engine.begin() as conn:
            set_default(conn, DEMO_GRAPH_READY, "1")

    def close(self) -> None:
        self.engine.dispose()
