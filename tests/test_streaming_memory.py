"""Answers of any size cost the server a bounded amount of memory.

A private server gets a synapse table of 1,000,000 rows and a version of it, then some rows are
deleted and added after the version. Its resident memory (``VmRSS`` of the ``opencave serve``
process, sampled while the answer streams) may rise by less than ``BUDGET`` for

* the whole table as JSON (``return_pyarrow=false``, as caveclient asks for the v2 API), and
* a live query of the whole table at a moment after the changes (frozen rows brought to that
  moment, changed rows swapped in),

each read by the client as it arrives and counted, never held whole.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest
import requests

from tests.support.materialize import DS
from tests.support.memory import PeakRss, change_synapses, count_json_records, fill_synapses

ROWS = 1_000_000
TABLE = "many_synapses"
BUDGET = 250 * 2**20
DELETED = 1_000  # rows deleted after the version
ADDED = 500  # rows added after it


@pytest.fixture(scope="module")
def big(backend, server_factory):
    """A private server whose version holds a 1,000,000-row table, changed after the version."""
    server = server_factory(backend)
    fill_synapses(server, TABLE, ROWS)
    created = server.cli("materialize", "create", DS)
    version = int(created.stdout.split("version ")[1].split()[0])
    change_synapses(server, TABLE, DELETED, ADDED)
    token = server.new_token()
    return server, {"Authorization": f"Bearer {token}"}, version


def test_json_records_hold_the_arrow_answer(server, admin_token):
    """The streamed JSON (many encoder calls) is one array of the rows the Arrow answer holds."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    url = f"{server.url}/materialize/api/v3/datastack/{DS}/version/3/table/synapses/query"
    live_url = f"{server.url}/materialize/api/v3/datastack/{DS}/query"
    live = {"table": "synapses", "timestamp": dt.datetime.now(dt.timezone.utc).isoformat()}
    for target, body in ((url, {}), (live_url, live)):
        answers = [requests.post(target, params={"return_pyarrow": flag}, json=body, headers=headers, timeout=120) for flag in ("false", "true")]
        assert [a.status_code for a in answers] == [200, 200], answers[0].text
        records = answers[0].json()
        frame = pa.ipc.open_stream(answers[1].content).read_pandas()
        assert len(records) == len(frame) > 4 * 4_096  # several encoder calls
        assert records == json.loads(frame.to_json(orient="records"))
        assert [r["id"] for r in records[:3]] == frame["id"].tolist()[:3]


def _restarted(server) -> None:
    """A fresh server process: memory freed by earlier answers stays with a process and would
    hide a rise."""
    server.stop()
    server.start()


def test_a_million_row_json_answer_streams_in_bounded_memory(big):
    server, headers, version = big
    url = f"{server.url}/materialize/api/v2/datastack/{DS}/version/{version}/table/{TABLE}/query"
    params = {"return_pyarrow": "false", "split_positions": "true"}
    _restarted(server)
    # warm-up: the same path on a few rows, so that imports and caches are not counted
    small = requests.post(url, params=params, json={"limit": 10}, headers=headers, timeout=60)
    assert small.status_code == 200, small.text
    assert len(small.json()) == 10
    assert small.json()[0]["id"] == 1
    with PeakRss(server.process.pid) as memory:
        with requests.post(url, params=params, json={}, headers=headers, stream=True, timeout=600) as response:
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "application/json"
            rows, size = count_json_records(response)
    assert rows == ROWS
    assert size > 100 * 2**20  # the answer is far bigger than the budget's slack
    assert memory.rise < BUDGET, f"RSS rose by {memory.rise / 2**20:.0f} MB for a {size / 2**20:.0f} MB JSON answer"


def test_a_whole_table_live_query_runs_in_bounded_memory(big):
    server, headers, _ = big
    url = f"{server.url}/materialize/api/v3/datastack/{DS}/query"
    moment = dt.datetime.now(dt.timezone.utc).isoformat()
    body = {"table": TABLE, "timestamp": moment}
    _restarted(server)
    small = requests.post(url, json={**body, "limit": 10}, headers=headers, timeout=60)
    assert small.status_code == 200, small.text
    with PeakRss(server.process.pid) as memory:
        with requests.post(url, json=body, headers=headers, stream=True, timeout=600) as response:
            assert response.status_code == 200, response.text
            rows, last_id, ordered, early = 0, 0, True, 0
            for batch in pa.ipc.open_stream(response.raw):
                ids = batch.column("id").to_numpy()
                ordered &= bool(ids.size == 0 or (ids[0] > last_id and np.all(np.diff(ids) > 0)))
                last_id = int(ids[-1]) if ids.size else last_id
                early += int(np.count_nonzero(ids < 2 * DELETED))
                rows += batch.num_rows
    assert rows == ROWS - DELETED + ADDED
    assert ordered, "rows of a live answer come in id order"
    assert early == DELETED - 1  # of ids 1 .. 2 * DELETED - 1, the odd ones were deleted
    assert last_id == ROWS + ADDED  # the added rows' ids follow the loaded ones
    assert memory.rise < BUDGET, f"RSS rose by {memory.rise / 2**20:.0f} MB for a live query of {rows:,} rows"
