"""The connectivity service against a brute force, at every version and at a moment after edits.

On a private server per storage engine, the synapse and cell-type tables are read in full with
the genuine caveclient at each of the demo's versions; then two neurons pairs are merged, synapses
are added and deleted, and the tables are read again with ``live_live_query`` at a moment after
the edits. At each moment every operation of ``client.connectivity`` (opencave's client over
HTTP) must equal ``tests/support/connectivity_oracle.py`` (plain loops over the rows), for
several root sets and thresholds; diffs between versions and from a version to the moment must
equal the oracle's difference of the two adjacencies, old roots mapped to the later roots of their
supervoxels (``get_leaves``, then ``get_roots``; a subset of ``get_latest_roots``) and deleted synapses through ``get_roots`` at the
later moment. Bad input answers a clear 4xx.
"""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pandas as pd
import pytest
import requests

from opencave import CAVEclient
from tests.support import connectivity_oracle as oracle
from tests.support.demo import demo_world
from tests.support.materialize import caveclient_for, roots_at

DS = "opencave_demo"
SYNAPSES = "synapses"
BASE = "/connectivity/api/v1/datastack/" + DS


def _now() -> dt.datetime:
    time.sleep(0.02)
    moment = dt.datetime.now(dt.timezone.utc)
    time.sleep(0.02)
    return moment


class Moment:
    """One moment's tables as the brute force sees them, and how to ask the service for it."""

    def __init__(self, label: str, ask: dict, synapses: pd.DataFrame, cell_types: pd.DataFrame, when: dt.datetime):
        self.label = label
        self.ask = ask  # version= or timestamp= for the client
        self.synapses = synapses
        self.cell_types = cell_types
        self.when = when

    def busiest(self, count: int) -> list[int]:
        """The roots with the most synapses on either side (non-zero), most first."""
        syn = self.synapses
        counts = pd.concat([syn["pre_pt_root_id"], syn["post_pt_root_id"]]).value_counts()
        counts = counts[counts.index != 0]
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return [int(root) for root, _ in ranked[:count]]


def _cell_types(cell_types: pd.DataFrame, nuclei: pd.DataFrame) -> pd.DataFrame:
    """The reference table's rows with the root of the nucleus each names (caveclient merges the
    referenced rows in already where it can)."""
    if "pt_root_id" in cell_types.columns:
        return cell_types[["pt_root_id", "cell_type"]].reset_index(drop=True)
    merged = cell_types.merge(nuclei[["id", "pt_root_id"]].rename(columns={"id": "target_id"}), on="target_id", how="inner")
    return merged[["pt_root_id", "cell_type"]]


@pytest.fixture(scope="module")
def world(backend, server_factory):
    server = server_factory(backend)
    token = server.new_token()
    cave = caveclient_for(server, token)
    moments: list[Moment] = []
    versions = sorted(cave.materialize.get_versions())
    for version in versions:
        syn = cave.materialize.query_table(SYNAPSES, materialization_version=version)
        types = _cell_types(
            cave.materialize.query_table("cell_types", materialization_version=version),
            cave.materialize.query_table("nucleus_detection", materialization_version=version),
        )
        moments.append(Moment(f"version {version}", {"version": version}, syn, types, cave.materialize.get_timestamp(version)))

    # edits after the last version: two merges, synapses added and deleted
    demo = demo_world(server)
    for (a, point_a), (b, point_b) in demo.merge_candidates(cave, 2):
        cave.chunkedgraph.do_merge([a, b], [point_a, point_b], resolution=(4, 4, 40))
    latest = moments[-1].synapses
    live = latest[(latest["pre_pt_root_id"] != 0) & (latest["post_pt_root_id"] != 0)]
    sources = cave.annotation.get_annotation(SYNAPSES, [int(i) for i in live["id"].iloc[:6]])
    cave.annotation.post_annotation(
        SYNAPSES,
        [{"pre_pt": {"position": r["pre_pt_position"]}, "post_pt": {"position": r["post_pt_position"]}, "ctr_pt": {"position": r["ctr_pt_position"]}, "size": 123.5} for r in sources],
    )
    cave.annotation.delete_annotation(SYNAPSES, [int(i) for i in live["id"].iloc[6:14]])
    after = _now()
    syn = cave.materialize.live_live_query(SYNAPSES, after)
    types = _cell_types(cave.materialize.live_live_query("cell_types", after), cave.materialize.live_live_query("nucleus_detection", after))
    moments.append(Moment("after edits", {"timestamp": after}, syn, types, after))

    client = CAVEclient(DS, server_address=server.url, auth_token=token, write_server_cache=False)
    return {"server": server, "token": token, "cave": cave, "client": client, "moments": moments}


def _same(actual: pd.DataFrame, expected: pd.DataFrame, what: str) -> None:
    actual = actual.reset_index(drop=True) if isinstance(actual.index, pd.RangeIndex) else actual
    pd.testing.assert_frame_equal(actual, expected, check_exact=False, rtol=1e-9, obj=what)


def _names_its_moment(frame: pd.DataFrame, moment: Moment, min_synapses: int) -> None:
    attrs = frame.attrs
    assert attrs["datastack"] == DS and attrs["synapse_table"] == SYNAPSES and attrs["min_synapses"] == min_synapses
    if "version" in moment.ask:
        assert attrs["version"] == moment.ask["version"]
    else:
        assert attrs["version"] is None
    stamp = dt.datetime.fromisoformat(attrs["timestamp"].replace("Z", "+00:00"))
    assert abs((stamp - moment.when).total_seconds()) < 1e-3


@pytest.mark.parametrize("min_synapses", [1, 3])
def test_edges_equal_brute_force(world, min_synapses):
    conn = world["client"].connectivity
    for moment in world["moments"]:
        roots = moment.busiest(12)
        cases = {"all": (None, None), "pre": (roots[:6], None), "post": (None, roots[3:9]), "both": (roots, roots)}
        for case, (pre, post) in cases.items():
            found = conn.edges(pre, post, min_synapses=min_synapses, **moment.ask)
            assert len(found) or case != "all", f"{moment.label}: no connections at all"
            _same(found, oracle.oracle_edges(moment.synapses, pre, post, min_synapses), f"{moment.label} edges {case} ≥{min_synapses}")
            _names_its_moment(found, moment, min_synapses)


@pytest.mark.parametrize("min_synapses", [1, 4])
def test_adjacency_equals_brute_force(world, min_synapses):
    conn = world["client"].connectivity
    for moment in world["moments"]:
        roots = moment.busiest(15)[::-1]  # any order: rows and columns follow it
        dense = conn.adjacency(roots, min_synapses=min_synapses, **moment.ask)
        expected = oracle.oracle_adjacency(moment.synapses, roots, min_synapses)
        pd.testing.assert_frame_equal(dense, expected, obj=f"{moment.label} adjacency")
        assert dense.to_numpy().sum() > 0
        sparse = conn.adjacency(roots, sparse=True, min_synapses=min_synapses, **moment.ask)
        assert sparse.shape == (len(roots), len(roots))
        np.testing.assert_array_equal(sparse.toarray(), expected.to_numpy())


def _sharing_pair(moment: Moment, roots: list[int]) -> list[int]:
    """The two of ``roots`` that share the most input partners (so the common-partner case is not empty)."""
    inputs = {r: set(oracle.oracle_partners(moment.synapses, [r], "input")["partner_root_id"]) for r in roots}
    pairs = [(len(inputs[a] & inputs[b]), a, b) for i, a in enumerate(roots) for b in roots[i + 1 :]]
    _, a, b = max(pairs)
    return [a, b]


def test_partners_and_common_partners_equal_brute_force(world):
    conn = world["client"].connectivity
    for moment in world["moments"]:
        roots = moment.busiest(8)
        pair = _sharing_pair(moment, roots)
        for direction in ("input", "output"):
            for threshold in (1, 2):
                found = conn.partners(roots[:3], direction, min_synapses=threshold, **moment.ask)
                assert len(found)
                _same(found, oracle.oracle_partners(moment.synapses, roots[:3], direction, threshold), f"{moment.label} {direction} partners")
                one = conn.partners(roots[4], direction, min_synapses=threshold, **moment.ask)
                _same(one, oracle.oracle_partners(moment.synapses, [roots[4]], direction, threshold), f"{moment.label} one root's partners")
                for group in (pair, roots[:3]):
                    common = conn.common_partners(group, direction, min_synapses=threshold, **moment.ask)
                    _same(common, oracle.oracle_common_partners(moment.synapses, group, direction, threshold), f"{moment.label} common {direction}")
        assert len(conn.common_partners(pair, "input", **moment.ask))


@pytest.mark.parametrize("min_synapses", [1, 2])
def test_cell_type_aggregates_equal_brute_force(world, min_synapses):
    conn = world["client"].connectivity
    for moment in world["moments"]:
        long, neurons, ambiguous = oracle.oracle_cell_types(moment.synapses, moment.cell_types, "cell_type", "pt_root_id", min_synapses)
        found = conn.cell_type_matrix("cell_types", long=True, min_synapses=min_synapses, **moment.ask)
        assert len(found), f"{moment.label}: no typed connections"
        _same(found, long, f"{moment.label} cell types")
        assert found.attrs["neurons"] == {str(k): int(v) for k, v in zip(neurons["cell_type"], neurons["n_neurons"])}
        assert found.attrs["n_ambiguous"] == ambiguous
        matrix = conn.cell_type_matrix("cell_types", min_synapses=min_synapses, **moment.ask)
        expected = oracle.oracle_cell_type_matrix(moment.synapses, moment.cell_types, "cell_type", "pt_root_id", min_synapses)
        pd.testing.assert_frame_equal(matrix, expected, check_index_type=False, check_column_type=False, obj=f"{moment.label} matrix")


def test_paths_equal_brute_force(world):
    conn = world["client"].connectivity
    for moment in world["moments"]:
        roots = moment.busiest(10)
        sources, targets = roots[:3], roots[3:7]
        for hops, threshold in ((2, 1), (3, 2)):
            expected = oracle.oracle_paths(moment.synapses, sources, targets, hops, threshold)
            found = conn.paths(sources, targets, max_hops=hops, min_synapses=threshold, **moment.ask)
            assert len(expected), f"{moment.label}: the case has no paths"
            _same(found, expected, f"{moment.label} paths ≤{hops} hops ≥{threshold}")
            assert found.attrs["truncated"] is False
            cut = conn.paths(sources, targets, max_hops=hops, min_synapses=threshold, max_paths=2, **moment.ask)
            _same(cut, expected.head(2), f"{moment.label} first two paths")
            assert cut.attrs["truncated"] is (len(expected) > 2)


def _successors(cave, roots: list[int], to: dt.datetime) -> dict[int, list[int]]:
    """Each root's successors: the roots at ``to`` that hold any of its supervoxels (its lineage
    descendants that kept part of it; ``get_latest_roots`` also names descendants that merely
    passed through a merge with it and kept none of it)."""
    found = {}
    for r in roots:
        successors = set(roots_at(cave, cave.chunkedgraph.get_leaves(r), to).tolist())
        assert successors <= {int(s) for s in cave.chunkedgraph.get_latest_roots(r, timestamp=to)}
        found[r] = sorted(successors)
    return found


@pytest.mark.parametrize("pair", [(0, -2), (-2, -1), (0, -1)], ids=["between versions", "version to moment", "first version to moment"])
def test_diff_equals_difference_of_adjacencies_through_lineage(world, pair):
    cave, conn = world["cave"], world["client"].connectivity
    before, after = world["moments"][pair[0]], world["moments"][pair[1]]
    roots = before.busiest(6)
    successors = _successors(cave, roots, after.when)
    assert any(s != [r] for r, s in successors.items()) or pair != (-2, -1), "the edits must change some of the roots"
    expected = oracle.oracle_diff(
        before.synapses, after.synapses, roots, 1, supervoxel_roots=lambda svs: roots_at(cave, svs, after.when), successors=successors
    )
    ask = {f"from_{k}": v for k, v in before.ask.items()} | {f"to_{k}": v for k, v in after.ask.items()}
    found = conn.diff(roots, **ask)
    assert (expected["status"] != "same").any(), "the case must change some connections"
    _same(found, expected, f"diff {before.label} → {after.label}")
    assert found.attrs["from"]["version"] == before.ask.get("version") and found.attrs["to"]["version"] == after.ask.get("version")
    strong = conn.diff(roots, min_synapses=3, **ask)
    _same(strong, oracle.oracle_diff(before.synapses, after.synapses, roots, 3, supervoxel_roots=lambda svs: roots_at(cave, svs, after.when), successors=successors), "diff ≥3")


# -- bad input ----------------------------------------------------------------------------------
def _post(world, operation: str, body: dict) -> requests.Response:
    return requests.post(world["server"].url + f"{BASE}/{operation}", json=body, headers={"Authorization": f"Bearer {world['token']}"}, timeout=60)


@pytest.mark.parametrize(
    "operation, body, status, code",
    [
        ("partners", {"roots": [12345]}, 400, "invalid_root_ids"),
        ("partners", {"roots": [12345], "timestamp": "2025-06-01T00:00:00Z"}, 400, "invalid_root_ids"),
        ("edges", {"synapse_table": "nucleus_detection"}, 400, "not_a_synapse_table"),
        ("edges", {"synapse_table": "no_such_table"}, 404, None),
        ("edges", {"version": 999}, 404, None),
        ("cell_type_matrix", {"cell_type_table": SYNAPSES, "column": "size"}, 400, "not_a_cell_type_table"),
        ("cell_type_matrix", {"cell_type_table": "cell_types", "column": "no_such_column"}, 400, "unknown_column"),
        ("edges", {"timestamp": "2999-01-01T00:00:00Z"}, 400, "timestamp_in_future"),
        ("edges", {"version": 1, "timestamp": "2025-01-01T00:00:00Z"}, 422, None),
        ("adjacency", {"roots": [5, 5]}, 422, None),
        ("partners", {"roots": [5], "direction": "sideways"}, 422, None),
        ("paths", {"sources": [5], "targets": [6], "max_hops": 6}, 422, None),
        ("diff", {"roots": [5], "from_version": 1}, 422, None),
        ("edges", {"min_synapses": 0}, 422, None),
        ("edges", {"unknown_key": 1}, 422, None),
    ],
)
def test_bad_input_answers_a_clear_4xx(world, operation, body, status, code):
    answer = _post(world, operation, body)
    assert answer.status_code in ((status,) if status != 422 else (400, 422)), answer.text
    payload = answer.json()
    assert payload.get("message"), payload
    if code is not None:
        assert payload["error"] == code, payload


def test_json_answers_and_client_side_errors(world):
    moment = world["moments"][0]
    roots = moment.busiest(3)
    answer = _post(world, "partners", {"roots": roots, **moment.ask})
    assert answer.status_code == 200, answer.text
    payload = answer.json()
    assert payload["meta"]["synapse_table"] == SYNAPSES and payload["meta"]["version"] == moment.ask["version"]
    expected = oracle.oracle_partners(moment.synapses, roots, "input", 1)
    assert payload["data"]["partner_root_id"] == expected["partner_root_id"].tolist()
    with pytest.raises(ValueError, match="distinct"):
        world["client"].connectivity.adjacency([roots[0], roots[0]])


def test_permissions_are_those_of_the_tables_read(world):
    """A table its owner keeps private answers connectivity to the owner only, as a query would."""
    import os

    server, cave = world["server"], world["cave"]
    table = f"private_synapses_{os.getpid()}"
    cave.annotation.create_table(table, "synapse", "private", voxel_resolution=[8, 8, 40], read_permission="PRIVATE")
    source = cave.annotation.get_annotation(SYNAPSES, [1, 2, 3])
    cave.annotation.post_annotation(
        table, [{k: ({"position": r[f"{k}_position"]} if k != "size" else r["size"]) for k in ("pre_pt", "post_pt", "ctr_pt", "size")} for r in source]
    )
    moment = _now()
    email = f"reader-{os.getpid()}@example.org"
    server.cli("user", "add", email)
    reader = CAVEclient(DS, server_address=server.url, auth_token=server.new_token(email), write_server_cache=False).connectivity
    owner = world["client"].connectivity
    assert owner.edges(synapse_table=table, timestamp=moment)["n_synapses"].sum() == 3
    for attempt in (
        lambda: reader.edges(synapse_table=table, timestamp=moment),
        lambda: reader.cell_type_matrix(table, timestamp=moment),
    ):
        with pytest.raises(requests.HTTPError, match="can only be read by its owner"):
            attempt()
    assert len(reader.edges(timestamp=moment)) > 0  # the datastack's own synapse table stays readable
