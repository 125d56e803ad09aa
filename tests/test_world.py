"""The synthetic demo world: determinism, speed, and its invariants checked by brute force."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from opencave.demo.world import WORLD_SIZES, build_world, load_world
from opencave.demo.world.neurons import NM_PER_VOXEL, grow_neurons, grow_strays
from opencave.demo.world.sizes import WorldSize
from opencave.demo.world.watershed import Capsules, SeedGrid, chunk_origins
from opencave.demo.world.watershed import _rasterise as rasterise
from opencave.services.segmentation.precomputed import (
    chunk_file,
    decode_chunk,
    read_info,
)
from opencave.wire.node_ids import chunk_coordinates, segment_ids

SPLIT_PADDING = np.array([40, 40, 6])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("worlds") / "small"
    start = time.perf_counter()
    world = build_world(out, "small", seed=0, progress=False)
    return world, time.perf_counter() - start


@pytest.fixture(scope="module")
def world(built):
    return built[0]


@pytest.fixture(scope="module")
def volume(world) -> np.ndarray:
    return _decode(world)


def _decode(world) -> np.ndarray:
    """The whole label volume, decoded straight from the chunk files."""
    scale = read_info(world.ws_dir)["scales"][0]
    full = np.zeros(world.volume_size, dtype=np.uint64)
    chunk = np.array(world.chunk_size)
    for coords in np.ndindex(*world.chunks_per_axis):
        lo = np.array(coords) * chunk
        hi = np.minimum(lo + chunk, world.volume_size)
        path = world.ws_dir / chunk_file(scale, coords)
        if path.exists():
            full[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = decode_chunk(
                path.read_bytes(), tuple(hi - lo)
            )
    return full


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_small_world_builds_fast(built):
    world, seconds = built
    print(
        f"small world built in {seconds:.2f} s: {world.n_supervoxels} supervoxels, {world.n_edges} edges"
    )
    assert seconds < 15


def test_build_is_deterministic(world, tmp_path):
    again = build_world(tmp_path / "small", "small", seed=0, progress=False)
    first, second = _files(world.path), _files(again.path)
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []
    other = build_world(tmp_path / "other", "small", seed=1, progress=False)
    assert not np.array_equal(other.graph.sv_ids, world.graph.sv_ids)


def test_build_replaces_atomically(tmp_path):
    out = tmp_path / "worlds" / "w"
    out.mkdir(parents=True)
    (out / "stale").write_text("old")
    build_world(out, "small", seed=3, progress=False)
    assert not (out / "stale").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["w"]


def test_world_description(world):
    size = WORLD_SIZES["small"]
    assert load_world(world.path) == world
    assert world.volume_size == [256, 256, 64] and world.chunks_per_axis == [4, 4, 4]
    assert (
        world.resolution == [8, 8, 40] and world.chunk_size == [64, 64, 16] and world.n_layers == 4
    )
    assert world.n_neurons == size.n_neurons == len(world.cells)
    assert world.n_supervoxels == len(world.graph.sv_ids) and world.n_edges == len(
        world.graph.edges
    )
    assert read_info(world.ws_dir)["scales"][0]["encoding"] == "compressed_segmentation"


def test_supervoxels_match_volume(world, volume):
    graph, layout = world.graph, world.layout
    ids, counts = np.unique(volume[volume > 0], return_counts=True)
    assert np.array_equal(ids, graph.sv_ids)  # ascending: the canonical order
    assert np.array_equal(counts, graph.sv_voxels)
    assert 40 < graph.sv_voxels.mean() < 400
    where = np.nonzero(volume)
    voxel_chunk = np.stack(where, axis=1) // np.array(world.chunk_size)
    assert np.array_equal(chunk_coordinates(layout, volume[where]), voxel_chunk)
    segments = segment_ids(layout, graph.sv_ids).astype(np.int64)
    chunks = chunk_coordinates(layout, graph.sv_ids)
    for coords in np.ndindex(*world.chunks_per_axis):
        mine = np.all(chunks == coords, axis=1)
        assert np.array_equal(segments[mine], np.arange(1, graph.chunk_sv_counts[coords] + 1))
    assert graph.chunk_sv_counts.sum() == len(graph.sv_ids)


def test_edges_are_face_contacts(world, volume):
    keys = []
    for axis in range(3):
        a = np.delete(volume, -1, axis=axis).ravel()
        b = np.delete(volume, 0, axis=axis).ravel()
        touching = (a != b) & (a > 0) & (b > 0)
        keys.append(np.stack([np.minimum(a, b)[touching], np.maximum(a, b)[touching]], axis=1))
    pairs, area = np.unique(np.concatenate(keys), axis=0, return_counts=True)
    graph = world.graph
    assert graph.edges.dtype == np.uint64 and graph.area.dtype == np.int32
    assert graph.affinity.dtype == np.float32 and graph.initially_active.dtype == bool
    assert np.array_equal(graph.edges, pairs)
    assert np.array_equal(graph.area, area)
    neuron = graph.sv_neuron[graph.sv_index(graph.edges)]
    same = (neuron[:, 0] == neuron[:, 1]) & (neuron[:, 0] > 0)
    assert np.all((graph.affinity[same] >= 0.6) & (graph.affinity[same] <= 1.0))
    assert np.all((graph.affinity[~same] >= 0.01) & (graph.affinity[~same] <= 0.4))


def _truth(world) -> set[frozenset[int]]:
    graph = world.graph
    ids = graph.sv_ids.tolist()
    groups = {}
    for sv, neuron in zip(ids, graph.sv_neuron.tolist()):
        groups.setdefault(neuron or -sv, set()).add(sv)
    return {frozenset(g) for g in groups.values()}


def test_cells_and_neurons(world):
    graph = world.graph
    ids = graph.sv_ids.tolist()
    neuron_of = dict(zip(ids, graph.sv_neuron.tolist()))
    same = nx.Graph([(a, b) for a, b in graph.edges.tolist() if neuron_of[a] == neuron_of[b] != 0])
    for cell in world.cells:
        members = graph.sv_ids[graph.sv_neuron == cell["neuron_id"]].tolist()
        assert nx.is_connected(same.subgraph(members))
    assert (graph.sv_neuron == 0).sum() < 0.1 * len(ids)
    classes = {
        "excitatory": {"23P", "4P", "5P-IT", "5P-ET", "6P-IT"},
        "inhibitory": {"BC", "MC", "BPC", "NGC"},
    }
    for cell in world.cells:
        assert cell["cell_type"] in classes[cell["cell_class"]]
        soma = graph.sv_index(cell["soma_supervoxel"])[0]
        assert graph.sv_neuron[soma] == cell["neuron_id"]
        assert cell["n_supervoxels"] == int((graph.sv_neuron == cell["neuron_id"]).sum()) > 20


def test_history_is_well_formed(world):
    history = world.history
    epoch = datetime(2025, 1, 6, 9, tzinfo=UTC)
    times = [datetime.fromisoformat(op["timestamp"]) for op in history]
    assert all(op["timestamp"].endswith("Z") for op in history)
    assert all((b - a).total_seconds() >= 1 for a, b in itertools.pairwise(times))
    assert all(
        epoch <= t < epoch + timedelta(weeks=8) and t.weekday() < 5 and 9 <= t.hour < 18
        for t in times
    )
    assert {op["user_id"] for op in history} <= {1, 2, 3}
    kinds = [op["kind"] for op in history]
    assert kinds.count("split") >= 3 and kinds.count("merge") >= 4 and "redo" in kinds
    for index, op in enumerate(history):
        if op["kind"] == "undo":
            assert history[op["target"]]["kind"] in ("merge", "split") and op["target"] < index
        if op["kind"] == "redo":
            assert history[op["target"]]["kind"] == "undo" and op["target"] < index


def test_history_replay_reaches_truth(world, volume):
    """Merges add an edge, splits cut a min-cut in a box around their points, undo/redo invert."""
    graph = world.graph
    affinity = {
        (a, b): float(f) for (a, b), f in zip(graph.edges.tolist(), graph.affinity.tolist())
    }
    current = nx.Graph()
    current.add_nodes_from(graph.sv_ids.tolist())
    for (a, b), active in zip(graph.edges.tolist(), graph.initially_active.tolist()):
        if active:
            current.add_edge(a, b)
    truth = _truth(world)
    assert {frozenset(c) for c in nx.connected_components(current)} != truth
    effects: list[tuple[list, list]] = []  # (edges added, edges removed) per op
    for op in world.history:
        if op["kind"] == "merge":
            (a, *_), (b, *_) = op["points"]
            assert not nx.has_path(current, a, b)
            effect = ([(min(a, b), max(a, b))], [])
        elif op["kind"] == "split":
            effect = ([], _min_cut(current, volume, op, affinity))
        else:
            added, removed = effects[op["target"]]
            effect = (removed, added)
        current.add_edges_from(effect[0])
        current.remove_edges_from(effect[1])
        effects.append(effect)
        if op["kind"] == "split":
            assert not nx.has_path(current, op["sources"][0][0], op["sinks"][0][0])
    assert {frozenset(c) for c in nx.connected_components(current)} == truth


def _min_cut(
    current: nx.Graph, volume: np.ndarray, op: dict, affinity: dict
) -> list[tuple[int, int]]:
    sources = [p[0] for p in op["sources"]]
    sinks = [p[0] for p in op["sinks"]]
    points = np.array([p[1:] for p in op["sources"] + op["sinks"]])
    for sv, *xyz in op["sources"] + op["sinks"]:
        assert volume[tuple(xyz)] == sv
    lo = np.maximum(points.min(axis=0) - SPLIT_PADDING, 0)
    hi = points.max(axis=0) + SPLIT_PADDING + 1
    in_box = set(np.unique(volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]).tolist())
    component = nx.node_connected_component(current, sources[0])
    assert set(sinks) <= component
    local = current.subgraph(component & in_box)
    flow = nx.DiGraph()
    for a, b in local.edges:
        capacity = affinity[(min(a, b), max(a, b))]
        flow.add_edge(a, b, capacity=capacity)
        flow.add_edge(b, a, capacity=capacity)
    for s in sources:
        flow.add_edge("source", s)
    for t in sinks:
        flow.add_edge(t, "sink")
    _, (reachable, _) = nx.minimum_cut(flow, "source", "sink")
    cut = [(a, b) for a, b in local.edges if (a in reachable) != (b in reachable)]
    assert len(cut) == 1
    return cut


# -- the crowded mode of the large world, at a testable size ---------------------------------------

CROWDED = WorldSize(
    "crowded",
    (512, 512, 64),
    n_neurons=80,
    n_giants=1,
    arbor_factor=0.3,
    neurite_thickness=0.35,
    giants_first=True,
    n_strays=100,
)


@pytest.fixture(scope="module")
def crowded(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(WORLD_SIZES, CROWDED.name, CROWDED)
        return build_world(tmp_path_factory.mktemp("worlds") / "crowded", "crowded", progress=False)


def test_large_world_is_crowded():
    large = WORLD_SIZES["large"]
    assert large.n_neurons >= 2500 and large.n_giants == 6
    assert large.giants_first and large.n_strays > 0


def test_crowded_world(crowded):
    """Giants grown first are touched by few cells; strays are orphans; the usual invariants hold."""
    volume = _decode(crowded)
    test_supervoxels_match_volume(crowded, volume)
    test_edges_are_face_contacts(crowded, volume)
    test_history_replay_reaches_truth(crowded, volume)
    graph = crowded.graph
    assert len(crowded.cells) == CROWDED.n_neurons
    sizes = np.array([cell["n_supervoxels"] for cell in crowded.cells])
    assert sizes[0] > 20 * np.median(sizes[1:])  # the giant
    assert 0.1 < (graph.sv_neuron == 0).mean() < 0.5  # stray neurites
    neuron = graph.sv_neuron[graph.sv_index(graph.edges)]
    touching = (neuron[:, 0] != neuron[:, 1]) & (neuron > 0).all(axis=1)
    giant = touching & (neuron == 1).any(axis=1)
    assert graph.area[giant].sum() < 0.02 * graph.area[touching].sum()


def _nearest_one_offset_at_a_time(seeds: SeedGrid, points: np.ndarray) -> np.ndarray:
    cell = np.floor(points / np.array([12.0, 12.0, 3.0])).astype(np.int64)
    best = np.full(len(points), -1, dtype=np.int64)
    best_d2 = np.full(len(points), np.inf)
    upper = np.array(seeds.shape) - 1
    for offset in itertools.product((-1, 0, 1), repeat=3):
        seed = np.ravel_multi_index(np.clip(cell + offset, 0, upper).T, seeds.shape)
        d2 = (((seeds.positions[seed] - points) * NM_PER_VOXEL) ** 2).sum(axis=1)
        closer = d2 < best_d2
        best[closer], best_d2[closer] = seed[closer], d2[closer]
    return best


def test_seed_lookup_matches_reference():
    """The vectorised seed lookup gives exactly the straightforward one's answers (worlds must
    not change when the code gets faster)."""
    rng = np.random.default_rng(7)
    seeds = SeedGrid(rng, (512, 512, 64))
    points = np.floor(rng.uniform(0, (512, 512, 64), size=(50_000, 3)))
    corners = np.argwhere(np.ones((8, 8, 8))) * np.array([73, 73, 9])  # includes the borders
    points = np.concatenate([points, corners.astype(np.float64)])
    assert np.array_equal(seeds.nearest(points), _nearest_one_offset_at_a_time(seeds, points))


def _paint_one_capsule_at_a_time(origin, shape, caps: Capsules, indices) -> np.ndarray:
    pieces = np.zeros(shape, dtype=np.int32)
    end = origin + np.array(shape)
    for i in indices.tolist():
        lo, hi = np.maximum(caps.lo[i], origin), np.minimum(caps.hi[i], end)
        if np.any(hi <= lo):
            continue
        a, s = caps.p0[i], caps.zscale[i]
        x = np.arange(lo[0], hi[0])[:, None, None] - a[0]
        y = np.arange(lo[1], hi[1])[None, :, None] - a[1]
        z = (np.arange(lo[2], hi[2])[None, None, :] - a[2]) * s
        v = (caps.p1[i] - a) * (1.0, 1.0, s)
        vv = float(v @ v)
        t = np.clip((x * v[0] + y * v[1] + z * v[2]) / vv, 0, 1) if vv > 0 else np.zeros((1, 1, 1))
        radius = caps.r0[i] + t * (caps.r1[i] - caps.r0[i])
        inside = (x - t * v[0]) ** 2 + (y - t * v[1]) ** 2 + (z - t * v[2]) ** 2 <= radius**2
        view = pieces[
            lo[0] - origin[0] : hi[0] - origin[0],
            lo[1] - origin[1] : hi[1] - origin[1],
            lo[2] - origin[2] : hi[2] - origin[2],
        ]
        view[inside & (view == 0)] = caps.piece[i]
    return pieces


def test_batched_painting_matches_reference():
    """Capsules painted in batches give exactly the voxels of painting them one by one."""
    morphology = np.random.default_rng(3)
    neurons = grow_neurons(morphology, CROWDED)
    caps = Capsules.from_neurons(
        neurons, CROWDED.volume_size, grow_strays(morphology, CROWDED, neurons)
    )
    per_chunk = caps.per_chunk(CROWDED.chunks_per_axis)
    busiest = np.argsort([-len(c) for c in per_chunk])[:6].tolist()
    for linear, (_, origin, shape) in enumerate(chunk_origins(CROWDED)):
        if linear in busiest or linear % 17 == 0:
            expected = _paint_one_capsule_at_a_time(origin, shape, caps, per_chunk[linear])
            assert np.array_equal(rasterise(origin, shape, caps, per_chunk[linear]), expected)
