"""Server and command-line settings: where data lives, which database, how the server is reached."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from opencave.services.viewer import BUNDLED_VIEWER_SITE
from opencave.storage.version_files import DEFAULT_CACHE_BYTES, is_remote, parse_size

DEFAULT_PORT = 8765
DEFAULT_DATA_DIR = "~/.opencave"
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_IMPORT_BYTES = 16 * 1024**3  # a file uploaded to import into an annotation table


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    public_url: str = ""
    auth_enabled: bool = True
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_import_bytes: int = DEFAULT_MAX_IMPORT_BYTES
    # The viewer site given to datastacks opencave creates; by default the bundled Neuroglancer.
    viewer_site: str = BUNDLED_VIEWER_SITE
    versions_dir: Path | None = None  # frozen version files; default <data_dir>/versions
    # Frozen version files on object storage (s3://, gs://, any fsspec URL) instead of a
    # directory; read through a local cache of at most versions_cache_bytes (docs/versions.md).
    versions_url: str | None = None
    versions_cache_bytes: int = DEFAULT_CACHE_BYTES
    query_row_limit: int | None = None  # an operator's cap on query answers; None: complete answers
    # Web origins allowed to call the API from a browser (Neuroglancer served from another site
    # loads states, meshes and skeletons); "*" allows any, empty allows none.
    cors_origins: tuple[str, ...] = ("*",)
    # Origins, besides this server's and its datastacks' viewer sites, that the login may hand a
    # token to (``/sticky_auth/api/v1/authorize?redirect=``); see docs/auth.md.
    redirect_origins: tuple[str, ...] = ()
    # Threads of this process that run queued jobs (versions, imports, skeletons); 0 leaves them
    # to `opencave worker` processes.
    job_threads: int = 1

    @property
    def version_root(self) -> Path:
        """Where materialized versions are written (shared storage when several servers run)."""
        return self.versions_dir or self.data_dir / "versions"

    @property
    def versions_location(self) -> str:
        """Where new versions go: the object-storage URL, else the local directory."""
        return self.versions_url or str(self.version_root)

    @property
    def server_url(self) -> str:
        """The address clients use to reach this server (no trailing slash)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"


def resolve_settings(
    data_dir: str | None = None,
    database: str | None = None,
    host: str | None = None,
    port: int | None = None,
    public_url: str | None = None,
    auth_enabled: bool = True,
    versions_url: str | None = None,
    versions_cache_size: str | int | None = None,
) -> Settings:
    """Settings from explicit values, then ``OPENCAVE_*`` environment variables, then defaults."""
    directory = Path(
        os.path.expanduser(data_dir or os.environ.get("OPENCAVE_DATA_DIR") or DEFAULT_DATA_DIR)
    ).resolve()
    database_url = database or os.environ.get("OPENCAVE_DATABASE_URL") or f"sqlite:///{directory / 'opencave.db'}"
    versions_url = versions_url or os.environ.get("OPENCAVE_VERSIONS_URL") or None
    versions_dir = os.environ.get("OPENCAVE_VERSIONS_DIR") or None
    if versions_url and not is_remote(versions_url):  # a plain path or file://: a directory
        versions_dir, versions_url = versions_url.removeprefix("file://"), None
    cache_size = versions_cache_size or os.environ.get("OPENCAVE_VERSIONS_CACHE_SIZE")
    return Settings(
        data_dir=directory,
        database_url=database_url,
        host=host or os.environ.get("OPENCAVE_HOST") or "127.0.0.1",
        port=int(port or os.environ.get("OPENCAVE_PORT") or DEFAULT_PORT),
        public_url=public_url or os.environ.get("OPENCAVE_PUBLIC_URL") or "",
        auth_enabled=auth_enabled,
        versions_dir=Path(os.path.expanduser(versions_dir)).resolve() if versions_dir else None,
        versions_url=versions_url.rstrip("/") if versions_url else None,
        versions_cache_bytes=parse_size(cache_size) if cache_size else DEFAULT_CACHE_BYTES,
        query_row_limit=int(os.environ["OPENCAVE_QUERY_ROW_LIMIT"]) if os.environ.get("OPENCAVE_QUERY_ROW_LIMIT") else None,
        max_import_bytes=int(os.environ.get("OPENCAVE_MAX_IMPORT_BYTES") or DEFAULT_MAX_IMPORT_BYTES),
        cors_origins=cors_origins(os.environ.get("OPENCAVE_CORS_ORIGINS", "*")),
        redirect_origins=cors_origins(os.environ.get("OPENCAVE_REDIRECT_ORIGINS", "")),
        viewer_site=os.environ.get("OPENCAVE_VIEWER_SITE") or BUNDLED_VIEWER_SITE,
        job_threads=int(os.environ.get("OPENCAVE_JOB_THREADS") or 1),
    )


def cors_origins(value: str) -> tuple[str, ...]:
    """Comma-separated origins (``https://host[:port]``) or ``*``."""
    return tuple(origin.strip().rstrip("/") for origin in value.split(",") if origin.strip())
