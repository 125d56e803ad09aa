"""The live store's tables (SQLAlchemy Core), shared by every service.

Auth follows middle_auth's model (users, groups, datasets, permissions granted to groups on
datasets, service tables mapping a service's resource name to a dataset), with tokens kept as
SHA-256 digests instead of plain text. Info follows the info service's model (aligned volumes,
datastacks, image mirrors).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

server_state = Table(
    "server_state",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(80), nullable=False),
    Column("email", String(120), nullable=False, unique=True),
    Column("admin", Boolean, nullable=False, default=False),
    Column("pi", String(80), nullable=False, default=""),
    Column("gdpr_consent", Boolean, nullable=False, default=False),
    Column("read_only", Boolean, nullable=False, default=False),
    Column("parent_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    Column("password_hash", String(255), nullable=True),
    Column("created", DateTime(timezone=True), nullable=False),
)

groups = Table(
    "groups",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(120), nullable=False, unique=True),
)

user_groups = Table(
    "user_groups",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("group_id", Integer, ForeignKey("groups.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("admin", Boolean, nullable=False, default=False),
    UniqueConstraint("user_id", "group_id", name="uq_user_groups_member"),
)

terms_of_service = Table(
    "terms_of_service",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(120), nullable=False, unique=True),
    Column("text", Text, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
)

user_tos = Table(
    "user_tos",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("tos_id", Integer, ForeignKey("terms_of_service.id", ondelete="CASCADE"), nullable=False),
    Column("accepted", DateTime(timezone=True), nullable=False),
    UniqueConstraint("user_id", "tos_id", name="uq_user_tos_pair"),
)

datasets = Table(
    "datasets",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(120), nullable=False, unique=True),
    Column("tos_id", Integer, ForeignKey("terms_of_service.id", ondelete="SET NULL"), nullable=True),
)

permissions = Table(
    "permissions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(40), nullable=False, unique=True),
)

group_dataset_permissions = Table(
    "group_dataset_permissions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("group_id", Integer, ForeignKey("groups.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("dataset_id", Integer, ForeignKey("datasets.id", ondelete="CASCADE"), nullable=False),
    Column("permission_id", Integer, ForeignKey("permissions.id", ondelete="CASCADE"), nullable=False),
    UniqueConstraint("group_id", "dataset_id", "permission_id", name="uq_gdp_triple"),
)

dataset_admins = Table(
    "dataset_admins",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("dataset_id", Integer, ForeignKey("datasets.id", ondelete="CASCADE"), nullable=False),
    UniqueConstraint("user_id", "dataset_id", name="uq_dataset_admins_pair"),
)

service_tables = Table(
    "service_tables",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("service_name", String(80), nullable=False),
    Column("table_name", String(200), nullable=False),
    Column("dataset_id", Integer, ForeignKey("datasets.id", ondelete="CASCADE"), nullable=False),
    UniqueConstraint("service_name", "table_name", name="uq_service_tables_resource"),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("hint", String(16), nullable=False),
    Column("kind", String(16), nullable=False),  # "api" (long-lived) or "login" (browser session)
    Column("description", String(200), nullable=False, default=""),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("last_used", DateTime(timezone=True), nullable=True),
    Column("expires", DateTime(timezone=True), nullable=True),
)

aligned_volumes = Table(
    "aligned_volumes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(120), nullable=False, unique=True),
    Column("display_name", String(200), nullable=True),
    Column("description", String(500), nullable=False, default=""),
    Column("image_source", String(500), nullable=False),
)

datastacks = Table(
    "datastacks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(120), nullable=False, unique=True),
    Column("display_name", String(200), nullable=True),
    Column("aligned_volume_id", Integer, ForeignKey("aligned_volumes.id", ondelete="CASCADE"), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("local_server", String(500), nullable=True),
    Column("segmentation_source", String(500), nullable=True),
    Column("skeleton_source", String(500), nullable=True),
    Column("analysis_database", String(200), nullable=True),
    Column("viewer_site", String(500), nullable=True),
    Column("synapse_table", String(200), nullable=True),
    Column("soma_table", String(200), nullable=True),
    Column("proofreading_status_table", String(200), nullable=True),
    Column("cell_identification_table", String(200), nullable=True),
    Column("proofreading_review_table", String(200), nullable=True),
    Column("viewer_resolution_x", Float, nullable=True),
    Column("viewer_resolution_y", Float, nullable=True),
    Column("viewer_resolution_z", Float, nullable=True),
    Column("base_link_id", BigInteger, nullable=True),
)

image_sources = Table(
    "image_sources",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(120), nullable=False, unique=True),
    Column("aligned_volume_id", Integer, ForeignKey("aligned_volumes.id", ondelete="CASCADE"), nullable=False),
    Column("viewer_layer_name", String(200), nullable=True),
    Column("image_source", String(500), nullable=False),
    Column("description", String(500), nullable=False, default=""),
)


# --- chunkedgraph -------------------------------------------------------------------------
# The supervoxels and their edges come from the watershed (files next to the volume); the
# store holds everything that changes: the node hierarchy (every node, immutable once written,
# with its children), the operation log (the edges each edit added or removed), L2 attributes.

cg_graphs = Table(
    "cg_graphs",
    metadata,
    Column("table_id", String(128), primary_key=True),
    Column("world_dir", Text, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    # The edit counter; edits update this row first, which also serialises them.
    Column("last_op_id", BigInteger, nullable=False, default=0),
)

cg_nodes = Table(
    "cg_nodes",
    metadata,
    Column("table_id", String(128), ForeignKey("cg_graphs.table_id", ondelete="CASCADE"), primary_key=True),
    Column("node_id", BigInteger, primary_key=True, autoincrement=False),
    Column("op_id", BigInteger, nullable=False, index=True),  # 0: built at ingest
    Column("children", LargeBinary, nullable=False),  # little-endian uint64 child ids
)

cg_operations = Table(
    "cg_operations",
    metadata,
    Column("table_id", String(128), ForeignKey("cg_graphs.table_id", ondelete="CASCADE"), primary_key=True),
    Column("op_id", BigInteger, primary_key=True, autoincrement=False),
    Column("timestamp", DateTime(timezone=True), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("kind", String(8), nullable=False),  # merge, split, undo, redo
    Column("target_op_id", BigInteger, nullable=True),  # the operation an undo/redo acts on
    Column("details", Text, nullable=False),  # JSON: edges, points, old and new roots
)

l2_attributes = Table(
    "l2_attributes",
    metadata,
    Column("table_id", String(128), ForeignKey("cg_graphs.table_id", ondelete="CASCADE"), primary_key=True),
    Column("l2_id", BigInteger, primary_key=True, autoincrement=False),
    Column("attributes", Text, nullable=False),  # JSON, as the L2 cache answers it
)

# Meshes of L2 nodes (Draco fragments, as the graphene mesh source reads them). A node is
# immutable, so its mesh is made once: on first request, or after the edit that created it.
l2_meshes = Table(
    "l2_meshes",
    metadata,
    Column("table_id", String(128), ForeignKey("cg_graphs.table_id", ondelete="CASCADE"), primary_key=True),
    Column("l2_id", BigInteger, primary_key=True, autoincrement=False),
    Column("fragment", LargeBinary, nullable=False),  # Draco bytes; empty: no surface in its chunk
)


# --- neuroglancer states --------------------------------------------------------------------
# JSON states and segment-property documents of the state service, zlib-compressed as posted.
ngl_documents = Table(
    "ngl_documents",
    metadata,
    Column("kind", String(16), primary_key=True),  # "state" or "property"
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("payload", LargeBinary, nullable=False),  # zlib stream of the JSON text
    Column("user_id", String(64), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
)


# --- skeletons --------------------------------------------------------------------------------
# Skeletons of root ids, made on demand and kept: a root never changes, so its skeleton stays
# valid; an edit makes new roots, which get new skeletons. ``generator`` names the
# skeletonization that made a stored one, so a changed algorithm rebuilds them.
skeletons = Table(
    "skeletons",
    metadata,
    Column("datastack", String(120), ForeignKey("datastacks.name", ondelete="CASCADE"), primary_key=True),
    Column("root_id", BigInteger, primary_key=True, autoincrement=False),
    Column("generator", SmallInteger, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
)

# Root ids the skeleton service refuses to skeletonize (the refusal list).
skeleton_refusals = Table(
    "skeleton_refusals",
    metadata,
    Column("datastack", String(120), ForeignKey("datastacks.name", ondelete="CASCADE"), primary_key=True),
    Column("root_id", BigInteger, primary_key=True, autoincrement=False),
    Column("added", DateTime(timezone=True), nullable=False),
)

# --- annotations -------------------------------------------------------------------------------
# One metadata row per annotation table; the rows of each table live in their own SQL table
# (``row_table``), created from the schema's column layout by ``storage/annotation_rows.py``.

annotation_tables = Table(
    "annotation_tables",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("aligned_volume", String(128), nullable=False),
    Column("table_name", String(128), nullable=False),
    Column("schema_type", String(100), nullable=False),
    Column("description", Text, nullable=False),
    Column("notice_text", Text, nullable=True),
    Column("reference_table", String(128), nullable=True),
    Column("track_target_id_updates", Boolean, nullable=True),
    Column("flat_segmentation_source", String(300), nullable=True),
    Column("voxel_resolution_x", Float, nullable=False),
    Column("voxel_resolution_y", Float, nullable=False),
    Column("voxel_resolution_z", Float, nullable=False),
    Column("read_permission", String(16), nullable=False),  # PUBLIC | GROUP | PRIVATE
    Column("write_permission", String(16), nullable=False),
    Column("user_id", String(255), nullable=False),  # the owner
    Column("created", DateTime(timezone=True), nullable=False),
    Column("deleted", DateTime(timezone=True), nullable=True),  # soft delete
    Column("last_modified", DateTime(timezone=True), nullable=False),
    Column("valid", Boolean, nullable=False, default=True),
    Column("next_id", BigInteger, nullable=False, default=1),  # the id sequence; row lock on writes
    Column("row_table", String(64), nullable=False, unique=True),
    UniqueConstraint("aligned_volume", "table_name", name="uq_annotation_tables_name"),
)


# --- materialization ----------------------------------------------------------------------------
# A version is a set of immutable Parquet files (one per table and view) in ``location``; these
# rows are the registry. A version is visible only once ``status`` is AVAILABLE.

mat_versions = Table(
    "mat_versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("datastack", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("time_stamp", DateTime(timezone=True), nullable=False),  # the frozen moment
    Column("valid", Boolean, nullable=False, default=False),
    Column("expires_on", DateTime(timezone=True), nullable=True),
    Column("status", String(16), nullable=False),  # RUNNING | AVAILABLE | FAILED | EXPIRED
    Column("is_merged", Boolean, nullable=False, default=True),
    Column("created", DateTime(timezone=True), nullable=False),  # when the work started
    Column("location", Text, nullable=False),  # directory of the version's files
    Column("error", Text, nullable=True),
    # While RUNNING: who builds it and when it last made progress, so a restart can tell a
    # version whose builder died (discarded) from one another process is still building.
    Column("worker", String(200), nullable=True),
    Column("heartbeat", DateTime(timezone=True), nullable=True),
    UniqueConstraint("datastack", "version", name="uq_mat_versions_version"),
)

mat_version_tables = Table(
    "mat_version_tables",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version_id", Integer, ForeignKey("mat_versions.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("kind", String(8), nullable=False),  # table | view
    Column("table_name", String(128), nullable=False),
    Column("schema", String(100), nullable=True),
    Column("row_count", BigInteger, nullable=False),
    Column("file", Text, nullable=False),  # relative to the version's location
    Column("created", DateTime(timezone=True), nullable=False),
    Column("metadata", Text, nullable=False),  # JSON: the table's metadata as frozen
    UniqueConstraint("version_id", "kind", "table_name", name="uq_mat_version_tables_name"),
)

mat_views = Table(
    "mat_views",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("datastack", String(128), nullable=False),
    Column("view_name", String(128), nullable=False),
    Column("description", Text, nullable=False),
    Column("query", Text, nullable=False),  # SQL over the version's tables, run by DuckDB at freeze time
    Column("voxel_resolution_x", Float, nullable=False),
    Column("voxel_resolution_y", Float, nullable=False),
    Column("voxel_resolution_z", Float, nullable=False),
    Column("notice_text", Text, nullable=True),
    Column("live_compatible", Boolean, nullable=False, default=False),
    UniqueConstraint("datastack", "view_name", name="uq_mat_views_name"),
)


# --- background jobs ----------------------------------------------------------------------------
# The queue of work done off the request path (versions, imports, skeletons, meshes): any process
# running jobs (``opencave serve`` or ``opencave worker``) claims the oldest queued job of the
# highest priority it handles, keeps its heartbeat fresh while it runs, and records the outcome.
jobs = Table(
    "jobs",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("payload", Text, nullable=False),  # JSON: the job's arguments
    Column("status", String(16), nullable=False),  # queued | running | done | failed | cancelled
    Column("priority", SmallInteger, nullable=False, default=0),
    Column("submitted_by", String(64), nullable=True),  # user id, None for the server's own work
    # Work that must not be queued twice (a datastack's scheduled version): one queued or running
    # job per key, enforced by the partial unique index below.
    Column("key", String(255), nullable=True),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("started", DateTime(timezone=True), nullable=True),
    Column("finished", DateTime(timezone=True), nullable=True),
    Column("attempts", SmallInteger, nullable=False, default=0),
    # Starts allowed: 1 for work a caller waits on (the caller gone, the work is discarded),
    # more for queued work someone was told is accepted (taken up again after a crash).
    Column("max_attempts", SmallInteger, nullable=False, default=3),
    # While running: which process runs it and when it last showed life (see versions.worker_name).
    Column("worker", String(200), nullable=True),
    Column("heartbeat", DateTime(timezone=True), nullable=True),
    Column("progress", Text, nullable=True),  # the latest progress message
    Column("result", Text, nullable=True),  # JSON
    Column("error", Text, nullable=True),
    Index("ix_jobs_claim", "status", "priority", "id"),
)
_ACTIVE = "status IN ('queued', 'running')"
Index("uq_jobs_active_key", jobs.c.key, unique=True, sqlite_where=text(_ACTIVE), postgresql_where=text(_ACTIVE))
