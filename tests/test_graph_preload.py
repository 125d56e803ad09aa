"""A starting server loads every graph's index in the background, on SQLite and PostgreSQL, so
the first request on a graph does not wait for it (administration commands, which do not start
background work, load nothing)."""

from __future__ import annotations

from opencave.demo.registration import DEMO_GRAPH_TABLE
from opencave.runtime import Runtime
from tests.test_annotation_service import runtime  # noqa: F401 (fixture)


def test_a_started_runtime_loads_every_graph(runtime):
    other = Runtime.open(runtime.settings)  # another process on the same store
    try:
        assert other.graphs.table_ids() == [DEMO_GRAPH_TABLE]
        assert other.graphs.current(DEMO_GRAPH_TABLE) is None, "nothing is loaded before the start"
        other.start()
        assert other.background.join(timeout=120)
        loaded = other.graphs.current(DEMO_GRAPH_TABLE)
        assert loaded is not None and loaded.index.n_sv > 0
    finally:
        other.close()
