"""Property test: random merges, splits, undos and redos against a brute-force model.

The model is the definition of the agglomeration: at any time, objects are the connected
components of the supervoxel edges active at that time. After a random edit sequence, the
chunkedgraph's roots, leaves, latest flags, lineage and past/future id mappings at random
timestamps must agree with it. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opencave.errors import BadRequest
from opencave.services.chunkedgraph import edits, queries
from opencave.services.chunkedgraph.service import GraphService
from opencave.storage.sql import create_store_engine, upgrade_schema
from tests.support.tiny_world import chunk_centre, make_tiny_world

BASE = 1_700_000_000.0
_counter = itertools.count()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request, tmp_path_factory, database_for):
    url = database_for(request.param) or f"sqlite:///{tmp_path_factory.mktemp('cg')}/store.db"
    engine = create_store_engine(url)
    upgrade_schema(engine)
    yield engine, tmp_path_factory.mktemp("worlds")
    engine.dispose()


class Model:
    """Active edge sets over time; components by brute force."""

    def __init__(self, sv_ids: np.ndarray, edges: np.ndarray, active: np.ndarray) -> None:
        self.sv_ids = [int(s) for s in sv_ids]
        self.history: list[tuple[float, frozenset]] = [
            (0.0, frozenset((int(a), int(b)) for (a, b), on in zip(edges, active) if on))
        ]

    def edges_at(self, ts: float) -> frozenset:
        return [e for t, e in self.history if t <= ts][-1]

    def apply(self, ts: float, added, removed) -> None:
        current = set(self.history[-1][1])
        current -= {tuple(sorted(map(int, p))) for p in removed}
        current |= {tuple(sorted(map(int, p))) for p in added}
        self.history.append((ts, frozenset(current)))

    def components_at(self, ts: float) -> list[frozenset]:
        graph = nx.Graph()
        graph.add_nodes_from(self.sv_ids)
        graph.add_edges_from(self.edges_at(ts))
        return [frozenset(c) for c in nx.connected_components(graph)]


actions = st.lists(
    st.tuples(st.sampled_from(["merge", "split", "split_direct", "undo", "redo"]), st.integers(0, 10**6), st.integers(0, 10**6)),
    min_size=3,
    max_size=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), steps=actions, probes=st.lists(st.floats(0, 1), min_size=3, max_size=3))
def test_random_edits_match_brute_force(store, seed, steps, probes):
    engine, worlds = store
    table = f"model_{next(_counter)}_{seed}"
    world = make_tiny_world(worlds / table, seed)
    service = GraphService(engine)
    handle = service.create_graph(table, world, BASE)
    index = handle.index
    sv_ids = index.node_id.view()[: index.n_sv].copy()
    with np.load(world / "graph.npz") as graph:
        model = Model(sv_ids, graph["edges"], graph["initially_active"])

    ts = BASE
    done: list[int] = []
    for kind, x, y in steps:
        ts += 10.0
        a = sv_ids[x % sv_ids.size]
        roots = index.root_now
        same = roots == roots[x % sv_ids.size]
        # Mostly valid edits (splits inside one object, merges across two), sometimes invalid ones.
        pool = sv_ids if y % 7 == 0 else sv_ids[same] if kind.startswith("split") else sv_ids[~same]
        if pool.size == 0:
            continue
        b = pool[y % pool.size]
        try:
            if kind == "merge":
                plan = lambda ix: edits.plan_merge(ix, int(a), int(b), {})  # noqa: E731
            elif kind in ("split", "split_direct"):
                points = np.array([chunk_centre(index.layout, int(a))]), np.array([chunk_centre(index.layout, int(b))])
                plan = lambda ix: edits.plan_split(  # noqa: E731
                    ix,
                    edits.find_split(ix, np.array([a]), np.array([b]), *points, mincut=kind == "split"),
                    {"source_ids": [int(a)], "sink_ids": [int(b)]},
                )
            else:
                if not done:
                    continue
                target = done[x % len(done)]
                plan = lambda ix: edits.plan_undo_redo(ix, target, redo=kind == "redo")  # noqa: E731
            operation = service.commit(handle, plan, "7", ts)
        except BadRequest:
            continue
        model.apply(ts, operation.details["added_edges"], operation.details["removed_edges"])
        done.append(operation.op_id)
        if kind == "split":
            _check_cut_is_minimal(model, operation, ts, index)

    times = [BASE + 1.0] + [BASE + p * (ts - BASE + 5.0) for p in probes] + [ts + 1.0]
    for t in times:
        _check_state_at(index, model, t)
    for t_past, t_future in zip(times, times[1:]):
        _check_mappings(index, model, min(t_past, t_future), max(t_past, t_future))

    # A fresh process sees the same graph from the store.
    reloaded = GraphService(engine).graph(table).index
    assert reloaded.seq == index.seq
    for t in times:
        seq = index.seq_at(t)
        assert np.array_equal(reloaded.ids_of(reloaded.sv_roots_at(reloaded.seq_at(t))), index.ids_of(index.sv_roots_at(seq)))


def _partition(index, seq) -> dict[int, frozenset]:
    roots = index.ids_of(index.sv_roots_at(seq))
    sv_ids = index.node_id.view()[: index.n_sv]
    groups: dict[int, set] = {}
    for sv, root in zip(sv_ids.tolist(), roots.tolist()):
        groups.setdefault(root, set()).add(sv)
    return {root: frozenset(svs) for root, svs in groups.items()}


def _check_state_at(index, model, t) -> None:
    seq = index.seq_at(t)
    partition = _partition(index, seq)
    assert sorted(partition.values(), key=min) == sorted(model.components_at(t), key=min)
    root_ids = np.array(list(partition), dtype=np.uint64)
    # roots through the generic climb agree with the supervoxel table
    sv_ids = index.node_id.view()[: index.n_sv]
    climbed = index.ids_of(index.roots_at(np.arange(index.n_sv), seq, stop_layer=index.n_layers - 1))
    climbed = index.ids_of(index.roots_at(index.node_index(climbed), seq))
    assert np.array_equal(climbed, index.ids_of(index.sv_roots_at(seq)))
    for root, svs in partition.items():
        assert set(queries.leaves(index, root).tolist()) == svs
        l2 = queries.leaves(index, root, stop_layer=2)
        assert set(queries.minimal_covering_nodes(index, l2, seq).tolist()) == {root}
    assert queries.is_latest(index, root_ids, seq).all()
    assert set(queries.roots(index, sv_ids, seq).tolist()) == set(partition)


def _check_mappings(index, model, t_past, t_future) -> None:
    seq_past, seq_future = index.seq_at(t_past), index.seq_at(t_future)
    past, future = _partition(index, seq_past), _partition(index, seq_future)
    old, new = queries.delta_roots(index, seq_past, seq_future)
    assert set(old.tolist()) == set(past) - set(future)
    assert set(new.tolist()) == set(future) - set(past)
    latest_then = queries.is_latest(index, np.array(list(past), dtype=np.uint64), seq_future)
    assert latest_then.tolist() == [r in future for r in past]
    mapping = queries.past_id_mapping(index, list(future), seq_past, seq_future)
    for root, svs in future.items():
        expected = {p for p, p_svs in past.items() if p_svs & svs}
        assert set(mapping["past_id_map"][str(root)]) == expected
    for p, p_svs in past.items():
        holders = {r for r, svs in future.items() if svs & p_svs}
        if str(p) in mapping["future_id_map"]:
            assert holders == {mapping["future_id_map"][str(p)]}
        elif any(str(p) in map(str, v) for v in mapping["past_id_map"].values()):
            assert len(holders) > 1
    graph = queries.lineage_graph(index, list(future), t_past, t_future)
    leaves = {n["id"]: set(queries.leaves(index, n["id"]).tolist()) for n in graph["nodes"]}
    for link in graph["links"]:
        assert leaves[link["source"]] & leaves[link["target"]]
        created = {n["id"]: n["timestamp"] for n in graph["nodes"]}
        assert created[link["source"]] < created[link["target"]]
    ids = {n["id"] for n in graph["nodes"]}
    assert set(future) <= ids


def _check_cut_is_minimal(model, operation, ts, index) -> None:
    """The removed edges are a minimum cut of the object between the split points."""
    before = model.edges_at(ts - 1)
    removed = {tuple(sorted(map(int, p))) for p in operation.details["removed_edges"]}
    assert removed <= before
    source, sink = int(operation.details["source_ids"][0]), int(operation.details["sink_ids"][0])
    graph = nx.Graph()
    affinity = {}
    a_all, b_all = index.edge_a.view(), index.edge_b.view()
    ids = index.node_id.view()
    for e in range(a_all.size):
        affinity[(int(ids[a_all[e]]), int(ids[b_all[e]]))] = float(index.edge_affinity.view()[e])
    for a, b in before:
        graph.add_edge(a, b, capacity=max(1, int(affinity[(a, b)] * 1_000_000)))
    component = nx.node_connected_component(graph, source)
    value = nx.minimum_cut_value(graph.subgraph(component), source, sink)
    assert sum(max(1, int(affinity[e] * 1_000_000)) for e in removed) == value


def test_work_after_an_edit_waits_for_edits_to_pause(store):
    """Subscribers' queued work starts once no edit has run for the quiet period, and waits at
    most its limit while an edit is still being made."""
    import threading
    import time

    engine, worlds = store
    table = f"quiet_{next(_counter)}"
    service = GraphService(engine)
    handle = service.create_graph(table, make_tiny_world(worlds / table, 3), BASE)
    index = handle.index
    seen = []
    service.subscribe(seen.append)
    assert service.wait_for_quiet(quiet_s=5.0) < 0.5, "no edit has run yet"

    roots = index.root_now
    a = 0
    b = int(np.flatnonzero(roots != roots[a])[0])
    sv = index.node_id.view()
    service.commit(handle, lambda ix: edits.plan_merge(ix, int(sv[a]), int(sv[b]), {}), "7", BASE + 10)
    committed = time.monotonic()
    waited = seen[-1].wait_for_quiet()  # the subscriber's handle on the same rule
    assert 0.0 < waited and time.monotonic() - committed >= 0.25

    release = threading.Event()

    def slow_plan(ix):
        release.wait(10)
        return edits.plan_undo_redo(ix, 1, redo=False)

    editor = threading.Thread(target=service.commit, args=(handle, slow_plan, "7", BASE + 20))
    editor.start()
    try:
        time.sleep(0.05)
        start = time.monotonic()
        service.wait_for_quiet(quiet_s=0.05, max_wait_s=0.4)
        assert 0.35 <= time.monotonic() - start < 2.0, "an edit in progress holds the work back, up to the limit"
    finally:
        release.set()
        editor.join()
    assert index.seq == 2 and len(seen) == 2


def test_an_edit_keeps_every_unchanged_node(store):
    """An edit makes new nodes only where children changed: no new node has the layer and
    children of a current node, and as many nodes are kept as a rebuild from scratch would
    have made again."""
    from opencave.services.chunkedgraph.hierarchy import build_hierarchy

    engine, worlds = store
    table = f"reuse_{next(_counter)}"
    handle = GraphService(engine).create_graph(table, make_tiny_world(worlds / table, 11, chunks=(4, 4, 2)), BASE)
    index = handle.index
    roots, sizes = np.unique(index.root_now, return_counts=True)
    big = roots[np.argsort(-sizes)[:2]]
    a, b = (int(np.flatnonzero(index.root_now == r)[0]) for r in big)
    sv = index.node_id.view()
    plan = edits.plan_merge(index, int(sv[a]), int(sv[b]), {})

    current = set()
    frontier = np.unique(index.root_now)
    while frontier.size:
        kids, owner = index.children_of(frontier)
        for node, members in zip(frontier.tolist(), np.split(kids, np.cumsum(np.bincount(owner, minlength=frontier.size))[:-1])):
            current.add((int(index.node_layer.view()[node]), frozenset(index.ids_of(members).tolist())))
        frontier = kids[index.node_layer.view()[kids] >= 2]
    built = plan.built
    new = [
        (int(layer), frozenset(built.child_ids[built.child_ptr[i] : built.child_ptr[i + 1]].tolist()))
        for i, layer in enumerate(built.layers.tolist())
    ]
    assert not set(new) & current, "a new node repeats a current one"
    assert built.reused > 0

    svs = np.sort(index.leaf_indices(np.unique(index.root_now[[a, b]])))
    edges = index.internal_edges(svs, index.seq)
    ea = np.searchsorted(svs, np.concatenate((index.edge_a.view()[edges], [min(a, b)])))
    eb = np.searchsorted(svs, np.concatenate((index.edge_b.view()[edges], [max(a, b)])))
    scratch = build_hierarchy(sv[svs], index.sv_chunk_coords(svs), ea, eb, index.n_layers, index.allocate)
    assert built.reused + built.node_ids.size == scratch.node_ids.size
