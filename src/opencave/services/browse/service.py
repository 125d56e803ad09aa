"""What the data browser's pages show, computed from the materialized versions, the live store
and the chunkedgraph; nothing here knows of HTTP.

Every page is at a *moment*: a version (its frozen tables, read through the clustered copy of a
root column when a query filters on one root) or a timestamp (the live query engine, which
answers as a fresh materialization would). A neuron page asks each role table (``roles``) only
for rows of the roots it shows, so its cost follows the neuron's synapse count, not the
datastack's size.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from opencave.errors import BadRequest, NotFound
from opencave.services.browse import lineage as lineage_layout
from opencave.services.browse.roles import Roles, Table, as_table, classify
from opencave.services.chunkedgraph import queries
from opencave.services.materialize import planner
from opencave.services.materialize.answers import run
from opencave.services.materialize.requests import parse_timestamp
from opencave.services.materialize.roots import alive_roots
from opencave.services.materialize.versions import format_time
from opencave.services.viewer.links import neuroglancer_state, neuroglancer_url
from opencave.wire.materialize_query import Filter
from opencave.wire.skeletons import LATEST_SKELETON_VERSION

if TYPE_CHECKING:
    from opencave.services.chunkedgraph.index import GraphIndex
    from opencave.services.chunkedgraph.service import GraphService
    from opencave.services.info import InfoRegistry
    from opencave.services.materialize.live import LiveQueries
    from opencave.services.materialize.service import MaterializeService

MAX_ID = 2**63 - 1
MAX_PARTNERS = 100  # partners listed per direction; the totals count them all
PAGE_ROWS = 50  # neurons per page of a cell-type search
MAX_PAGE = 100_000
SEARCH_KINDS = {"root": "root id", "nucleus": "nucleus id", "cell_type": "cell type"}
Readable = Callable[[dict[str, Any]], bool]  # may the caller read the table of this metadata?


def _whole_number(text: str | None, what: str, low: int = 1, high: int = MAX_ID) -> int:
    value = (text or "").strip()
    if not re.fullmatch(r"[0-9]{1,19}", value) or not low <= int(value) <= high:
        raise BadRequest(f"{what} must be a whole number from {low} to {high}; got {value[:40]!r}.", code="bad_parameter")
    return int(value)


@dataclass(frozen=True)
class Moment:
    """The moment a page shows: a version, or a timestamp answered by live queries."""

    datastack: str
    version: int | None
    timestamp: datetime

    @property
    def query(self) -> dict[str, str]:
        """The query-string parameters that name this moment in a link."""
        return {"version": str(self.version)} if self.version is not None else {"timestamp": format_time(self.timestamp)}

    @property
    def label(self) -> str:
        when = self.timestamp.strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"version {self.version} ({when})" if self.version is not None else when


@dataclass(frozen=True)
class VersionEntry:
    version: int
    timestamp: datetime
    valid: bool
    expires_on: datetime | None


@dataclass(frozen=True)
class DatastackPage:
    name: str
    description: str
    moment: Moment
    versions: list[VersionEntry]
    tables: list[tuple[Table, str | None]]  # each readable table and its role
    cell_types: list[tuple[str, int]]  # the preferred cell-type table's types and their counts
    cell_type_tables: list[str]


@dataclass(frozen=True)
class CellType:
    table: str
    classification_system: str | None
    cell_type: str


@dataclass(frozen=True)
class Nucleus:
    table: str
    id: int
    position: tuple[float, float, float]  # voxels of ``resolution``
    resolution: tuple[float, float, float]  # the table's voxel size, nm
    volume: float | None


@dataclass(frozen=True)
class Status:
    table: str
    id: int
    fields: list[tuple[str, Any]]


@dataclass(frozen=True)
class Partner:
    root_id: int
    synapses: int
    cell_types: list[CellType]


@dataclass(frozen=True)
class Partners:
    table: str | None
    partners: list[Partner]  # most synapses first, at most MAX_PARTNERS
    total_partners: int
    total_synapses: int
    unsegmented: int  # synapses whose other side lies on no segment


@dataclass
class NeuronPage:
    datastack: str
    root_id: int
    moment: Moment
    alive: bool | None  # None: the datastack has no segmentation here to tell
    cell_types: list[CellType]
    nuclei: list[Nucleus]
    proofreading: list[Status]
    inputs: Partners
    outputs: Partners
    lineage: lineage_layout.Lineage | None
    links: list[tuple[str, str]] = field(default_factory=list)  # (label, URL path) of API answers
    viewer_url: str | None = None  # the root in Neuroglancer, centred on its nucleus


@dataclass(frozen=True)
class Found:
    root_id: int
    nucleus_id: int | None
    cell_type: str


@dataclass(frozen=True)
class CellTypeSearch:
    table: str
    cell_type: str
    page: int
    rows: list[Found]
    has_next: bool


class BrowseService:
    def __init__(self, info: "InfoRegistry", materialize: "MaterializeService", live: "LiveQueries", graphs: "GraphService") -> None:
        self.info = info
        self.materialize = materialize
        self.live = live
        self.graphs = graphs
        # one page asks for the same records many times: kept for the life of this object (a request)
        self._records: dict[tuple[str, str], dict[str, Any]] = {}
        self._graph_tables: dict[str, str | None] = {}
        self._tables: dict[tuple[Moment, int], list[Table]] = {}
        self._sources: dict[tuple[Moment, str], planner.Source] = {}

    def _record(self, datastack: str, server_url: str = "") -> dict[str, Any]:
        if (datastack, server_url) not in self._records:
            self._records[(datastack, server_url)] = self.info.datastack_info(datastack, server_url)
        return self._records[(datastack, server_url)]

    # -- moments and tables ----------------------------------------------------------------------
    def moment(self, datastack: str, version: str | None = None, timestamp: str | None = None) -> Moment:
        """The moment named by the page's ``version`` or ``timestamp`` text; default the newest version
        (now, with no version)."""
        if version and timestamp:
            raise BadRequest("Give a version or a timestamp, not both.", code="bad_parameter")
        if timestamp:
            value = timestamp.strip()
            moment = parse_timestamp(float(value) if re.fullmatch(r"[0-9]{1,12}(\.[0-9]{1,9})?", value) else value)
            if moment > datetime.now(timezone.utc):
                raise BadRequest(f"timestamp {format_time(moment)} is in the future; ask for a time up to now.", code="timestamp_in_future")
            return Moment(datastack, None, moment)
        if version:
            number = _whole_number(version, "version", 1, 2**31 - 1)
            found = self.materialize.version(datastack, number)
            if not found.valid:
                raise NotFound(f"Version {number} of {datastack} has expired; choose a current version.", code="version_expired")
            return Moment(datastack, number, found.time_stamp)
        versions = self.materialize.registry.list(datastack)
        if not versions:
            self.info.aligned_volume_of(datastack)  # NotFound for unknown datastacks
            return Moment(datastack, None, datetime.now(timezone.utc))
        newest = max(versions, key=lambda v: v.version)
        return Moment(datastack, newest.version, newest.time_stamp)

    def tables(self, moment: Moment, readable: Readable) -> list[Table]:
        """The tables of the moment the caller may read (views aside)."""
        key = (moment, id(readable))
        if key not in self._tables:
            self._tables[key] = self._readable_tables(moment, readable)
        return self._tables[key]

    def _readable_tables(self, moment: Moment, readable: Readable) -> list[Table]:
        if moment.version is not None:
            found = self.materialize.version(moment.datastack, moment.version)
            metas = [{**t.metadata, "row_count": t.row_count} for t in self.materialize.registry.tables(found)]
        else:
            aligned_volume = self.info.aligned_volume_of(moment.datastack)
            metas = self.materialize.annotations.tables_metadata(aligned_volume, timestamp=moment.timestamp)
        tables = [as_table(m) for m in metas if readable(m)]
        return sorted((t for t in tables if t is not None), key=lambda t: t.name)

    def roles(self, moment: Moment, readable: Readable) -> Roles:
        return classify(self.tables(moment, readable), self._record(moment.datastack))

    def rows(self, moment: Moment, table: Table, filters: list[Filter], columns: list[str], offset: int | None = None, limit: int | None = None) -> pa.Table:
        """Rows of ``table`` at the moment that pass ``filters`` (stored columns ``columns``), by id."""
        if moment.version is not None:
            if (moment, table.name) not in self._sources:
                self._sources[(moment, table.name)] = self.materialize.frozen_table(moment.datastack, moment.version, table.name).source
            source = self._sources[(moment, table.name)]
            ordered = offset is not None or limit is not None
            sql, params, _ = planner.simple_select(source, filters, columns, None, offset=offset, limit=limit, order=ordered, add_supervoxels=False)
            schema, batches = run(self.materialize.snapshots.cursor().cursor(), sql, params, stream=False)
            return pa.Table.from_batches(list(batches), schema=schema)
        found = self.live.rows_at(moment.datastack, table.name, moment.timestamp, filters).table().select(columns)
        start = offset or 0
        return found.slice(start, limit) if limit is not None else found.slice(start)

    def _index(self, datastack: str) -> "GraphIndex | None":
        graph = self.graph_table(datastack)
        return self.graphs.graph(graph).index if graph else None

    def graph_table(self, datastack: str) -> str | None:
        if datastack not in self._graph_tables:
            self._graph_tables[datastack] = self.materialize.annotations.segmentation_of(self.info.aligned_volume_of(datastack))
        return self._graph_tables[datastack]

    # -- pages -----------------------------------------------------------------------------------
    def datastack_page(self, moment: Moment, readable: Readable) -> DatastackPage:
        record = self._record(moment.datastack)
        versions = [
            VersionEntry(v.version, v.time_stamp, v.valid, v.expires_on)
            for v in sorted(self.materialize.registry.list(moment.datastack, include_expired=True), key=lambda v: -v.version)
        ]
        tables = self.tables(moment, readable)
        roles = classify(tables, record)
        counts: list[tuple[str, int]] = []
        if roles.cell_type:
            found = self.rows(moment, roles.cell_type[0], [], ["cell_type"])
            grouped = found.group_by("cell_type").aggregate([("cell_type", "count")])
            counts = sorted(zip(grouped["cell_type"].to_pylist(), grouped["cell_type_count"].to_pylist()), key=lambda c: (-c[1], str(c[0])))
            counts = [(str(name), int(n)) for name, n in counts if name is not None]
        return DatastackPage(
            name=moment.datastack,
            description=record.get("description") or "",
            moment=moment,
            versions=versions,
            tables=[(t, roles.role_of(t.name)) for t in tables],
            cell_types=counts,
            cell_type_tables=[t.name for t in roles.cell_type],
        )

    def check_root(self, datastack: str, text: str | None) -> int:
        """The root id a page names, checked against the segmentation when there is one."""
        root_id = _whole_number(text, "root id")
        index = self._index(datastack)
        if index is not None:
            if index.node_index(np.array([root_id], dtype=np.uint64))[0] < 0:
                raise NotFound(f"{root_id} is not a node of {datastack}'s segmentation; check the root id.", code="unknown_root")
            queries.root_indices(index, [root_id])  # BadRequest for a node of a lower layer
        return root_id

    def neuron(self, moment: Moment, root_id: int, readable: Readable, server_url: str) -> NeuronPage:
        """Everything the neuron page shows of ``root_id`` at ``moment`` (``check_root`` first);
        ``server_url`` makes the Neuroglancer link's sources absolute."""
        index = self._index(moment.datastack)
        roles = self.roles(moment, readable)
        alive = None if index is None else bool(alive_roots(index, np.array([root_id]), moment.timestamp.timestamp())[0])
        outputs = self._partners(moment, roles, root_id, "pre_pt_root_id", "post_pt_root_id")
        inputs = self._partners(moment, roles, root_id, "post_pt_root_id", "pre_pt_root_id")
        wanted = {root_id} | {p.root_id for p in outputs.partners} | {p.root_id for p in inputs.partners}
        types = self._cell_types(moment, roles, sorted(wanted))

        def with_types(found: Partners) -> Partners:
            partners = [Partner(p.root_id, p.synapses, types.get(p.root_id, [])) for p in found.partners]
            return Partners(found.table, partners, found.total_partners, found.total_synapses, found.unsegmented)

        graph = self.graph_table(moment.datastack)
        drawn = None
        if index is not None:
            drawn = lineage_layout.layout(queries.lineage_graph(index, [root_id], 0.0, float("inf")), root_id)
        nuclei = self._nuclei(moment, roles, root_id)
        return NeuronPage(
            datastack=moment.datastack,
            root_id=root_id,
            moment=moment,
            alive=alive,
            cell_types=types.get(root_id, []),
            nuclei=nuclei,
            proofreading=self._statuses(moment, roles, root_id),
            inputs=with_types(inputs),
            outputs=with_types(outputs),
            lineage=drawn,
            links=self._links(moment.datastack, root_id, graph),
            viewer_url=self._viewer_url(moment, root_id, nuclei, server_url),
        )

    def _viewer_url(self, moment: Moment, root_id: int, nuclei: list[Nucleus], server_url: str) -> str | None:
        record = self._record(moment.datastack, server_url)
        if not record.get("viewer_site") or not record.get("segmentation_source"):
            return None
        centre = [n for n in nuclei if None not in n.position][:1]
        state = neuroglancer_state(
            record,
            root_ids=[root_id],
            points=[n.position for n in centre],
            point_resolution=centre[0].resolution if centre else None,
            timestamp=moment.timestamp if moment.version is None else None,
            version=moment.version,
        )
        return neuroglancer_url(record["viewer_site"], state)

    def _links(self, datastack: str, root_id: int, graph: str | None) -> list[tuple[str, str]]:
        """The API answers about this root that this server has."""
        links = []
        if self._record(datastack).get("skeleton_source"):
            base = f"/skeletoncache/api/v1/{datastack}/precomputed/skeleton/{LATEST_SKELETON_VERSION}/{root_id}"
            links += [("Skeleton (SWC)", base + "/swc"), ("Skeleton (JSON)", base + "/json")]
        if graph:
            links += [
                ("Mesh manifest", f"/meshing/api/v1/table/{graph}/manifest/{root_id}:0?verify=1"),
                ("Lineage graph (JSON)", f"/segmentation/api/v1/table/{graph}/root/{root_id}/lineage_graph"),
            ]
        return links

    def _partners(self, moment: Moment, roles: Roles, root_id: int, own: str, other: str) -> Partners:
        if not roles.synapse:
            return Partners(None, [], 0, 0, 0)
        table = roles.synapse[0]
        found = self.rows(moment, table, [Filter(table.name, own, "equal", root_id)], [other])
        grouped = found.group_by(other).aggregate([(other, "count")])
        ids = grouped[other].to_numpy(zero_copy_only=False)
        counts = grouped[other + "_count"].to_numpy(zero_copy_only=False)
        unsegmented = int(counts[ids == 0].sum())
        keep = ids != 0
        ids, counts = ids[keep], counts[keep]
        order = np.lexsort((ids, -counts))
        partners = [Partner(int(ids[i]), int(counts[i]), []) for i in order[:MAX_PARTNERS]]
        return Partners(table.name, partners, int(ids.size), int(found.num_rows), unsegmented)

    def _nucleus_rows(self, moment: Moment, table: Table, roots: list[int]) -> pa.Table:
        columns = ["id", "pt_root_id"] + [c for c in ("volume", "pt_position_x", "pt_position_y", "pt_position_z") if table.layout.type_of(c) is not None]
        return self.rows(moment, table, [Filter(table.name, "pt_root_id", "in", roots)], columns)

    def _nuclei(self, moment: Moment, roles: Roles, root_id: int) -> list[Nucleus]:
        out = []
        for table in roles.nucleus:
            for row in self._nucleus_rows(moment, table, [root_id]).to_pylist():
                position = tuple(row.get(f"pt_position_{a}") for a in "xyz")
                meta = table.metadata
                resolution = tuple(float(meta[f"voxel_resolution_{a}"]) for a in "xyz")
                out.append(Nucleus(table.name, row["id"], position, resolution, row.get("volume")))
        return out

    def _cell_types(self, moment: Moment, roles: Roles, roots: list[int]) -> dict[int, list[CellType]]:
        """Cell types of each of ``roots`` from every cell-type table, directly or through its nucleus table."""
        out: dict[int, list[CellType]] = {}
        nuclei: dict[str, dict[int, int]] = {}  # nucleus table -> nucleus id -> root
        by_name = {t.name: t for t in roles.nucleus}
        for table in roles.cell_type:
            columns = ["cell_type"] + (["classification_system"] if table.layout.type_of("classification_system") is not None else [])
            if "pt_root_id" in table.layout.root_columns:
                found = self.rows(moment, table, [Filter(table.name, "pt_root_id", "in", roots)], ["pt_root_id"] + columns)
                owners = found["pt_root_id"].to_pylist()
            else:
                reference = by_name[table.reference_table]
                if reference.name not in nuclei:
                    rows = self._nucleus_rows(moment, reference, roots)
                    nuclei[reference.name] = dict(zip(rows["id"].to_pylist(), rows["pt_root_id"].to_pylist()))
                ids = sorted(nuclei[reference.name])
                if not ids:
                    continue
                found = self.rows(moment, table, [Filter(table.name, "target_id", "in", ids)], ["target_id"] + columns)
                owners = [nuclei[reference.name][t] for t in found["target_id"].to_pylist()]
            systems = found["classification_system"].to_pylist() if "classification_system" in columns else [None] * found.num_rows
            for owner, system, kind in zip(owners, systems, found["cell_type"].to_pylist()):
                if kind is not None:
                    out.setdefault(owner, []).append(CellType(table.name, system, kind))
        return out

    def _statuses(self, moment: Moment, roles: Roles, root_id: int) -> list[Status]:
        out = []
        for table in roles.proofreading:
            shown = [
                name
                for name, _ in table.layout.columns
                if name not in ("id", "valid") and not name.endswith(("_supervoxel_id", "_root_id", "_position_x", "_position_y", "_position_z"))
            ]
            for row in self.rows(moment, table, [Filter(table.name, "pt_root_id", "equal", root_id)], ["id", *shown]).to_pylist():
                out.append(Status(table.name, row["id"], [(name, row[name]) for name in shown]))
        return out

    # -- search ----------------------------------------------------------------------------------
    def nucleus_root(self, moment: Moment, readable: Readable, text: str) -> int:
        """The root holding nucleus ``text`` at the moment (the preferred nucleus table's)."""
        nucleus_id = _whole_number(text, "nucleus id")
        roles = self.roles(moment, readable)
        if not roles.nucleus:
            raise NotFound(f"{moment.datastack} has no nucleus table at {moment.label}.", code="no_nucleus_table")
        table = roles.nucleus[0]
        found = self.rows(moment, table, [Filter(table.name, "id", "equal", nucleus_id)], ["pt_root_id"])
        if found.num_rows == 0:
            raise NotFound(f"No nucleus {nucleus_id} in table {table.name} at {moment.label}.", code="unknown_nucleus")
        root_id = int(found["pt_root_id"][0].as_py())
        if root_id == 0:
            raise NotFound(f"Nucleus {nucleus_id} lies on no segment at {moment.label}.", code="no_segment")
        return root_id

    def cell_type_search(self, moment: Moment, readable: Readable, text: str, table_name: str | None, page_text: str | None) -> CellTypeSearch:
        """One page of the neurons of a cell type, by row id."""
        cell_type = (text or "").strip()
        if not cell_type:
            raise BadRequest("Type a cell type to search for.", code="bad_parameter")
        page = _whole_number(page_text, "page", 1, MAX_PAGE) if page_text else 1
        roles = self.roles(moment, readable)
        tables = {t.name: t for t in roles.cell_type}
        if not tables:
            raise NotFound(f"{moment.datastack} has no cell-type table at {moment.label}.", code="no_cell_type_table")
        if table_name and table_name not in tables:
            raise NotFound(f"{table_name!r} is not a cell-type table of {moment.datastack} at {moment.label}; choose one of {sorted(tables)}.", code="unknown_table")
        table = tables[table_name] if table_name else roles.cell_type[0]
        key = "pt_root_id" if "pt_root_id" in table.layout.root_columns else "target_id"
        found = self.rows(moment, table, [Filter(table.name, "cell_type", "equal", cell_type)], ["id", key, "cell_type"], offset=(page - 1) * PAGE_ROWS, limit=PAGE_ROWS + 1)
        has_next = found.num_rows > PAGE_ROWS
        found = found.slice(0, PAGE_ROWS)
        if key == "pt_root_id":
            rows = [Found(r["pt_root_id"], None, r["cell_type"]) for r in found.to_pylist()]
        else:
            reference = next(t for t in roles.nucleus if t.name == table.reference_table)
            targets = found["target_id"].to_pylist()
            nuclei = self.rows(moment, reference, [Filter(reference.name, "id", "in", sorted(set(targets)))], ["id", "pt_root_id"]) if targets else None
            roots = dict(zip(nuclei["id"].to_pylist(), nuclei["pt_root_id"].to_pylist())) if nuclei is not None else {}
            rows = [Found(roots.get(t, 0), t, cell_type) for t in targets]
        return CellTypeSearch(table.name, cell_type, page, rows, has_next)
