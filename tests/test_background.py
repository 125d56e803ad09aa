"""Background work: the runtime's bounded executor, edit subscribers, and concurrent edits over
HTTP whose answers match the operation log while L2 attributes and meshes follow in the
background."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from sqlalchemy import create_engine, select

from opencave.background import BackgroundExecutor
from opencave.services.chunkedgraph import edits
from opencave.services.chunkedgraph.service import CommittedEdit, GraphService
from opencave.storage.sql import create_store_engine, upgrade_schema
from opencave.storage.tables import cg_nodes, cg_operations, l2_attributes, l2_meshes
from opencave.wire.node_ids import chunk_coordinates, get_layer
from tests.support.demo import demo_world
from tests.support.tiny_world import make_tiny_world

TABLE = "opencave_demo"
T = f"/segmentation/api/v1/table/{TABLE}"
THREADS = 4
EDITS = 200


# -- the executor -------------------------------------------------------------------------------
@pytest.fixture
def executor():
    background = BackgroundExecutor(workers=2, queue_size=4)
    yield background
    background.stop(timeout=5)


def test_tasks_run_on_the_workers_and_a_failure_is_only_logged(executor, caplog):
    executor.start()
    done: list[str] = []
    assert executor.submit("fails", lambda: 1 / 0)
    assert executor.submit("works", lambda: done.append(threading.current_thread().name))
    assert executor.join(5)
    assert done and done[0].startswith("background-")
    assert "background task fails failed" in caplog.text


def test_work_that_cannot_be_queued_is_dropped_with_its_cleanup(executor, caplog):
    dropped: list[int] = []
    assert not executor.submit("early", lambda: None, lambda: dropped.append(0))  # not started
    executor.start()
    release = threading.Event()
    for _ in range(2):  # both workers busy
        assert executor.submit("blocker", release.wait)
    deadline = time.time() + 5
    while executor._active < 2 and time.time() < deadline:
        time.sleep(0.01)
    queued = [executor.submit(f"task {i}", lambda: None, lambda i=i: dropped.append(i)) for i in range(1, 7)]
    assert queued == [True] * 4 + [False] * 2  # four queue slots
    assert dropped == [0, 5, 6]
    assert "queue full" in caplog.text
    release.set()
    assert executor.join(5)
    assert dropped == [0, 5, 6]


def test_stop_drains_the_queue_within_its_timeout(executor):
    executor.start()
    done: list[int] = []
    for i in range(4):
        executor.submit(f"task {i}", lambda i=i: (time.sleep(0.05), done.append(i)))
    assert executor.stop(timeout=5)
    assert sorted(done) == [0, 1, 2, 3]
    assert not executor.running
    assert not executor.submit("after stop", lambda: None)


def test_stop_drops_what_is_still_queued_at_its_timeout(executor):
    executor.start()
    release = threading.Event()
    dropped: list[int] = []
    for _ in range(2):
        executor.submit("blocker", lambda: release.wait(10))
    for i in range(3):
        executor.submit(f"task {i}", lambda: None, lambda i=i: dropped.append(i))
    started = time.time()
    assert not executor.stop(timeout=0.5)
    assert time.time() - started < 3
    assert sorted(dropped) == [0, 1, 2]
    release.set()


def test_periodic_jobs_run_while_started_and_again_at_once_when_busy(executor):
    runs: list[float] = []
    backlog = [3]

    def job() -> bool:
        runs.append(time.monotonic())
        backlog[0] -= 1
        return backlog[0] > 0  # more work waiting

    executor.every("job", 60.0, job)
    time.sleep(0.3)
    assert runs == []  # nothing runs before start
    executor.start()
    deadline = time.time() + 5
    while len(runs) < 3 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    assert len(runs) == 3  # three runs at once, then the next only after the interval
    assert runs[-1] - runs[0] < 2


# -- edit subscribers ------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def graph_store(request, tmp_path, database_for):
    url = database_for(request.param) or f"sqlite:///{tmp_path}/store.db"
    engine = create_store_engine(url)
    upgrade_schema(engine)
    yield engine, tmp_path
    engine.dispose()


def test_subscribers_get_the_committed_edit_and_cannot_fail_it(graph_store, caplog):
    engine, tmp_path = graph_store
    graphs = GraphService(engine)
    handle = graphs.create_graph("tiny", make_tiny_world(tmp_path / "tiny", 3), 1_700_000_000.0)
    seen: list[CommittedEdit] = []

    def broken(edit: CommittedEdit) -> None:
        raise RuntimeError("subscriber bug")

    graphs.subscribe(broken)
    graphs.subscribe(seen.append)
    index = handle.index
    roots = index.root_now
    sv = index.node_id.view()[: index.n_sv]
    a = 0
    b = int(np.flatnonzero(roots != roots[a])[0])
    operation = graphs.commit(handle, lambda ix: edits.plan_merge(ix, int(sv[a]), int(sv[b]), {}), "7")
    assert "a subscriber to edits failed on operation 1" in caplog.text
    (edit,) = seen
    assert edit.operation is operation and edit.handle is handle
    with engine.connect() as conn:
        created = conn.execute(select(cg_nodes.c.node_id).where(cg_nodes.c.table_id == "tiny", cg_nodes.c.op_id == 1)).scalars().all()
    assert sorted(edit.new_l2_ids) == sorted(int(n) for n in created if int(n) >> 56 == 2)
    assert edit.new_l2_ids or len(edit.edge_end_l2_ids) == 2  # one new L2 node, or the two kept ones
    ends = index.roots_at(index.sv_index(np.array([sv[a], sv[b]], dtype=np.uint64)), 1, stop_layer=2)
    assert set(edit.edge_end_l2_ids) == set(index.ids_of(ends).tolist()) - set(edit.new_l2_ids)
    with engine.connect() as conn:
        assert conn.execute(select(cg_operations.c.op_id).where(cg_operations.c.table_id == "tiny")).scalars().all() == [1]


# -- concurrent edits over HTTP ------------------------------------------------------------------
@pytest.fixture(scope="module")
def edit_server(backend, server_factory):
    """A server of its own: the test makes hundreds of edits."""
    return server_factory(backend)


def _disjoint_pairs(world, count: int) -> list[tuple[int, int]]:
    """Touching supervoxels of two neurons in one chunk (merging them makes a new L2 node),
    no neuron in two pairs, so each thread's merges and splits are independent."""
    graph = world.graph
    neuron = dict(zip(graph.sv_ids.tolist(), graph.sv_neuron.tolist()))
    layout = world.spec.layout
    used: set[int] = set()
    pairs = []
    for a, b in graph.edges[np.argsort(-graph.area, kind="stable")].tolist():
        na, nb = neuron[a], neuron[b]
        if na == nb or 0 in (na, nb) or na in used or nb in used:
            continue
        if not (chunk_coordinates(layout, [a]) == chunk_coordinates(layout, [b])).all():
            continue
        used |= {na, nb}
        pairs.append((a, b))
        if len(pairs) == count:
            return pairs
    raise AssertionError("not enough disjoint neuron pairs in the demo world")


def test_concurrent_edits_answer_what_was_committed(edit_server):
    server = edit_server
    world = demo_world(server)
    token = server.new_token()
    url = server.database or f"sqlite:///{server.data_dir / 'opencave.db'}"
    store = create_engine(url)
    try:
        with store.connect() as conn:
            before = conn.execute(select(cg_operations.c.op_id).where(cg_operations.c.table_id == TABLE)).scalars().all()
        baseline = max(before, default=0)
        pairs = _disjoint_pairs(world, THREADS)
        points = {sv: world.nm_point(sv) for pair in pairs for sv in pair}
        answers: list[tuple[str, int, dict]] = []
        lock = threading.Lock()

        def edit(pair: tuple[int, int]) -> None:
            a, b = pair
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {token}"
            for i in range(EDITS // THREADS):
                if i % 2 == 0:
                    kind, path, body = "merge", "/merge", [[a, *points[a]], [b, *points[b]]]
                else:
                    kind, path, body = "split", "/split", {"sources": [[a, *points[a]]], "sinks": [[b, *points[b]]]}
                r = session.post(server.url + T + path, json=body, timeout=60)
                with lock:
                    answers.append((kind, r.status_code, r.json() if r.headers.get("content-type", "").startswith("application/json") else {"text": r.text}))

        start = time.time()
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(edit, pairs))
        elapsed = time.time() - start

        failed = [(kind, status, body) for kind, status, body in answers if status != 200]
        assert not failed, failed[:3]
        assert len(answers) == EDITS

        with store.connect() as conn:
            rows = conn.execute(
                select(cg_operations).where(cg_operations.c.table_id == TABLE, cg_operations.c.op_id > baseline)
            ).all()
        committed = {int(r.op_id): (r.kind, json.loads(r.details)["new_roots"]) for r in rows}
        answered = {int(body["operation_id"]): (kind, [int(x) for x in body["new_root_ids"]]) for kind, _, body in answers}
        assert len(answered) == EDITS  # every answer names its own operation
        assert answered == {op: (kind, [int(x) for x in roots]) for op, (kind, roots) in committed.items()}

        # New L2 nodes get their attributes and meshes in the background, without a request.
        with store.connect() as conn:
            nodes = conn.execute(
                select(cg_nodes.c.node_id).where(cg_nodes.c.table_id == TABLE, cg_nodes.c.op_id > baseline)
            ).scalars().all()
        new_l2 = sorted(int(n) for n in nodes if int(get_layer(np.array([n], dtype=np.uint64))[0]) == 2)
        assert new_l2, "merges and splits inside one chunk make new L2 nodes"
        deadline = time.time() + 60
        while True:
            with store.connect() as conn:
                cached = set(
                    conn.execute(
                        select(l2_attributes.c.l2_id).where(l2_attributes.c.table_id == TABLE, l2_attributes.c.l2_id.in_(new_l2))
                    ).scalars()
                )
                meshed = set(
                    conn.execute(select(l2_meshes.c.l2_id).where(l2_meshes.c.table_id == TABLE, l2_meshes.c.l2_id.in_(new_l2))).scalars()
                )
            if (len(cached) == len(meshed) == len(new_l2)) or time.time() > deadline:
                break
            time.sleep(0.2)
        assert sorted(cached) == new_l2
        assert sorted(meshed) == new_l2
        print(f"{EDITS} edits in {elapsed:.1f} s; {len(new_l2)} new L2 nodes cached and meshed")
    finally:
        store.dispose()
