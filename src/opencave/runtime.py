"""Opens the live store and wires the domain services together; shared by server and CLI."""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, delete, select

from opencave.background import BackgroundExecutor
from opencave.config import Settings
from opencave.services.annotation import AnnotationService
from opencave.services.auth import Access, Accounts, IdentityResolver, TokenStore
from opencave.services.chunkedgraph.service import GraphService
from opencave.services.info import InfoRegistry
from opencave.services.jobs import JobQueue, JobRunner
from opencave.services.jobs.kinds import job_kinds
from opencave.services.l2cache.cache import L2Cache
from opencave.services.materialize.clustering import heal
from opencave.storage.version_files import VersionFiles
from opencave.services.materialize.live import LiveQueries
from opencave.services.materialize.materializer import Materializer
from opencave.services.materialize.service import MaterializeService
from opencave.services.materialize.versions import VersionRegistry
from opencave.services.materialize.views import ViewRegistry
from opencave.services.meshing.service import MeshService
from opencave.services.skeleton import SkeletonService, SkeletonStore
from opencave.services.state import DocumentStore
from opencave.services.ingest.service import SegmentationIngest
from opencave.services.transfer.table_import import TableImporter
from opencave.services.transfer.version_import import VersionImporter
from opencave.storage.snapshots import SnapshotEngine
from opencave.storage.sql import create_store_engine, upgrade_schema
from opencave.errors import Conflict
from opencave.storage.state import ensure_secret_key, get_value, set_default
from opencave.storage.tables import server_state, tokens

ADMIN_EMAIL = "admin@localhost"
# The generated password of the first superadmin, kept until a start that completes shows it
# (a first start interrupted while the demo builds loses nothing); then removed.
ADMIN_PASSWORD_PENDING = "admin_password_pending"
DEMO_REGISTERED = "demo_registered"
DEMO_GRAPH_READY = "demo_graph_ready"
DEMO_ANNOTATIONS_READY = "demo_annotations_ready"
DEMO_WORLD = ("small", 0)
WORLD_CACHE_ENV = "OPENCAVE_WORLD_CACHE"  # size and seed of the demo datastack's world


WRITE_CHECK_BYTES = 64 * 1024
ABANDONED_CHECK_S = 60.0  # how often a serving process looks for version builds whose builder died
CLUSTERING_CHECK_S = 60.0  # how often it builds the clustered copies that published versions lack


def check_writable(directory: Path) -> None:
    """Raise the operating system's error (read-only, full, denied) at once when ``directory``
    cannot take a small file, rather than half-way through setting up a store."""
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check-") as probe:
        probe.write(bytes(WRITE_CHECK_BYTES))
        probe.flush()
        os.fsync(probe.fileno())


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
    meshes: MeshService
    annotations: AnnotationService
    views: ViewRegistry
    materializer: Materializer
    materialize: MaterializeService
    imports: VersionImporter
    table_imports: TableImporter
    ingest: SegmentationIngest
    live: LiveQueries
    skeletons: SkeletonService
    ngl_documents: DocumentStore
    secret_key: str
    background: BackgroundExecutor  # runs every background job of this process between start() and stop()
    jobs: JobQueue  # queued work any process may run (versions, imports, skeletons)
    job_runner: JobRunner = field(init=False)  # this process's claimers: settings.job_threads threads

    @classmethod
    def open(cls, settings: Settings) -> "Runtime":
        """Open (and migrate) the store named by ``settings``."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        check_writable(settings.data_dir)
        engine = create_store_engine(settings.database_url)
        upgrade_schema(engine)
        with engine.begin() as conn:
            secret_key = ensure_secret_key(conn)
        base = settings.server_url
        info = InfoRegistry(engine)
        graphs = GraphService(engine)
        annotations = AnnotationService(engine, info, graphs)
        snapshots = SnapshotEngine()
        registry = VersionRegistry(engine, VersionFiles(settings.versions_location, settings.data_dir, settings.versions_cache_bytes))
        views = ViewRegistry(engine)
        access = Access(engine)
        jobs = JobQueue(engine)
        materialize = MaterializeService(registry, views, annotations, info, snapshots, settings.query_row_limit)
        background = BackgroundExecutor()
        l2cache = L2Cache(engine, background)
        meshes = MeshService(engine, graphs, background, jobs)
        graphs.subscribe(l2cache.after_edit)
        graphs.subscribe(meshes.after_edit)
        materializer = Materializer(registry, annotations, graphs, info, views, settings.versions_location, snapshots)
        runtime = cls(
            settings=settings,
            engine=engine,
            accounts=Accounts(engine),
            tokens=TokenStore(engine),
            access=access,
            identities=IdentityResolver(
                engine, tos_url=lambda tos_id: f"{base}/sticky_auth/api/v1/tos/{tos_id}/accept"
            ),
            info=info,
            graphs=graphs,
            l2cache=l2cache,
            meshes=meshes,
            annotations=annotations,
            views=views,
            materializer=materializer,
            materialize=materialize,
            imports=VersionImporter(registry, info, access, settings.versions_location, settings.data_dir / "imports"),
            table_imports=TableImporter(annotations, info, settings.data_dir / "imports"),
            ingest=SegmentationIngest(graphs, access, info, materializer, settings.data_dir, settings.viewer_site),
            live=LiveQueries(materialize, graphs),
            skeletons=SkeletonService(SkeletonStore(engine), info, graphs, l2cache, annotations, jobs),
            ngl_documents=DocumentStore(engine),
            secret_key=secret_key,
            background=background,
            jobs=jobs,
        )
        runtime.job_runner = JobRunner(jobs, job_kinds(runtime), threads=settings.job_threads)
        # A build interrupted on another host is known only by its heartbeat going stale, which
        # may happen after this start: look again now and then while serving.
        def discard_abandoned() -> None:
            runtime.materializer.discard_abandoned()

        background.every("discard abandoned versions", ABANDONED_CHECK_S, discard_abandoned)

        # Versions may be published before their clustered copies exist (queries read the
        # id-sorted files meanwhile); the first run comes as soon as the executor starts.
        def build_clustered_copies() -> None:
            heal(registry)

        background.every("clustered copies", CLUSTERING_CHECK_S, build_clustered_copies)
        return runtime

    def prepare(self) -> None:
        """What every command needs of a store, and all that administration commands do: the
        permission names and a first superadmin. Cheap and idempotent; builds nothing.

        The superadmin's generated password is stored before the account is created, so a start
        killed in between creates the same account with the same password next time."""
        self.access.seed_permissions()
        if self.accounts.count_users() == 0:
            with self.engine.begin() as conn:
                password = set_default(conn, ADMIN_PASSWORD_PENDING, secrets.token_urlsafe(12))
            try:
                self.accounts.create_user(ADMIN_EMAIL, "admin", admin=True, password=password)
            except Conflict:  # another process created it first, with the same password
                pass

    def take_first_run(self) -> FirstRun | None:
        """The generated superadmin password, if no one has been shown it yet; it is forgotten
        as it is returned (exactly one of concurrent callers gets it)."""
        with self.engine.begin() as conn:
            password = get_value(conn, ADMIN_PASSWORD_PENDING)
            if password is None:
                return None
            taken = conn.execute(delete(server_state).where(server_state.c.key == ADMIN_PASSWORD_PENDING)).rowcount
        return FirstRun(ADMIN_EMAIL, password) if taken else None

    def first_admin_email(self) -> str:
        """The e-mail of the oldest superadmin (the generated one unless it was removed)."""
        admins = [u for u in self.accounts.find_users() if u.admin and not u.service_account]
        return admins[0].email if admins else ADMIN_EMAIL

    def anyone_signed_in(self) -> bool:
        """Whether any account has ever got a token (a web login or an API token): until then
        the operator is reminded how to set a password."""
        with self.engine.connect() as conn:
            return conn.execute(select(tokens.c.id).limit(1)).first() is not None

    def initialise(self, with_demo: bool = True) -> FirstRun | None:
        """Set up a store for serving: what ``prepare`` does, the demo datastack, and the
        discarding of version builds whose builder died.

        Every step is idempotent and the demo is marked done only after its last step, so a
        start that was killed half-way is completed by the next one; concurrent starts are safe.
        Returns the generated superadmin password on the first start that gets this far.
        """
        from opencave.demo.registration import register_demo

        self.prepare()
        if with_demo:
            with self.engine.connect() as conn:
                done = get_value(conn, DEMO_REGISTERED)
            if done is None:
                register_demo(self.access, self.info, self.settings.viewer_site)
                with self.engine.begin() as conn:
                    set_default(conn, DEMO_REGISTERED, "1")
            self._ensure_demo_graph()
        self.materializer.discard_abandoned()
        if with_demo:
            self._ensure_demo_annotations()
        return self.take_first_run()

    def _ensure_demo_graph(self) -> None:
        """Build the demo's world and proofread chunkedgraph once (the first start)."""
        from opencave.demo.graph import build_world_graph
        from opencave.demo.registration import DEMO_GRAPH_TABLE

        with self.engine.connect() as conn:
            if get_value(conn, DEMO_GRAPH_READY) is not None:
                return
        size, seed = DEMO_WORLD
        build_world_graph(self.graphs, self.l2cache, DEMO_GRAPH_TABLE, self._demo_world_dir(), size, seed)
        with self.engine.begin() as conn:
            set_default(conn, DEMO_GRAPH_READY, "1")

    def _demo_world_dir(self) -> Path:
        from opencave.demo.registration import DEMO_GRAPH_TABLE

        size, seed = DEMO_WORLD
        cache = os.environ.get(WORLD_CACHE_ENV)  # a shared directory of built worlds (tests, fleets)
        return Path(cache) / f"{size}-{seed}" if cache else self.settings.data_dir / "worlds" / DEMO_GRAPH_TABLE

    def _ensure_demo_annotations(self) -> None:
        """Fill the demo's annotation tables and create its versions once (the first start)."""
        from opencave.demo.population import populate_demo
        from opencave.demo.registration import DEMO_DATASTACK

        with self.engine.connect() as conn:
            if get_value(conn, DEMO_ANNOTATIONS_READY) is not None:
                return
        populate_demo(self, DEMO_DATASTACK, self._demo_world_dir(), seed=DEMO_WORLD[1])
        with self.engine.begin() as conn:
            set_default(conn, DEMO_ANNOTATIONS_READY, "1")

    def start(self) -> None:
        """Start background work: edit subscribers' jobs, remesh requests, queued skeletons,
        missing clustered copies and any version schedule, and this process's job threads (a
        server's lifespan; administration commands do without).

        Every graph's index is loaded now, in the background: otherwise the first request on a
        graph loads it (~10 s for the 10 M supervoxels of the large demo world); a request that
        comes meanwhile waits for the same load."""
        self.background.start()
        self.job_runner.start()
        for table_id in self.graphs.table_ids():
            self.background.submit(f"loading graph {table_id}", lambda table_id=table_id: self.graphs.graph(table_id))

    def stop(self, timeout: float = 2.0) -> None:
        """Stop background work, letting queued jobs finish for up to ``timeout`` seconds.

        Short on purpose: whatever is dropped (L2 attributes, meshes, queued skeletons) is made
        on demand by the first request that needs it, so a stopping server need not wait for it.
        A queued job still running is taken up again by another process (or the next start).
        """
        self.job_runner.stop(timeout)
        self.background.stop(timeout)

    def close(self) -> None:
        self.stop()
        self.engine.dispose()
