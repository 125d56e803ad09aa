"""Randomised oracle for live ("live-live") queries.

On a private server, random chunkedgraph edits (merges and splits through the genuine
caveclient) interleave with random annotation inserts, updates and deletes on a synapse table
of our own and with two version creations. The demo's historical versions are then expired, so
that moments before our first version are answered from a *later* version (the backwards
branch). For random moments — before the first version, between versions, after the last edit —
``live_live_query`` (with and without root-id filters) must equal

* a brute-force oracle: a fresh version materialized at that same moment, queried with
  ``query_table`` (rows sorted by id, every column compared), and
* first principles: the rows the annotation service says were alive then, supervoxels read from
  the watershed, roots from the chunkedgraph's ``get_roots(supervoxels, timestamp=T)``.

The seed is fixed (``OPENCAVE_ORACLE_SEED`` picks another) and is part of every failure message.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import requests

from tests.support.demo import demo_world
from tests.support.materialize import (
    SYNAPSE_POSITIONS,
    assert_same_rows,
    caveclient_for,
    create_version,
    roots_at,
    synapses_at,
    annotation_rows,
)

TABLE = "oracle_synapses"
SEED = int(os.environ.get("OPENCAVE_ORACLE_SEED", "20251121"))
STEPS = 14


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def pause() -> dt.datetime:
    """A moment strictly between the previous event and the next one."""
    time.sleep(0.02)
    moment = now()
    time.sleep(0.02)
    return moment


class World:
    """The edits made so far, with enough bookkeeping to choose the next one."""

    def __init__(self, client, world, rng: np.random.Generator, sources: list[dict]):
        self.client = client
        self.world = world
        self.rng = rng
        self.sources = sources  # demo synapse rows whose positions and sizes we reuse
        self.merged: list[tuple[int, int]] = []  # supervoxel pairs we merged and did not split yet
        self.candidates = world.merge_candidates(client, 6)
        self.log: list[str] = []

    # -- annotations ---------------------------------------------------------------------------
    def _row(self) -> dict:
        source = self.sources[int(self.rng.integers(len(self.sources)))]
        return {
            "pre_pt": {"position": source["pre_pt_position"]},
            "post_pt": {"position": source["post_pt_position"]},
            "ctr_pt": {"position": source["ctr_pt_position"]},
            "size": float(np.round(self.rng.uniform(1, 2000), 3)),
        }

    def alive_ids(self) -> list[int]:
        rows = annotation_rows(self.client, TABLE)
        return rows[rows["deleted"].isna()]["id"].astype(int).tolist()

    def insert(self, n: int) -> None:
        ids = self.client.annotation.post_annotation(TABLE, [self._row() for _ in range(n)])
        self.log.append(f"insert {len(ids)} rows {ids[0]}..{ids[-1]}")

    def update(self, n: int) -> None:
        alive = self.alive_ids()
        chosen = self.rng.choice(alive, size=min(n, len(alive)), replace=False).tolist()
        data = []
        for i in chosen:
            new = {"id": int(i), "size": float(np.round(self.rng.uniform(1, 2000), 3))}
            if self.rng.random() < 0.5:  # move the synapse: other supervoxels, other roots
                new.update({k: v for k, v in self._row().items() if k != "size"})
            data.append(new)
        mapping = self.client.annotation.update_annotation(TABLE, data)
        self.log.append(f"update {mapping}")

    def delete(self, n: int) -> None:
        alive = self.alive_ids()
        chosen = self.rng.choice(alive, size=min(n, len(alive)), replace=False).tolist()
        deleted = self.client.annotation.delete_annotation(TABLE, [int(i) for i in chosen])
        self.log.append(f"delete {deleted}")

    # -- chunkedgraph ----------------------------------------------------------------------------
    def merge(self) -> bool:
        cg = self.client.chunkedgraph
        for k in self.rng.permutation(len(self.candidates)):
            (sv_a, point_a), (sv_b, point_b) = self.candidates[k]
            roots = cg.get_roots([sv_a, sv_b])
            if roots[0] == roots[1]:
                continue
            result = cg.do_merge([sv_a, sv_b], [point_a, point_b], resolution=(4, 4, 40))
            self.merged.append((sv_a, sv_b))
            self.log.append(f"merge {sv_a}+{sv_b} -> {result['new_root_ids']}")
            return True
        return False

    def split(self) -> bool:
        cg = self.client.chunkedgraph
        if self.merged and self.rng.random() < 0.7:
            sv_a, sv_b = self.merged.pop(int(self.rng.integers(len(self.merged))))
        else:  # cut a neuron between two of its supervoxels
            source = self.sources[int(self.rng.integers(len(self.sources)))]
            sv = int(self.world.volume.supervoxels_at(np.array([source["post_pt_position"]]))[0])
            if sv == 0:
                return False
            leaves = cg.get_leaves(int(cg.get_roots([sv])[0]))
            if len(leaves) < 4:
                return False
            sv_a, sv_b = int(leaves[0]), int(leaves[len(leaves) // 2])
        root = int(cg.get_roots([sv_a])[0])
        if int(cg.get_roots([sv_b])[0]) != root:
            return False
        try:
            _, new_roots = cg.execute_split([self.world.nm_point(sv_a)], [self.world.nm_point(sv_b)], root, [sv_a], [sv_b])
        except requests.HTTPError as error:  # e.g. a cut that would not separate them
            self.log.append(f"split {sv_a}/{sv_b} refused: {str(error)[:120]}")
            return False
        self.log.append(f"split {root} between {sv_a} and {sv_b} -> {list(new_roots)}")
        return True


def expire_demo_versions(server) -> None:
    """Expire the demo's versions 1-3 (2025): our own versions are then the only ones."""
    script = (
        "import sys\n"
        "from datetime import datetime, timezone\n"
        "from opencave.config import resolve_settings\n"
        "from opencave.runtime import Runtime\n"
        "rt = Runtime.open(resolve_settings(sys.argv[1], sys.argv[2] or None))\n"
        "for v in (1, 2, 3):\n"
        "    rt.materializer.registry.set_expiry('opencave_demo', v, datetime(2000, 1, 1, tzinfo=timezone.utc))\n"
        "print(rt.materializer.expire())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(server.data_dir), server.database or ""], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "('opencave_demo', 3)" in result.stdout, result.stdout


def root_filters(expected: pd.DataFrame, earlier: pd.DataFrame, rng: np.random.Generator) -> tuple[dict, pd.Series]:
    """Nested live-query filters on root ids valid at T — preferring roots that did not exist
    at ``earlier`` (the nearest version), so the remapping is exercised — and the pandas mask."""
    pre = [int(r) for r in expected["pre_pt_root_id"].unique() if r != 0]
    fresh = [r for r in pre if r not in set(earlier["pre_pt_root_id"])]
    pick = list(dict.fromkeys(fresh[:2] + rng.permutation(pre)[:2].tolist()))
    post = [int(r) for r in expected["post_pt_root_id"].unique() if r != 0]
    out = [int(r) for r in rng.permutation(post)[:1]]
    filters = {
        "filter_in_dict": {TABLE: {"pre_pt_root_id": pick}},
        "filter_out_dict": {TABLE: {"post_pt_root_id": out}},
    }
    mask = expected["pre_pt_root_id"].isin(pick) & ~expected["post_pt_root_id"].isin(out)
    return filters, mask


def flat(filters: dict) -> dict:
    """Live-query (nested by table) filters as query_table's flat ones."""
    return {kind: by_table[TABLE] for kind, by_table in filters.items()}


@pytest.fixture(scope="module")
def private(backend, server_factory):
    """A server of our own: the tests here create versions and edit the segmentation."""
    server = server_factory(backend)
    return server, server.new_token()


def test_live_live_query_equals_fresh_materialization(backend, private):
    server, token = private
    client = caveclient_for(server, token)
    world = demo_world(server)
    rng = np.random.default_rng(SEED)
    where = f"(seed {SEED}, {backend})"

    demo_ids = rng.choice(np.arange(1, 20_001), size=300, replace=False)
    sources = [r for r in client.annotation.get_annotation("synapses", demo_ids.tolist()) if r["deleted"] is None]
    client.annotation.create_table(TABLE, "synapse", "oracle test table", voxel_resolution=[8, 8, 40])
    state = World(client, world, rng, sources)
    assert len(state.candidates) >= 3

    # -- the history: random edits, two versions in the middle ------------------------------------
    marks: list[tuple[str, dt.datetime]] = [("table created", pause())]
    state.insert(150)
    marks.append(("first rows", pause()))
    versions: dict[int, dt.datetime] = {}
    for step in range(STEPS):
        if step in (5, 10):
            made = create_version(server, token)
            versions[made["version"]] = dt.datetime.fromisoformat(made["time_stamp"]).replace(tzinfo=dt.timezone.utc)
            marks.append((f"version {made['version']}", pause()))
        forced = {1: "merge", 3: "split", 4: "update", 6: "delete", 7: "merge", 11: "delete", 12: "split"}
        action = forced.get(step) or ["merge", "split", "insert", "update", "delete", "merge"][int(rng.integers(6))]
        if action == "merge":
            done = state.merge()
        elif action == "split":
            done = state.split()
        else:
            getattr(state, action)(int(rng.integers(1, 12)))
            done = True
        if done:
            marks.append((f"step {step}: {action}", pause()))
    assert sum(line.startswith("merge") for line in state.log) >= 2, (where, state.log)
    assert sum(line.startswith("split") and "refused" not in line for line in state.log) >= 1, (where, state.log)
    assert any(line.startswith("update") for line in state.log) and any(line.startswith("delete") for line in state.log), state.log
    expire_demo_versions(server)
    assert client.materialize.get_versions() == sorted(versions)

    # -- random moments: before the first version, between, after the last edit --------------------
    first, last = min(versions.values()), max(versions.values())
    intervals = list(zip(marks[1:], marks[2:]))  # from the first rows on

    def kind(a: dt.datetime, b: dt.datetime) -> str:
        return "before the first version" if b <= first else "after the last version" if a >= last else "between versions" if first <= a and b <= last else "around a version"

    moments: dict[str, dt.datetime] = {"before the first rows": marks[0][1] + (marks[1][1] - marks[0][1]) / 100}
    for label in ("before the first version", "between versions", "after the last version"):
        choices = [(a, b) for (_, a), (_, b) in intervals if kind(a, b) == label]
        assert choices, (label, marks)
        a, b = choices[int(rng.integers(len(choices)))]
        moments[label] = a + (b - a) * float(rng.uniform(0.25, 0.75))
    for k in rng.choice(len(intervals), size=3, replace=False):
        (name, a), (_, b) = intervals[k]
        moments[f"after {name}"] = a + (b - a) * float(rng.uniform(0.1, 0.9))
    moments["after the last edit"] = pause()
    moments["at the first version"] = first

    rows = annotation_rows(client, TABLE)
    m = client.materialize
    answers = {}
    for label, moment in moments.items():
        expected = synapses_at(client, world, rows, moment)
        nearest = min(versions, key=lambda v: (versions[v] > moment, abs((versions[v] - moment).total_seconds())))
        earlier = synapses_at(client, world, rows, versions[nearest])
        filters, mask = root_filters(expected, earlier, rng) if len(expected) else ({}, None)
        live = m.live_live_query(TABLE, moment, split_positions=True)
        assert_same_rows(live, expected, f"{label} {where}: live vs first principles")
        filtered = None
        if filters:
            filtered = m.live_live_query(TABLE, moment, split_positions=True, **filters)
            assert_same_rows(filtered, expected[mask.to_numpy()], f"{label} {where}: filtered live vs first principles")
        demo = m.live_live_query("synapses", moment, split_positions=True)
        for point in ("pre_pt", "post_pt"):
            assert demo[f"{point}_root_id"].tolist() == roots_at(client, demo[f"{point}_supervoxel_id"], moment).tolist(), (label, where)
        answers[label] = (moment, live, filters, filtered, demo)

    # -- the brute-force oracle: a version materialized at each moment ------------------------------
    for label, (moment, live, filters, filtered, demo) in answers.items():
        made = create_version(server, token, moment)
        number = made["version"]
        assert dt.datetime.fromisoformat(made["time_stamp"]).replace(tzinfo=dt.timezone.utc) == moment
        frozen = m.query_table(TABLE, materialization_version=number, split_positions=True)
        assert_same_rows(live, frozen, f"{label} {where}: live vs version {number}")
        assert m.get_annotation_count(TABLE, version=number) == len(live)
        if filters:
            frozen_filtered = m.query_table(TABLE, materialization_version=number, split_positions=True, **flat(filters))
            assert_same_rows(filtered, frozen_filtered, f"{label} {where}: filtered live vs version {number}")
        assert_same_rows(demo, m.query_table("synapses", materialization_version=number, split_positions=True), f"{label} {where}: demo synapses")

    # -- again, now that versions exist at (and just before) every moment ---------------------------
    for label, (moment, live, filters, filtered, demo) in answers.items():
        for at in (moment, moment + dt.timedelta(microseconds=300)):
            if at > now():
                continue
            again = m.live_live_query(TABLE, at, split_positions=True)
            assert_same_rows(again, synapses_at(client, world, rows, at), f"{label}+{at - moment} {where}: with exact versions")
        if filters:
            assert_same_rows(m.live_live_query(TABLE, moment, split_positions=True, **filters), filtered, f"{label} {where}")
    for p in SYNAPSE_POSITIONS:
        assert f"{p}_x" in live.columns
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "Exception in ASGI" not in log, log[-5000:]


def test_read_permission_follows_the_live_table(private):
    """Versions answer only whom the table's owner lets read it now, whatever the permission was
    when the version was made (as upstream, which checks the live table)."""
    server, token = private
    owner = caveclient_for(server, token)
    email = f"reader-{os.getpid()}@example.org"
    server.cli("user", "add", email)
    reader = caveclient_for(server, server.new_token(email))
    table = "permission_synapses"
    owner.annotation.create_table(table, "synapse", "permissions", voxel_resolution=[8, 8, 40], read_permission="PUBLIC")
    source = owner.annotation.get_annotation("synapses", [1, 2, 3])
    owner.annotation.post_annotation(table, [{k: ({"position": r[f"{k}_position"]} if k != "size" else r["size"]) for k in ("pre_pt", "post_pt", "ctr_pt", "size")} for r in source])
    number = create_version(server, token)["version"]
    moment = now()
    assert len(reader.materialize.query_table(table, materialization_version=number)) == 3
    owner.annotation.update_metadata(table, read_permission="PRIVATE")
    m = caveclient_for(server, reader.auth.token).materialize  # no cached metadata
    for attempt in (
        lambda: m.query_table(table, materialization_version=number),
        lambda: m.get_annotation_count(table, version=number),
        lambda: m.get_table_metadata(table, version=number),
        lambda: m.live_live_query(table, moment),
        lambda: m.join_query([[table, "pre_pt_root_id"], ["nucleus_detection", "pt_root_id"]], materialization_version=number),
    ):
        with pytest.raises(requests.HTTPError, match="can only be read by its owner"):
            attempt()
    assert len(owner.materialize.query_table(table, materialization_version=number)) == 3
    owner.annotation.update_metadata(table, read_permission="PUBLIC")
    assert reader.materialize.get_annotation_count(table, version=number) == 3
