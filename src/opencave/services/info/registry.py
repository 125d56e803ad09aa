"""Aligned volumes, datastacks and image mirrors, and the full datastack record caveclient reads.

Stored sources may contain the placeholder ``{local_server}``; it is replaced by the serving
address when a record is read, so a datastack served by this server keeps working when the
server moves (a new ``--public-url``) without rewriting the database.
"""

from __future__ import annotations

import copy

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from opencave.errors import BadRequest, Conflict, NotFound
from opencave.services.viewer import BUNDLED_VIEWER_SITE
from opencave.storage.state import INFO_GENERATION, GenerationCache, Generations, bump_generation
from opencave.storage.sql import reader
from opencave.storage.tables import aligned_volumes, datastacks, image_sources

LOCAL_SERVER = "{local_server}"

DATASTACK_FIELDS = (
    "segmentation_source",
    "skeleton_source",
    "analysis_database",
    "viewer_site",
    "synapse_table",
    "soma_table",
    "local_server",
    "description",
    "viewer_resolution_x",
    "viewer_resolution_y",
    "viewer_resolution_z",
    "proofreading_status_table",
    "cell_identification_table",
    "proofreading_review_table",
)


def _expand(value, server_url: str):
    return value.replace(LOCAL_SERVER, server_url) if isinstance(value, str) else value


def _volume_json(row, server_url: str) -> dict:
    return {
        "id": row.id,
        "name": row.name,
        "display_name": row.display_name,
        "description": row.description,
        "image_source": _expand(row.image_source, server_url),
    }


class InfoRegistry:
    """Writes bump the info generation, so cached records are dropped by every server process."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._records: GenerationCache[dict] = GenerationCache(limit=1024)
        self._volumes: GenerationCache[str] = GenerationCache()

    # -- writes --------------------------------------------------------------------------------
    def add_aligned_volume(self, name: str, image_source: str, description: str = "", display_name: str | None = None) -> int:
        with self.engine.begin() as conn:
            try:
                volume_id = conn.execute(
                    insert(aligned_volumes).values(
                        name=name, image_source=image_source, description=description, display_name=display_name
                    )
                ).inserted_primary_key[0]
            except IntegrityError:
                raise Conflict(f"Aligned volume '{name}' already exists.", code="aligned_volume_exists") from None
            bump_generation(conn, INFO_GENERATION)
            return volume_id

    def add_datastack(self, name: str, aligned_volume: str, **fields) -> int:
        """Register a datastack; its ``viewer_site`` is the bundled Neuroglancer unless given."""
        fields.setdefault("viewer_site", BUNDLED_VIEWER_SITE)
        unknown = set(fields) - set(DATASTACK_FIELDS) - {"display_name", "base_link_id"}
        if unknown:
            raise BadRequest(f"Unknown datastack fields {sorted(unknown)}; known: {sorted(DATASTACK_FIELDS)}.", code="invalid_field")
        with self.engine.begin() as conn:
            volume_id = self._volume_id(conn, aligned_volume)
            try:
                datastack_id = conn.execute(
                    insert(datastacks).values(name=name, aligned_volume_id=volume_id, **fields)
                ).inserted_primary_key[0]
            except IntegrityError:
                raise Conflict(f"Datastack '{name}' already exists.", code="datastack_exists") from None
            bump_generation(conn, INFO_GENERATION)
            return datastack_id

    def update_datastack(self, name: str, **fields) -> None:
        """Change fields of an existing datastack (e.g. its ``viewer_site``)."""
        unknown = set(fields) - set(DATASTACK_FIELDS) - {"display_name"}
        if unknown:
            raise BadRequest(f"Unknown datastack fields {sorted(unknown)}; known: {sorted(DATASTACK_FIELDS)}.", code="invalid_field")
        with self.engine.begin() as conn:
            if conn.execute(update(datastacks).where(datastacks.c.name == name).values(**fields)).rowcount == 0:
                raise NotFound(self._unknown_datastack(name), code="unknown_datastack")
            bump_generation(conn, INFO_GENERATION)

    def add_image_source(self, name: str, aligned_volume: str, image_source: str, description: str = "", viewer_layer_name: str | None = None) -> int:
        with self.engine.begin() as conn:
            volume_id = self._volume_id(conn, aligned_volume)
            try:
                source_id = conn.execute(
                    insert(image_sources).values(
                        name=name,
                        aligned_volume_id=volume_id,
                        image_source=image_source,
                        description=description,
                        viewer_layer_name=viewer_layer_name,
                    )
                ).inserted_primary_key[0]
            except IntegrityError:
                raise Conflict(f"Image source '{name}' already exists.", code="image_source_exists") from None
            bump_generation(conn, INFO_GENERATION)
            return source_id

    # -- reads ---------------------------------------------------------------------------------
    def datastack_names(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(datastacks.c.name).order_by(datastacks.c.name)).scalars())

    def viewer_sites(self, server_url: str) -> list[str]:
        """The distinct viewer sites of all datastacks: the web apps a login may hand a token to."""
        with self.engine.connect() as conn:
            sites = conn.execute(select(datastacks.c.viewer_site).where(datastacks.c.viewer_site.is_not(None)).distinct()).scalars()
            return sorted({_expand(site, server_url) for site in sites if site})

    def aligned_volume_names(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(aligned_volumes.c.name).order_by(aligned_volumes.c.name)).scalars())

    def aligned_volume(self, name: str, server_url: str) -> dict:
        with self.engine.connect() as conn:
            row = conn.execute(select(aligned_volumes).where(aligned_volumes.c.name == name)).first()
        if row is None:
            raise NotFound(f"Unknown aligned volume '{name}'; list them at /info/api/v2/aligned_volume.", code="unknown_aligned_volume")
        return _volume_json(row, server_url)

    def aligned_volume_by_id(self, volume_id: int, server_url: str) -> dict:
        with self.engine.connect() as conn:
            row = conn.execute(select(aligned_volumes).where(aligned_volumes.c.id == volume_id)).first()
        if row is None:
            raise NotFound(f"No aligned volume has id {volume_id}.", code="unknown_aligned_volume")
        return _volume_json(row, server_url)

    def datastacks_of_volume(self, aligned_volume: str) -> list[str]:
        with self.engine.connect() as conn:
            volume_id = self._volume_id(conn, aligned_volume)
            return list(
                conn.execute(
                    select(datastacks.c.name).where(datastacks.c.aligned_volume_id == volume_id).order_by(datastacks.c.name)
                ).scalars()
            )

    def aligned_volume_of(self, datastack: str, info: str | None = None) -> str:
        """The datastack's aligned volume (NotFound for unknown datastacks); no query when the
        request's ``info`` generation is given and the answer is known for it."""

        def read() -> str:
            with reader(self.engine).connect() as conn:
                name = conn.execute(
                    select(aligned_volumes.c.name)
                    .join(datastacks, datastacks.c.aligned_volume_id == aligned_volumes.c.id)
                    .where(datastacks.c.name == datastack)
                ).scalar()
            if name is None:
                raise NotFound(self._unknown_datastack(datastack), code="unknown_datastack")
            return name

        return self._volumes.get(datastack, info, read)

    def cached_datastack_info(
        self, name: str, server_url: str, generations: Generations, image_source_name: str | None = None
    ) -> dict:
        """``datastack_info`` from a per-process cache that the info generation invalidates."""
        record = self._records.get(
            (name, server_url, image_source_name), generations.info, lambda: self.datastack_info(name, server_url, image_source_name)
        )
        return copy.deepcopy(record)

    def datastack_info(self, name: str, server_url: str, image_source_name: str | None = None) -> dict:
        """The full datastack record (``/info/api/v2/datastack/full/{name}``); every key present."""
        with self.engine.connect() as conn:
            row = conn.execute(select(datastacks).where(datastacks.c.name == name)).first()
            if row is None:
                raise NotFound(self._unknown_datastack(name), code="unknown_datastack")
            volume = conn.execute(select(aligned_volumes).where(aligned_volumes.c.id == row.aligned_volume_id)).first()
        record = {"aligned_volume": _volume_json(volume, server_url)}
        for key in DATASTACK_FIELDS:
            record[key] = _expand(getattr(row, key), server_url)
        if record["local_server"] is None:
            record["local_server"] = server_url
        if image_source_name is not None:
            mirrors = {m["name"]: m for m in self.image_sources(name, server_url)}
            if image_source_name not in mirrors:
                raise NotFound(
                    f"Datastack '{name}' has no image source '{image_source_name}'; available: {sorted(mirrors)}.",
                    code="unknown_image_source",
                )
            record["aligned_volume"]["image_source"] = mirrors[image_source_name]["image_source"]
        return record

    def image_sources(self, datastack: str, server_url: str) -> list[dict]:
        with self.engine.connect() as conn:
            volume_id = conn.execute(select(datastacks.c.aligned_volume_id).where(datastacks.c.name == datastack)).scalar()
            if volume_id is None:
                raise NotFound(self._unknown_datastack(datastack), code="unknown_datastack")
            rows = conn.execute(
                select(image_sources).where(image_sources.c.aligned_volume_id == volume_id).order_by(image_sources.c.id)
            ).all()
        return [
            {
                "id": r.id,
                "name": r.name,
                "viewer_layer_name": r.viewer_layer_name,
                "image_source": _expand(r.image_source, server_url),
                "description": r.description,
            }
            for r in rows
        ]

    @staticmethod
    def _volume_id(conn, name: str) -> int:
        volume_id = conn.execute(select(aligned_volumes.c.id).where(aligned_volumes.c.name == name)).scalar()
        if volume_id is None:
            raise NotFound(f"Unknown aligned volume '{name}'.", code="unknown_aligned_volume")
        return volume_id

    @staticmethod
    def _unknown_datastack(name: str) -> str:
        return f"Unknown datastack '{name}'; list the datastacks you can see with client.info.get_datastacks()."
