"""What a chunkedgraph costs as it grows: bytes per supervoxel of the in-process index and of the
store (SQLite pages from ``dbstat``, PostgreSQL ``pg_total_relation_size``), the store's growth
per edit, the time to load the index, and the in-process edit latency (``GraphService.commit``).

Used by ``bench_chunkedgraph.py`` over the demo sizes; every figure is measured in this process
on a store no server is using.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, text

from opencave.errors import BadRequest
from opencave.services.chunkedgraph import edits
from opencave.services.chunkedgraph.service import GraphService
from opencave.storage.sql import create_store_engine
from tests.support.demo import DemoWorld, _neuron_pairs

GRAPH_TABLES = ("cg_nodes", "cg_operations", "cg_graphs")
DERIVED_TABLES = ("l2_attributes", "l2_meshes")


def store_bytes(engine: Engine) -> dict[str, int]:
    """Bytes of each chunkedgraph table with its indexes, as the database holds them."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.execute(
                text(
                    "SELECT coalesce(m.tbl_name, d.name), sum(d.pgsize) FROM dbstat d "
                    "LEFT JOIN sqlite_master m ON m.name = d.name GROUP BY 1"
                )
            ).all()
            sizes = {str(name): int(size) for name, size in rows}
        else:
            sizes = {
                name: int(conn.execute(text("SELECT pg_total_relation_size(:t)"), {"t": name}).scalar_one())
                for name in GRAPH_TABLES + DERIVED_TABLES
            }
    return {name: sizes.get(name, 0) for name in GRAPH_TABLES + DERIVED_TABLES}


def _percentile(times: list[float], q: float) -> float:
    return round(1000 * float(np.percentile(times, q)), 1)


def measure(database_url: str, table_id: str, world_dir: Path, n_edits: int = 10) -> dict[str, object]:
    """Index and store bytes per supervoxel, load time and merge/split latency of one graph.

    ``n_edits`` merges of touching supervoxels of two different neurons, each followed by the
    min-cut split that undoes it, are committed in-process; the store's growth over them is
    divided by the number of edits. Beside wall-clock latency, the committing thread's CPU
    time per edit (merge and split averaged) is given: on a shared machine it is the steadier
    figure."""
    engine = create_store_engine(database_url)
    try:
        graphs = GraphService(engine)
        start = time.perf_counter()
        handle = graphs.graph(table_id)
        load_s = time.perf_counter() - start
        index = handle.index
        n_sv = index.n_sv
        index_parts = index.nbytes()
        before = store_bytes(engine)
        world = DemoWorld(world_dir)
        merge_t, split_t, cpu_t = [], [], []
        for a, b in _neuron_pairs(world, 3 * n_edits):
            if len(merge_t) == n_edits:
                break
            pa, pb = world.voxel_of(a), world.voxel_of(b)
            try:
                cpu = time.thread_time()
                begin = time.perf_counter()
                graphs.commit(handle, lambda ix, a=a, b=b: edits.plan_merge(ix, a, b, {}), "bench")
                merged = time.perf_counter() - begin
                begin = time.perf_counter()
                graphs.commit(
                    handle,
                    lambda ix, a=a, b=b: edits.plan_split(
                        ix, edits.find_split(ix, np.array([a], np.uint64), np.array([b], np.uint64), pa[None], pb[None]), {}
                    ),
                    "bench",
                )
                split = time.perf_counter() - begin
                cpu = (time.thread_time() - cpu) / 2
            except BadRequest:  # the pair is one object already, or the cut did not separate it
                continue
            merge_t.append(merged)
            split_t.append(split)
            cpu_t.append(cpu)
        after = store_bytes(engine)
        n_done = 2 * len(merge_t)
        graph_bytes = sum(before[t] for t in GRAPH_TABLES)
        return {
            "supervoxels": n_sv,
            "nodes": int(index.node_id.size),
            "operations": int(index.seq),
            "index_load_s": round(load_s, 2),
            "index_bytes_per_sv": round(sum(index_parts.values()) / n_sv, 1),
            "index_bytes_top": dict(sorted(index_parts.items(), key=lambda kv: -kv[1])[:6]),
            "store": engine.dialect.name,
            "store_graph_bytes_per_sv": round(graph_bytes / n_sv, 1),
            "store_bytes_per_sv_by_table": {t: round(before[t] / n_sv, 1) for t in GRAPH_TABLES + DERIVED_TABLES},
            "store_growth_per_edit_bytes": round(sum(after[t] - before[t] for t in GRAPH_TABLES) / max(n_done, 1)),
            "merge_p50_ms": round(1000 * statistics.median(merge_t), 1) if merge_t else None,
            "merge_p90_ms": _percentile(merge_t, 90) if merge_t else None,
            "split_p50_ms": round(1000 * statistics.median(split_t), 1) if split_t else None,
            "split_p90_ms": _percentile(split_t, 90) if split_t else None,
            "edit_cpu_p50_ms": round(1000 * statistics.median(cpu_t), 1) if cpu_t else None,
            "edits": n_done,
            "load_average": round(os.getloadavg()[0], 1),
        }
    finally:
        engine.dispose()
