"""What `opencave ingest segmentation` accepts and refuses, and how it recovers.

Small segmentations are written here with cloud-volume into ``file://`` precomputed layers in
every encoding (raw, compressed_segmentation, compresso, crackle), sharded or not, with voxel
offsets, chunk sizes that do not divide the volume, labels above 2**32 and uint32 data. Each
ingests to a graph whose roots partition the voxels exactly as the labels (or, with an
agglomeration file in any format, the mapped segments) do, and every original label answers
the one root it lies in. Bad inputs fail with a message saying what to fix and leave nothing
registered; an ingest that fails while storing, is interrupted while registering or is killed
mid-pass is cleaned up or completed by the next run; two ingests of one name do not run at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from opencave import cli
from opencave.config import resolve_settings
from opencave.errors import BadRequest, Conflict, NotFound
from opencave.runtime import Runtime
from opencave.services.chunkedgraph.service import GraphService
from opencave.services.info import InfoRegistry
from opencave.services.ingest.service import IngestRequest, IngestResult
from tests.support.segmentations import (
    assert_label_roots,
    assert_nothing_registered,
    assert_same_partition,
    assert_supervoxels_refine,
    flat_segmentation,
    ingested,
    over_segment,
    read_layer,
    registered,
    write_layer,
    write_table,
)

SHAPE = (40, 36, 20)
OFFSET = (12, 8, 4)
INPUT_CHUNKS = (16, 16, 8)  # none divides the volume
GRAPH_CHUNKS = (16, 16, 8)  # a 3×3×3 grid of graph chunks, the last ones partial
SPLIT_LABEL = 2**64 - 2  # one label in two pieces that touch nowhere
LABELS = np.array([2**40 + 1000 * k + 7 for k in range(9)], dtype=np.uint64)
ALL_LABELS = np.append(LABELS, np.uint64(SPLIT_LABEL))


@dataclass
class Store:
    runtime: Runtime
    data: Path
    database: str | None

    def ingest(self, name: str, watershed: str, **options) -> IngestResult:
        return self.runtime.ingest.ingest(IngestRequest(name=name, watershed=watershed, **options), bars=False)

    def nothing(self, name: str) -> None:
        assert_nothing_registered(self.runtime, self.data, name)


def open_store(directory: Path, database: str | None) -> Store:
    runtime = Runtime.open(resolve_settings(str(directory), database))
    runtime.prepare()
    return Store(runtime, runtime.settings.data_dir, database)


@pytest.fixture(scope="module")
def store(backend, database_for, tmp_path_factory):
    """An empty store on each engine, shared by the module's tests (each uses its own names)."""
    opened = open_store(tmp_path_factory.mktemp(f"ingest-{backend}") / "data", database_for(backend))
    yield opened
    opened.runtime.engine.dispose()


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory):
    """For cases whose storage is the same as the basic ingest's: one engine is enough."""
    opened = open_store(tmp_path_factory.mktemp("ingest-sqlite-only") / "data", None)
    yield opened
    opened.runtime.engine.dispose()


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return flat_segmentation(SHAPE, LABELS, seed=15, split_label=SPLIT_LABEL)


@pytest.fixture(scope="module")
def flat_url(labels, tmp_path_factory) -> str:
    return write_layer(tmp_path_factory.mktemp("flat") / "seg", labels, offset=OFFSET, chunk_size=INPUT_CHUNKS)


def check_flat(store: Store, name: str, labels: np.ndarray, offset=OFFSET, objects: np.ndarray | None = None) -> dict[int, int]:
    """The ingested graph's roots are the objects (the labels unless given), voxel by voxel."""
    handle, supervoxels, roots = ingested(store.runtime, name, offset, labels.shape)
    assert_supervoxels_refine(labels, supervoxels)
    objects = labels if objects is None else objects
    root_of_object = assert_same_partition(objects, roots)
    root_of_label = {int(label): root_of_object[int(objects[tuple(np.argwhere(labels == label)[0])])] for label in np.unique(labels[labels > 0])}
    assert_label_roots(handle, labels, root_of_label)
    return root_of_object


# -- 1. encodings and layouts --------------------------------------------------------------------------
def test_flat_segmentation_ingests_on_each_engine(store, labels, flat_url):
    """Raw encoding, a voxel offset, chunks that divide nothing, labels above 2**32 (up to
    2**64 - 2), a label in two separate pieces: every label becomes one root."""
    result = store.ingest("flat", flat_url, chunk_size=GRAPH_CHUNKS, grant=("default",))
    assert (result.n_objects, result.n_voxels, result.resumed) == (ALL_LABELS.size, int(np.prod(SHAPE)), False)
    root_of = check_flat(store, "flat", labels)
    assert sorted(root_of) == sorted(ALL_LABELS.tolist())
    handle = store.runtime.graphs.graph("flat")
    # supervoxels are cut at graph chunk boundaries: objects cross several chunks
    assert result.n_supervoxels > 2 * ALL_LABELS.size
    assert handle.labels.roots(handle.index, SPLIT_LABEL, handle.index.seq).supervoxels.size >= 2
    assert handle.world["chunks_per_axis"] == [3, 3, 3] and handle.world["voxel_offset"] == list(OFFSET)
    assert all(registered(store.runtime, store.data, "flat")[part] for part in ("datastack", "aligned_volume", "chunkedgraph", "dataset", "world"))
    assert not registered(store.runtime, store.data, "flat")["partial"]
    assert {"group": "default", "dataset": "flat", "permission": "edit"} in store.runtime.access.grants("flat")


def test_a_layer_served_over_http(sqlite_store, labels, flat_url):
    """The same layer read from a web server (as from a lab's bucket behind https) ingests alike."""
    import functools
    import http.server
    import threading

    directory = Path(flat_url[len("file://") :])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory.parent))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        url = f"precomputed://http://127.0.0.1:{web.server_address[1]}/{directory.name}"
        result = sqlite_store.ingest("over_http", url, chunk_size=GRAPH_CHUNKS)
    finally:
        web.shutdown()
    assert result.n_objects == ALL_LABELS.size
    check_flat(sqlite_store, "over_http", labels)


LAYOUTS = {
    # name: (write_layer options, ingest options, uint32 labels)
    "compressed_segmentation": (dict(encoding="compressed_segmentation"), dict(chunk_size=(24, 20, 12)), False),
    "compresso": (dict(encoding="compresso", chunk_size=(20, 12, 8)), dict(chunk_size=GRAPH_CHUNKS), False),
    "crackle": (dict(encoding="crackle", extra_scale=True), dict(chunk_size=(24, 20, 12)), False),
    "sharded": (dict(encoding="compressed_segmentation", sharded=True), dict(chunk_size=GRAPH_CHUNKS), False),
    "sharded_raw_no_offset": (dict(encoding="raw", sharded=True, offset=(0, 0, 0)), dict(chunk_size=(24, 20, 12)), False),
    "uint32": (dict(encoding="compressed_segmentation", data_type="uint32"), dict(chunk_size=GRAPH_CHUNKS), True),
    "uint32_raw": (dict(encoding="raw", data_type="uint32", chunk_size=(13, 11, 7)), dict(chunk_size=(17, 19, 9)), True),
    "own_chunks": (dict(encoding="compresso", chunk_size=(32, 32, 32)), dict(), False),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_encodings_and_layouts(sqlite_store, labels, tmp_path, layout):
    write_options, ingest_options, small = LAYOUTS[layout]
    volume = labels
    if small:  # the same objects with labels that fit 32 bits
        order = np.searchsorted(np.sort(ALL_LABELS), labels)
        volume = np.where(labels > 0, order.astype(np.uint64) * 400_000_000 + 3, 0).astype(np.uint64)
        assert volume.max() < 2**32
    offset = write_options.get("offset", OFFSET)
    url = write_layer(tmp_path / layout, volume, **{"offset": OFFSET, **write_options})
    assert np.array_equal(read_layer(url, offset, SHAPE), volume)  # cloud-volume wrote what we meant
    result = sqlite_store.ingest(layout, url, **ingest_options)
    assert result.n_objects == ALL_LABELS.size
    check_flat(sqlite_store, layout, volume, offset=offset)
    world = sqlite_store.runtime.graphs.graph(layout).world
    assert world["voxel_offset"] == list(offset) and world["volume_size"] == list(SHAPE)
    if layout == "own_chunks":  # the watershed's own chunks are of a workable size: kept
        assert world["chunk_size"] == [32, 32, 32] and world["chunks_per_axis"] == [2, 2, 1]


def test_worker_processes_write_the_same_world(sqlite_store, flat_url):
    """The pass over the volume in two worker processes gives the files of the pass in one."""
    one = sqlite_store.ingest("one_process", flat_url, chunk_size=GRAPH_CHUNKS, workers=1)
    two = sqlite_store.ingest("two_processes", flat_url, chunk_size=GRAPH_CHUNKS, workers=2)
    with np.load(one.world_dir / "graph.npz") as a, np.load(two.world_dir / "graph.npz") as b:
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    files = sorted(p.relative_to(one.world_dir / "ws") for p in (one.world_dir / "ws").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two.world_dir / "ws") for p in (two.world_dir / "ws").rglob("*") if p.is_file())
    assert all((one.world_dir / "ws" / f).read_bytes() == (two.world_dir / "ws" / f).read_bytes() for f in files)


# -- 2. agglomeration files ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fragments(labels, tmp_path_factory):
    """An over-segmentation of the flat objects and its layer: each object cut into 12×12×10
    boxes, the two pieces of SPLIT_LABEL fragments that touch nowhere. Segments: the object's
    rank, except two separate objects share one segment."""
    pieces, object_of = over_segment(labels, (12, 12, 10), first=2**36 + 1)
    url = write_layer(tmp_path_factory.mktemp("fragments") / "seg", pieces, offset=OFFSET, encoding="compresso")
    rank = {int(label): i + 1 for i, label in enumerate(np.sort(ALL_LABELS))}
    a, b = separate_objects(labels)
    rank[b] = rank[a]
    fragment_ids = np.array(sorted(object_of), dtype=np.uint64)
    segment_ids = np.array([rank[object_of[int(f)]] for f in fragment_ids], dtype=np.uint64)
    segments = np.zeros_like(labels)
    for label, segment in rank.items():
        segments[labels == label] = segment
    return pieces, url, fragment_ids, segment_ids, segments


def separate_objects(labels: np.ndarray) -> tuple[int, int]:
    """Two objects with no face contact."""
    touching = set()
    for axis in range(3):
        a, b = np.moveaxis(labels, axis, 0)[:-1].ravel(), np.moveaxis(labels, axis, 0)[1:].ravel()
        keep = (a != b) & (a > 0) & (b > 0)
        touching |= {(int(x), int(y)) for x, y in zip(a[keep], b[keep])}
    for x in LABELS.tolist():
        for y in LABELS.tolist():
            if x < y and (x, y) not in touching and (y, x) not in touching:
                return x, y
    raise AssertionError("every pair of objects touches")


@pytest.mark.parametrize("suffix", ["parquet", "csv", "csv.gz", "npz"])
def test_mapping_files_agglomerate_fragments(sqlite_store, fragments, tmp_path, suffix):
    pieces, url, fragment_ids, segment_ids, segments = fragments
    mapping = write_table(tmp_path / f"mapping.{suffix}", {"supervoxel": fragment_ids, "segment": segment_ids})
    name = "mapped_" + suffix.replace(".", "_")
    result = sqlite_store.ingest(name, url, agglomeration=mapping, chunk_size=GRAPH_CHUNKS)
    assert result.n_objects == np.unique(segment_ids).size == ALL_LABELS.size - 1
    root_of_segment = check_flat(sqlite_store, name, pieces, objects=segments)
    assert len(root_of_segment) == ALL_LABELS.size - 1
    # the fragments of the two separate objects, and of SPLIT_LABEL's pieces, share a root
    handle = sqlite_store.runtime.graphs.graph(name)
    split_fragments = np.unique(pieces[(segments == segments[0, 0, 0]) & (pieces > 0)])
    assert segments[0, 0, 0] > 0 and split_fragments.size >= 2
    assert {int(handle.labels.roots(handle.index, int(f), handle.index.seq).root_ids[0]) for f in split_fragments} == {root_of_segment[int(segments[0, 0, 0])]}


def test_csv_mapping_with_labels_above_2_63(sqlite_store, tmp_path):
    """Labels of a uint64 segmentation may use the top bit; a CSV file must carry them too."""
    volume = np.zeros((24, 24, 8), np.uint64)
    volume[:12], volume[12:] = 2**63 + 5, 2**64 - 3
    url = write_layer(tmp_path / "seg", volume, offset=(0, 0, 0))
    mapping = write_table(tmp_path / "mapping.csv", {"supervoxel": [2**63 + 5, 2**64 - 3], "segment": [2**63 + 5, 2**63 + 5]})
    result = sqlite_store.ingest("csv_top_bit", url, agglomeration=mapping)
    assert result.n_objects == 1


# -- 3. bad input -----------------------------------------------------------------------------------------
@dataclass
class Inputs:
    flat: str
    image: str
    floats: str
    edges_unknown: str
    edges_no_affinity: str
    mapping_gaps: str
    mapping_two_segments: str
    gap_label: int


@pytest.fixture(scope="module")
def inputs(labels, flat_url, tmp_path_factory) -> Inputs:
    root = tmp_path_factory.mktemp("bad")
    image = write_layer(root / "image", (labels % 251).astype(np.uint8), layer_type="image", offset=OFFSET)
    floats = write_layer(root / "floats", labels.astype(np.float32), data_type="float32", offset=OFFSET)
    a, b = int(LABELS[0]), int(LABELS[1])
    return Inputs(
        flat=flat_url,
        image=image,
        floats=floats,
        edges_unknown=write_table(root / "edges.parquet", {"sv1": np.array([a, 424242], np.uint64), "sv2": np.array([b, a], np.uint64), "affinity": [0.9, 0.8]}),
        edges_no_affinity=write_table(root / "edges.csv", {"sv1": [a], "sv2": [b], "area": [3]}),
        mapping_gaps=write_table(root / "gaps.npz", {"supervoxel": ALL_LABELS[1:], "segment": np.arange(1, ALL_LABELS.size, dtype=np.uint64)}),
        mapping_two_segments=write_table(
            root / "twice.csv.gz", {"supervoxel": np.append(ALL_LABELS[:-1], LABELS[3]), "segment": np.arange(1, ALL_LABELS.size + 1, dtype=np.uint64)}
        ),
        gap_label=int(ALL_LABELS[0]),
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# id: (NAME, arguments after NAME given the inputs, fragments the error line must hold)
BAD = {
    "missing_path": ("bad_path", lambda i, t: ["--watershed", f"file://{t}/no/such/layer"], ["error: ", "Could not read the watershed", "no/such/layer"]),
    "bare_missing_path": ("bad_bare", lambda i, t: ["--watershed", f"{t}/nothing"], ["error: ", "Could not read the watershed", "nothing"]),
    "image_layer": ("bad_image", lambda i, t: ["--watershed", i.image], ["error: ", "is not a segmentation", "'image'", "uint8"]),
    "float_layer": ("bad_float", lambda i, t: ["--watershed", i.floats], ["error: ", "is not a segmentation", "float32"]),
    "unknown_supervoxels": (
        "bad_edges",
        lambda i, t: ["--watershed", i.flat, "--edges", i.edges_unknown, "--chunk-size", *map(str, GRAPH_CHUNKS)],
        ["error: ", "names 1 supervoxels that are not in the watershed", "424242"],
    ),
    "edges_missing_column": ("bad_columns", lambda i, t: ["--watershed", i.flat, "--edges", i.edges_no_affinity], ["error: ", "no column 'affinity'", "sv1, sv2, affinity"]),
    "mapping_gaps": (
        "bad_gaps",
        lambda i, t: ["--watershed", i.flat, "--agglomeration", i.mapping_gaps, "--chunk-size", *map(str, GRAPH_CHUNKS)],
        ["error: ", "has gaps", "1 labels of the watershed have no segment", str(2**40 + 7)],
    ),
    "mapping_two_segments": (
        "bad_twice",
        lambda i, t: ["--watershed", i.flat, "--agglomeration", i.mapping_two_segments],
        ["error: ", "gives supervoxels", str(int(LABELS[3])), "more than one segment"],
    ),
    "mapping_missing": ("bad_nomap", lambda i, t: ["--watershed", i.flat, "--agglomeration", f"{t}/none.parquet"], ["error: ", "none.parquet does not exist"]),
    "mapping_format": ("bad_format", lambda i, t: ["--watershed", i.flat, "--agglomeration", f"{t}/mapping.txt"], ["error: ", "is not a .parquet, .csv, .csv.gz or .npz file"]),
    "threshold_without_edges": ("bad_threshold", lambda i, t: ["--watershed", i.flat, "--threshold", "0.5"], ["error: ", "--threshold applies to an --edges file"]),
    "name_digit": ("9lives", lambda i, t: ["--watershed", i.flat], ["error: ", "'9lives' cannot name a datastack", "letter"]),
    "name_dash": ("has-dash", lambda i, t: ["--watershed", i.flat], ["error: ", "'has-dash' cannot name a datastack"]),
    "name_path": ("../escape", lambda i, t: ["--watershed", i.flat], ["error: ", "cannot name a datastack"]),
    "name_long": ("n" * 101, lambda i, t: ["--watershed", i.flat], ["error: ", "cannot name a datastack", "at most 100"]),
    "chunk_too_large": ("bad_chunk", lambda i, t: ["--watershed", i.flat, "--chunk-size", "1024", "1024", "128"], ["error: ", "--chunk-size 1024×1024×128 holds more than", "smaller chunks"]),
    "chunk_zero": ("bad_chunk0", lambda i, t: ["--watershed", i.flat, "--chunk-size", "0", "16", "8"], ["error: ", "at least 1 voxel"]),
    "layers_too_few": (
        "bad_layers",
        lambda i, t: ["--watershed", i.flat, "--chunk-size", *map(str, GRAPH_CHUNKS), "--layers", "3"],
        ["error: ", "--layers 3 is too few for 3×3×3 chunks; at least 4"],
    ),
    "image_not_image": ("bad_image_url", lambda i, t: ["--watershed", i.flat, "--image", i.flat], ["error: ", "--image needs an image layer"]),
}


def run_cli(store: Store, monkeypatch, *argv: str) -> tuple[int, str, str]:
    """``opencave ingest segmentation …`` in this process, on ``store`` (the subprocess test
    below runs the real command line)."""
    monkeypatch.setattr(cli, "_runtime", lambda args: store.runtime)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(["ingest", "segmentation", *argv])
        except SystemExit as stop:  # argparse
            code = stop.code
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_and_nothing_registered(store, inputs, tmp_path, monkeypatch, case):
    name, arguments, expected = BAD[case]
    code, out, err = run_cli(store, monkeypatch, name, *arguments(inputs, tmp_path))
    assert code == 2, (out, err)
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ") and all(fragment in line for fragment in expected), line
    assert "\x1b" not in err  # cloud-volume's colour codes are not passed on
    assert "Traceback" not in err and not out
    if ".." not in name:
        store.nothing(name)
    assert not list(store.data.glob("worlds/*.partial"))


def test_agglomeration_with_edges_is_an_argument_error(store, inputs, tmp_path, monkeypatch):
    mapping = write_table(tmp_path / "m.csv", {"supervoxel": ALL_LABELS, "segment": np.arange(1, ALL_LABELS.size + 1)})
    code, out, err = run_cli(store, monkeypatch, "bad_both", "--watershed", inputs.flat, "--agglomeration", mapping, "--edges", inputs.edges_unknown)
    assert code == 2 and "error: argument --edges: not allowed with argument --agglomeration" in err
    store.nothing("bad_both")
    # in-process, the service refuses the same
    with pytest.raises(BadRequest, match="not both"):
        store.ingest("bad_both", inputs.flat, agglomeration=mapping, edges=inputs.edges_unknown)
    store.nothing("bad_both")


def test_names_in_use_are_refused(store, inputs):
    """The demo's name and an earlier ingest's: Conflict, and the existing datastack is untouched."""
    from opencave.demo.registration import DEMO_DATASTACK, register_demo

    register_demo(store.runtime.access, store.runtime.info, store.runtime.settings.viewer_site)
    with pytest.raises(Conflict, match=f"Datastack {DEMO_DATASTACK} exists already; choose another name"):
        store.ingest(DEMO_DATASTACK, inputs.flat, chunk_size=GRAPH_CHUNKS)
    assert not store.runtime.graphs.exists(DEMO_DATASTACK) and not (store.data / "worlds" / DEMO_DATASTACK).exists()

    store.ingest("taken", inputs.flat, chunk_size=GRAPH_CHUNKS)
    world = (store.data / "worlds" / "taken" / "world.json").read_text()
    for options in (dict(chunk_size=GRAPH_CHUNKS), dict(chunk_size=(24, 20, 12))):
        with pytest.raises(Conflict, match="Datastack taken exists already; choose another name"):
            store.ingest("taken", inputs.flat, **options)
    assert (store.data / "worlds" / "taken" / "world.json").read_text() == world
    assert not (store.data / "worlds" / "taken.partial").exists()
    assert store.runtime.graphs.graph("taken").index.n_sv > 0


def test_too_many_layers_is_a_clear_error(store, inputs, monkeypatch):
    code, out, err = run_cli(store, monkeypatch, "bad_many_layers", "--watershed", inputs.flat, "--layers", "13")
    assert code == 2 and "error: --layers 13" in err
    store.nothing("bad_many_layers")


def test_unknown_grant_group_is_refused_before_anything_is_written(store, inputs):
    with pytest.raises((BadRequest, NotFound), match="no_such_group"):
        store.ingest("bad_grant", inputs.flat, chunk_size=GRAPH_CHUNKS, grant=("no_such_group",))
    store.nothing("bad_grant")


@pytest.mark.timeout(6)
def test_unreachable_server_fails_promptly(sqlite_store):
    """An http URL where nothing listens: a clear error, nothing registered, in a few seconds."""
    url = f"http://127.0.0.1:{closed_port()}/seg"
    started = time.monotonic()
    with pytest.raises(BadRequest, match=f"Could not open the watershed at {url}") as caught:
        sqlite_store.ingest("bad_http", url)
    assert "Connection" in caught.value.message and time.monotonic() - started < 5
    sqlite_store.nothing("bad_http")


# -- 4. re-runs and failures --------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["create_graph", "_insert_nodes"])
def test_failure_while_storing_leaves_nothing(store, inputs, labels, monkeypatch, where):
    """Before the graph's transaction (create_graph) or inside it (its node rows): no world
    dir, nothing registered; the next run succeeds."""
    name = f"store_fails_{where.strip('_')}"

    def fail(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(GraphService, where, fail)
    with pytest.raises(OSError, match="no space left"):
        store.ingest(name, inputs.flat, chunk_size=GRAPH_CHUNKS)
    store.nothing(name)
    monkeypatch.undo()
    result = store.ingest(name, inputs.flat, chunk_size=GRAPH_CHUNKS)
    assert not result.resumed and result.n_objects == ALL_LABELS.size
    check_flat(store, name, labels)


@pytest.mark.parametrize("where", ["add_datastack", "create_version"])
def test_interrupted_registration_resumes(store, inputs, labels, monkeypatch, where):
    """Interrupted before the datastack record (no datastack yet) or before its first version:
    other inputs under the name are refused, the same inputs complete the registration."""
    from opencave.services.materialize.materializer import Materializer

    name = f"interrupted_{where}"
    owner = InfoRegistry if where == "add_datastack" else Materializer
    original = getattr(owner, where)
    calls = []

    def once(self, *args, **kwargs):
        calls.append(args[0])
        if len(calls) == 1:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(owner, where, once)
    with pytest.raises(KeyboardInterrupt):
        store.ingest(name, inputs.flat, chunk_size=GRAPH_CHUNKS, grant=("default",))
    state = registered(store.runtime, store.data, name)
    assert state["chunkedgraph"] and state["world"] and not state["partial"] and not state["lock"]
    assert state["datastack"] == (where == "create_version")
    assert not store.runtime.materializer.registry.list(name, include_expired=True)

    # other inputs under the same name: refused, the earlier run's files kept
    with pytest.raises(Conflict, match=f"Chunkedgraph {name} was ingested from other inputs"):
        store.ingest(name, inputs.flat, chunk_size=(24, 20, 12))
    assert registered(store.runtime, store.data, name) == state

    result = store.ingest(name, inputs.flat, chunk_size=GRAPH_CHUNKS, grant=("default",))
    assert result.resumed and result.n_objects == ALL_LABELS.size and calls == [name, name]
    assert all(registered(store.runtime, store.data, name)[p] for p in ("datastack", "aligned_volume", "chunkedgraph", "dataset", "world"))
    assert store.runtime.materializer.registry.list(name, include_expired=True)
    record = store.runtime.info.datastack_info(name, "http://here")
    assert record["aligned_volume"]["name"] == name
    assert record["segmentation_source"] == f"graphene://http://here/segmentation/table/{name}"
    assert {"group": "default", "dataset": name, "permission": "view"} in store.runtime.access.grants(name)
    check_flat(store, name, labels)

    with pytest.raises(Conflict, match=f"Datastack {name} exists already"):
        store.ingest(name, inputs.flat, chunk_size=GRAPH_CHUNKS)


@pytest.fixture(scope="module")
def large_url(tmp_path_factory) -> str:
    """2 M voxels in 20³ boxes of 343 labels; ingested in 16³ graph chunks (512 of them) it
    takes a few seconds with one process."""
    index = np.indices((128, 128, 128), dtype=np.uint64)
    volume = (index[0] // 20) * 100 + (index[1] // 20) * 10 + index[2] // 20 + 1
    return write_layer(tmp_path_factory.mktemp("large") / "seg", volume, chunk_size=(64, 64, 64), encoding="compressed_segmentation")


def test_killed_ingest_is_discarded_by_the_next_run(store, large_url):
    name = "killed"
    worlds = store.data / "worlds"
    command = [sys.executable, "-m", "opencave", "ingest", "segmentation", name, "--watershed", large_url]
    command += ["--chunk-size", "16", "16", "16", "--processes", "1", "--data-dir", str(store.data)]
    if store.database:
        command += ["--database", store.database]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        chunks = worlds / f"{name}.partial" / "ws"
        while not (chunks.is_dir() and len(list(chunks.rglob("*.gz"))) >= 20):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the ingest did not start its pass"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    state = registered(store.runtime, store.data, name)
    assert state["partial"] and not any(v for k, v in state.items() if k not in ("partial", "lock")), state
    (worlds / f"{name}.partial" / "stale-marker").write_text("from the killed run")

    result = store.ingest(name, large_url, chunk_size=(16, 16, 16), workers=1)
    assert not result.resumed and (result.n_objects, result.n_voxels) == (343, 128**3)
    assert not (worlds / f"{name}.partial").exists() and not (worlds / name / "stale-marker").exists()
    assert not (worlds / f"{name}.ingest.lock").exists()
    assert registered(store.runtime, store.data, name)["datastack"]
    handle = store.runtime.graphs.graph(name)
    for label, voxels in ((1, 20**3), (667, 8**3), (111, 20**3)):  # (0,0,0); (6,6,6) a corner box; (1,1,0)
        where = handle.labels.roots(handle.index, label, handle.index.seq)
        assert where.root_ids.size == 1 and where.voxels.tolist() == [voxels]


def test_concurrent_ingest_of_one_name_is_refused(store, inputs, labels):
    name = "concurrent"
    (store.data / "worlds").mkdir(exist_ok=True)
    with open(store.data / "worlds" / f"{name}.ingest.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(Conflict, match=f"Another ingest of {name} is running; wait for it or stop it"):
            store.ingest(name, inputs.flat, chunk_size=GRAPH_CHUNKS)
        state = registered(store.runtime, store.data, name)
        assert state.pop("lock") and not any(state.values()), state  # the lock file is the holder's
        store.ingest("concurrent_other", inputs.flat, chunk_size=GRAPH_CHUNKS)  # other names are free
    result = store.ingest(name, inputs.flat, chunk_size=GRAPH_CHUNKS)
    assert result.n_objects == ALL_LABELS.size
    check_flat(store, name, labels)
    assert not list((store.data / "worlds").glob("*.ingest.lock"))
