"""Ingest a lab's segmentation as a proofreadable datastack in one step.

Order of work, so that any failure or interruption leaves either nothing or a state the next
run completes:

1. every input is checked (layers opened, agglomeration or edge file read) before anything is
   written, and the names are checked free;
2. the world files are written into ``<worlds>/NAME.partial`` (removed first if an earlier run
   was interrupted) and renamed to ``<worlds>/NAME`` once complete;
3. the chunkedgraph is created from them in one transaction;
4. the dataset, resource mappings, grants and aligned volume are registered, then the datastack
   record, then its first version (empty until tables are added: caveclient's materialize
   client needs a version to exist); a re-run with the same inputs finishes a registration
   that was interrupted. A job started again after its process died once everything was
   registered (but before the job was marked done) finds its own world — the ``run_id`` its
   arguments carry is recorded in it — and ends with that ingest's result.

One ingest of a name runs at a time (a file lock beside the world directory).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from opencave.errors import BadRequest, Conflict
from opencave.services.auth import Access
from opencave.services.chunkedgraph.service import GraphService
from opencave.services.info import InfoRegistry
from opencave.services.materialize.materializer import Materializer
from opencave.services.ingest.agglomeration import GraphEdges, Mapping, check_edges, graph_edges, read_edges
from opencave.services.ingest.source import MAX_CHUNK_VOXELS, WatershedSource, normalise_url, open_layer
from opencave.services.ingest.world import Supervoxels, split_volume
from opencave.services.jobs.progress import Step
from opencave.wire.node_ids import SPATIAL_BITS, NodeIdLayout, layer_count

WORLD_FORMAT = 1
KIND = "ingested"
NAME_PATTERN = "^[A-Za-z][A-Za-z0-9_]{0,99}$"
DEFAULT_CHUNK_SIZE = (64, 64, 32)  # when the watershed's own chunks are too small
# An edit re-meshes and re-measures whole L2 chunks in the background, and the mesh simplifier
# holds the GIL meanwhile: small L2 chunks keep the next edit's latency low.
LARGEST_DEFAULT_CHUNK = 1 << 17
MIN_CHUNK_VOXELS = 1 << 15  # a watershed's own chunks smaller than this are not taken as graph chunks
SMALLEST_CHUNK = 1 << 10  # every chunk costs bookkeeping: smaller ones make a slow, huge graph

Progress = Callable[[str], None]


@dataclass(frozen=True)
class IngestRequest:
    """What ``opencave ingest segmentation`` was asked to do."""

    name: str
    watershed: str
    agglomeration: str | None = None
    edges: str | None = None
    threshold: float | None = None
    image: str | None = None
    chunk_size: tuple[int, int, int] | None = None
    layers: int | None = None
    grant: tuple[str, ...] = ()
    workers: int | None = None
    run_id: str | None = None  # the job's own token, recorded in the world: its later starts know their work

    def source_record(self) -> dict[str, Any]:
        """The inputs that decide the world files (a re-run with the same ones may resume)."""
        record = asdict(self)
        for key in ("name", "grant", "workers", "image", "run_id"):
            record.pop(key)
        record["watershed"] = normalise_url(self.watershed)
        record["chunk_size"] = list(self.chunk_size) if self.chunk_size else None
        return record

    def to_json(self) -> dict[str, Any]:
        """The request as a job's arguments (``from_json`` reads them back)."""
        record = asdict(self)
        record["chunk_size"] = list(self.chunk_size) if self.chunk_size else None
        record["grant"] = list(self.grant)
        return record

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> "IngestRequest":
        chunk_size = record.get("chunk_size")
        return cls(**{**record, "chunk_size": tuple(chunk_size) if chunk_size else None, "grant": tuple(record.get("grant") or ())})


@dataclass(frozen=True)
class IngestResult:
    name: str
    world_dir: Path
    n_voxels: int
    n_supervoxels: int
    n_objects: int
    n_edges: int
    seconds: float
    resumed: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "world_dir": str(self.world_dir)}


class SegmentationIngest:
    """Turns segmentation files into a registered, proofreadable datastack."""

    def __init__(self, graphs: GraphService, access: Access, info: InfoRegistry, materializer: Materializer, data_dir: Path, viewer_site: str) -> None:
        self.graphs = graphs
        self.materializer = materializer
        self.access = access
        self.info = info
        self.worlds = Path(data_dir) / "worlds"
        self.viewer_site = viewer_site

    def ingest(self, request: IngestRequest, progress: Progress | None = None, bars: bool = True) -> IngestResult:
        """Ingest as ``request`` says. The pass over the volume shows a bar on stderr (``bars``)
        or, without, reports its voxels to ``progress`` as ``Step``s (a job's progress)."""
        say = progress or (lambda message: None)
        started = time.perf_counter()
        _check_name(request.name)
        if request.agglomeration and request.edges:
            raise BadRequest("Give --agglomeration or --edges, not both.", code="conflicting_options")
        if request.threshold is not None and not request.edges:
            raise BadRequest("--threshold applies to an --edges file; give one.", code="conflicting_options")
        world_dir = self.worlds / request.name
        self.worlds.mkdir(parents=True, exist_ok=True)
        with self._lock(request.name):
            resumed = self._resumable(request, world_dir)
            if resumed is not None:
                say(f"{request.name}: completing the registration of an earlier ingest")
                self._register(request, resumed)
                return self._result(request, world_dir, started, resumed=True)
            if self._done_by_this_run(request, world_dir):
                say(f"{request.name}: ingested by an earlier start of this job")
                return self._result(request, world_dir, started, resumed=True)
            self._check_free(request.name)
            for group in request.grant:
                self.access.require_group(group)
            source = WatershedSource.open(request.watershed)
            chunk_size = _chunk_size(request.chunk_size, source)
            image = _image(request.image)
            mapping = Mapping.read(request.agglomeration) if request.agglomeration else None
            edges = read_edges(request.edges) if request.edges else None
            grid = tuple(-(-s // c) for s, c in zip(source.size, chunk_size))
            layout = _layout(grid, request.layers)
            say(
                f"{request.name}: {source.n_voxels:,} voxels of {source.url} ({source.encoding}, chunks {_xyz(source.chunk_size)}) "
                f"into graph chunks {_xyz(chunk_size)} ({int(np.prod(grid)):,} chunks, {layout.n_layers} layers)"
            )
            staging = world_dir.with_name(world_dir.name + ".partial")
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            timings: dict[str, float] = {}
            try:
                t0 = time.perf_counter()
                voxels = None if bars else (lambda done, total: say(Step(request.name, done, total, "voxels")))
                supervoxels = split_volume(
                    source, staging / "ws", chunk_size, layout, progress=bars, workers=request.workers, label=request.name, on_voxels=voxels
                )
                timings["split"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                volume_labels = np.unique(supervoxels.sv_label)
                segments = mapping.segments_of(volume_labels) if mapping is not None else None
                if edges is not None:
                    check_edges(edges, volume_labels)
                joined = graph_edges(supervoxels.sv_label, supervoxels.contacts, segments, edges, request.threshold)
                n_objects = _object_count(supervoxels, joined)
                _write_world(staging, request, source, chunk_size, grid, layout, supervoxels, joined, image, n_objects)
                timings["graph"] = time.perf_counter() - t0
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            shutil.rmtree(world_dir, ignore_errors=True)  # the files of an interrupted run
            staging.rename(world_dir)
            t0 = time.perf_counter()
            try:
                self.graphs.create_graph(request.name, world_dir, time.time(), progress=say)
            except BaseException:
                if not self.graphs.exists(request.name):
                    shutil.rmtree(world_dir, ignore_errors=True)
                raise
            timings["store"] = time.perf_counter() - t0
            world = _read_world(world_dir)
            self._register(request, world)
            result = self._result(request, world_dir, started, timings=timings)
            say(
                f"{request.name}: {result.n_supervoxels:,} supervoxels, {result.n_objects:,} objects, {result.n_edges:,} edges "
                f"in {result.seconds:.1f} s ({result.n_voxels / max(result.seconds, 1e-9) / 1e6:.1f} M voxels/s)"
            )
            return result

    # -- steps -------------------------------------------------------------------------------
    @contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        path = self.worlds / f"{name}.ingest.lock"
        with open(path, "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Conflict(f"Another ingest of {name} is running; wait for it or stop it.", code="ingest_running") from None
            if not path.exists() or os.stat(path).st_ino != os.fstat(handle.fileno()).st_ino:
                raise Conflict(f"Another ingest of {name} finished just now; run again to see its result.", code="ingest_running")
            try:
                yield
            finally:  # nobody waits on the lock (others give up at once), so it can go while held
                path.unlink(missing_ok=True)

    def _check_free(self, name: str) -> None:
        if name in self.info.datastack_names():
            raise Conflict(f"Datastack {name} exists already; choose another name.", code="datastack_exists")
        if self.graphs.exists(name):
            raise Conflict(f"A chunkedgraph {name} exists already; choose another name.", code="graph_exists")
        if name in self.info.aligned_volume_names():
            raise Conflict(f"An aligned volume {name} exists already; choose another name.", code="aligned_volume_exists")

    def _resumable(self, request: IngestRequest, world_dir: Path) -> dict[str, Any] | None:
        """The world of an earlier run of this same ingest whose graph is stored but whose
        registration did not finish, else None."""
        if not (world_dir / "world.json").is_file() or not self.graphs.exists(request.name):
            return None
        world = _read_world(world_dir)
        if world.get("kind") != KIND:
            return None
        if request.name in self.info.datastack_names() and self.materializer.registry.list(request.name, include_expired=True):
            return None
        if world.get("source") != request.source_record():
            raise Conflict(
                f"Chunkedgraph {request.name} was ingested from other inputs ({world.get('source')}); choose another name.",
                code="graph_exists",
            )
        return world

    def _done_by_this_run(self, request: IngestRequest, world_dir: Path) -> bool:
        """Whether an earlier start of this same job (its ``run_id``) registered the datastack
        completely: graph, datastack and first version exist, and the world is that run's."""
        if request.run_id is None or not (world_dir / "world.json").is_file():
            return False
        world = _read_world(world_dir)
        return (
            world.get("kind") == KIND
            and world.get("run_id") == request.run_id
            and world.get("source") == request.source_record()
            and self.graphs.exists(request.name)
            and request.name in self.info.datastack_names()
            and bool(self.materializer.registry.list(request.name, include_expired=True))
        )

    def _register(self, request: IngestRequest, world: dict[str, Any]) -> None:
        name = request.name
        with suppress(Conflict):
            self.access.create_dataset(name)
        for namespace in ("aligned_volume", "pychunkedgraph", "datastack"):
            self.access.map_resource(namespace, name, name)
        for group in request.grant:
            for permission in ("view", "edit"):
                self.access.grant(group, name, permission)
        image = world.get("image") or {}
        image_source = image.get("source", "")
        if name not in self.info.aligned_volume_names():
            self.info.add_aligned_volume(
                name, image_source=image_source, description=f"Aligned volume of the segmentation ingested from {world['source']['watershed']}.", display_name=name
            )
        resolution = world["resolution"]
        if name not in self.info.datastack_names():
            self.info.add_datastack(
                name,
                name,
                display_name=name,
                description=f"Segmentation ingested from {world['source']['watershed']}.",
                segmentation_source="graphene://{local_server}/segmentation/table/" + name,
                skeleton_source="precomputed://{local_server}/skeletoncache/api/v1/" + name + "/precomputed/skeleton/",
                viewer_site=self.viewer_site,
                viewer_resolution_x=float(resolution[0]),
                viewer_resolution_y=float(resolution[1]),
                viewer_resolution_z=float(resolution[2]),
            )
        if not self.materializer.registry.list(name, include_expired=True):
            self.materializer.create_version(name)

    def _result(self, request: IngestRequest, world_dir: Path, started: float, resumed: bool = False, timings: dict[str, float] | None = None) -> IngestResult:
        world = _read_world(world_dir)
        return IngestResult(
            name=request.name,
            world_dir=world_dir,
            n_voxels=int(np.prod(world["volume_size"])),
            n_supervoxels=int(world["n_supervoxels"]),
            n_objects=int(world["n_objects"]),
            n_edges=int(world["n_edges"]),
            seconds=time.perf_counter() - started,
            resumed=resumed,
            timings=timings or {},
        )


# -- helpers ------------------------------------------------------------------------------------
def _check_name(name: str) -> None:
    if not re.match(NAME_PATTERN, name):
        raise BadRequest(
            f"{name!r} cannot name a datastack: use a letter followed by letters, digits or underscores (at most 100).",
            code="bad_name",
        )


def _xyz(values: Any) -> str:
    return "×".join(str(v) for v in values)


def _chunk_size(asked: tuple[int, int, int] | None, source: WatershedSource) -> tuple[int, int, int]:
    """The graph's chunk size: as asked, else made from the watershed's own (``default_chunk_size``)."""
    if asked is not None:
        if any(int(v) < 1 for v in asked):
            raise BadRequest(f"--chunk-size {_xyz(asked)}: every size must be at least 1 voxel.", code="bad_chunk_size")
        if int(np.prod(asked)) < SMALLEST_CHUNK:
            raise BadRequest(f"--chunk-size {_xyz(asked)} holds fewer than {SMALLEST_CHUNK:,} voxels; choose larger chunks (e.g. 64 64 16).", code="bad_chunk_size")
        if int(np.prod(asked)) > MAX_CHUNK_VOXELS:
            raise BadRequest(f"--chunk-size {_xyz(asked)} holds more than {MAX_CHUNK_VOXELS:,} voxels; choose smaller chunks.", code="bad_chunk_size")
        return tuple(int(v) for v in asked)  # type: ignore[return-value]
    return default_chunk_size(source.chunk_size, source.resolution)


def default_chunk_size(layer_chunk: tuple[int, int, int], resolution: tuple[float, float, float]) -> tuple[int, int, int]:
    """The layer's chunk, halved along its physically longest even axis while it holds more than
    ``LARGEST_DEFAULT_CHUNK`` voxels (so a graph chunk divides the layer's, which is then decoded
    once for several of them); a layer with tiny chunks gets ``DEFAULT_CHUNK_SIZE``."""
    size = [int(v) for v in layer_chunk]
    if int(np.prod(size)) < MIN_CHUNK_VOXELS:
        return DEFAULT_CHUNK_SIZE
    while int(np.prod(size)) > LARGEST_DEFAULT_CHUNK:
        even = [k for k in range(3) if size[k] % 2 == 0 and size[k] >= 16]
        if not even:
            break
        longest = max(even, key=lambda k: size[k] * float(resolution[k]))
        size[longest] //= 2
    return tuple(size)  # type: ignore[return-value]


def _layout(grid: tuple[int, ...], layers: int | None) -> NodeIdLayout:
    needed = layer_count(grid)  # type: ignore[arg-type]
    if layers is not None and layers < needed:
        raise BadRequest(f"--layers {layers} is too few for {_xyz(grid)} chunks; at least {needed} are needed.", code="bad_layers")
    if (layers or needed) - 2 > SPATIAL_BITS:
        raise BadRequest(
            f"--layers {layers or needed} is more than node ids hold (at most {SPATIAL_BITS + 2}); "
            + ("choose fewer layers." if layers else "choose a larger --chunk-size."),
            code="bad_layers",
        )
    layout = NodeIdLayout.for_layers(layers or needed)
    if max(grid) > 1 << layout.bits[1]:
        raise BadRequest(f"{_xyz(grid)} chunks are too many for node ids; choose a larger --chunk-size.", code="bad_chunk_size")
    return layout


def _image(url: str | None) -> dict[str, Any] | None:
    """The image layer: checked readable; a local one is served by this server, others linked."""
    if not url:
        return None
    volume = open_layer(url, "image")
    if volume.layer_type != "image":
        raise BadRequest(f"The layer at {url} is a {volume.layer_type!r} layer; --image needs an image layer.", code="not_an_image")
    location = normalise_url(url)
    if location.startswith("file://"):
        if any(scale.get("sharding") for scale in volume.info["scales"]):
            raise BadRequest(
                f"The image at {url} is sharded; this server serves local images unsharded only. Serve it over http(s) and give that URL.",
                code="sharded_local_image",
            )
        return {"url": location, "directory": location[len("file://") :], "source": None}
    return {"url": location, "source": "precomputed://" + location}


def _object_count(supervoxels: Supervoxels, joined: GraphEdges) -> int:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = supervoxels.sv_ids.size
    active = joined.active
    graph = coo_matrix((np.ones(int(active.sum()), np.int8), (joined.a[active], joined.b[active])), shape=(n, n))
    return int(connected_components(graph, directed=False)[0]) if n else 0


def _write_world(
    directory: Path,
    request: IngestRequest,
    source: WatershedSource,
    chunk_size: tuple[int, int, int],
    grid: tuple[int, ...],
    layout: NodeIdLayout,
    supervoxels: Supervoxels,
    joined: GraphEdges,
    image: dict[str, Any] | None,
    n_objects: int,
) -> None:
    ids = supervoxels.sv_ids
    order = np.lexsort((joined.b, joined.a))
    np.savez(
        directory / "graph.npz",
        chunk_sv_counts=supervoxels.chunk_sv_counts,
        edges=np.stack([ids[joined.a[order]], ids[joined.b[order]]], axis=1),
        affinity=joined.affinity[order],
        area=joined.area[order],
        initially_active=joined.active[order],
        sv_ids=ids,
        sv_label=supervoxels.sv_label,
        sv_voxels=supervoxels.sv_voxels,
    )
    if image is not None and image.get("directory"):
        image["source"] = "precomputed://{local_server}/volumes/" + request.name + "/image"
    world = {
        "format": WORLD_FORMAT,
        "kind": KIND,
        "name": request.name,
        "source": request.source_record(),
        "run_id": request.run_id,
        "image": image,
        "resolution": list(source.resolution),
        "voxel_offset": list(source.voxel_offset),
        "volume_size": list(source.size),
        "chunk_size": list(chunk_size),
        "chunks_per_axis": list(grid),
        "n_layers": layout.n_layers,
        "spatial_bit_masks": {str(k): v for k, v in layout.bits.items()},
        "n_supervoxels": int(ids.size),
        "n_edges": int(joined.a.size),
        "n_objects": n_objects,
    }
    (directory / "world.json").write_text(json.dumps(world, indent=1) + "\n")


def _read_world(world_dir: Path) -> dict[str, Any]:
    return json.loads((world_dir / "world.json").read_text())
