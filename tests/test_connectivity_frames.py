"""opencave.connectivity on DataFrames equals the brute-force oracle on random synapse tables.

Tables have rows with root 0, autapses, null sizes (or no ``size`` column), heavy pairs so that
thresholds 1..4 matter; cell-type tables have repeated, ambiguous, null and unconnected
entries; diffs run over merges and splits with synapses deleted and added in between.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import opencave.connectivity as oc
import opencave.connectivity.path_search as paths_module
from tests.support.connectivity_oracle import (
    oracle_adjacency,
    oracle_cell_type_matrix,
    oracle_cell_types,
    oracle_common_partners,
    oracle_diff,
    oracle_edges,
    oracle_partners,
    oracle_paths,
)

SEEDS = [0, 1, 2]
THRESHOLDS = [1, 2, 3, 4]
BASE = 864691135000000000
TYPES = ["BC", "L23", "L4", "MC"]
same = pd.testing.assert_frame_equal


def random_synapses(seed: int, n_roots: int = 14, n_rows: int = 260, size: bool = True) -> tuple[pd.DataFrame, np.ndarray]:
    """(synapse rows, their roots): skewed pair weights, ~5% root-0 sides, some autapses."""
    rng = np.random.default_rng(seed)
    roots = BASE + rng.choice(10**6, n_roots, replace=False)
    weight = 1.0 / np.arange(1, n_roots + 1)
    pre = rng.choice(roots, n_rows, p=weight / weight.sum())
    post = rng.choice(roots, n_rows, p=rng.permutation(weight) / weight.sum())
    autapse = rng.random(n_rows) < 0.06
    post[autapse] = pre[autapse]
    pre[rng.random(n_rows) < 0.04] = 0
    post[rng.random(n_rows) < 0.04] = 0
    syn = pd.DataFrame({"id": rng.permutation(n_rows) + 1, "pre_pt_root_id": pre, "post_pt_root_id": post})
    if size:
        sizes = rng.integers(20, 2000, n_rows).astype(float)
        sizes[rng.random(n_rows) < 0.15] = np.nan
        syn["size"] = sizes
    return syn, roots


def random_cell_types(seed: int, roots: np.ndarray) -> pd.DataFrame:
    """Types for most roots: repeats of one type, ambiguous roots, null types, root 0, unconnected roots."""
    rng = np.random.default_rng(seed + 100)
    rows = []
    for root in roots[rng.random(len(roots)) < 0.8]:
        kind = rng.random()
        cell_type = TYPES[rng.integers(len(TYPES))]
        rows.append((root, cell_type))
        if kind < 0.2:
            rows.append((root, cell_type))  # the same type twice: still typed
        elif kind < 0.35:
            rows.append((root, TYPES[(TYPES.index(cell_type) + 1) % len(TYPES)]))  # ambiguous
        elif kind < 0.45:
            rows.append((root, None))  # a null type is ignored
    rows += [(roots[-1], "BC"), (roots[-1], "MC"), (0, "L4"), (BASE + 10**7, "L23"), (BASE + 10**7 + 1, None)]
    order = rng.permutation(len(rows))
    return pd.DataFrame({"id": np.arange(len(rows)), "pt_root_id": [int(rows[i][0]) for i in order], "cell_type": [rows[i][1] for i in order]})


@pytest.fixture(params=[(seed, size) for seed in SEEDS for size in (True, False)] + [(7, True)], ids=lambda p: f"seed{p[0]}-{'size' if p[1] else 'nosize'}")
def table(request):
    seed, size = request.param
    return random_synapses(seed, size=size) + (seed,)


UNKNOWN = BASE + 10**8


def test_random_tables_have_the_cases(table):
    syn, _, _ = table
    assert ((syn.pre_pt_root_id == 0) | (syn.post_pt_root_id == 0)).any()
    assert (syn.pre_pt_root_id == syn.post_pt_root_id).any()
    counts = oracle_edges(syn)["n_synapses"]
    assert counts.max() >= 5 and (counts == 1).any()


@pytest.mark.parametrize("min_synapses", THRESHOLDS)
def test_edges(table, min_synapses):
    syn, roots, _ = table
    answer = oc.edges(syn, min_synapses=min_synapses)
    same(answer, oracle_edges(syn, min_synapses=min_synapses))
    assert len(answer) > 0
    assert answer.attrs["min_synapses"] == min_synapses and answer.attrs["truncated"] is False
    if min_synapses == 1:  # a pair whose sizes are all null sums to NaN, as SQL's SUM
        assert answer.size_sum.isna().any() and (answer.n_synapses > 1).any()
    some = [*roots[:5], UNKNOWN, 0]
    for pre, post in ((some, None), (None, some), (roots[3:9], roots[:6])):
        same(oc.edges(syn, pre, post, min_synapses), oracle_edges(syn, pre, post, min_synapses))


@pytest.mark.parametrize("min_synapses", THRESHOLDS)
def test_adjacency(table, min_synapses):
    syn, roots, seed = table
    chosen = [*np.random.default_rng(seed).permutation(roots)[:9], UNKNOWN, 0]
    expected = oracle_adjacency(syn, chosen, min_synapses)
    same(oc.adjacency(syn, chosen, min_synapses), expected)
    matrix = oc.adjacency(syn, chosen, min_synapses, sparse=True)
    assert matrix.format == "csr" and matrix.dtype == np.int64 and matrix.shape == (len(chosen), len(chosen))
    np.testing.assert_array_equal(matrix.toarray(), expected.to_numpy())
    assert oc.adjacency(syn, [], min_synapses).shape == (0, 0)


@pytest.mark.parametrize("min_synapses", THRESHOLDS)
@pytest.mark.parametrize("direction", ["input", "output"])
def test_partners(table, min_synapses, direction):
    syn, roots, _ = table
    chosen = [roots[4], UNKNOWN, roots[0], roots[4], roots[9], 0]
    answer = oc.partners(syn, chosen, direction, min_synapses)
    same(answer, oracle_partners(syn, chosen, direction, min_synapses))
    same(oc.partners(syn, int(roots[0]), direction, min_synapses), oracle_partners(syn, [roots[0]], direction, min_synapses))


@pytest.mark.parametrize("min_synapses", THRESHOLDS)
@pytest.mark.parametrize("direction", ["input", "output"])
def test_common_partners(table, min_synapses, direction):
    syn, roots, _ = table
    for chosen in ([roots[0]], [roots[1], roots[0]], [roots[2], roots[0], roots[1], roots[0]], [roots[0], UNKNOWN]):
        same(oc.common_partners(syn, chosen, direction, min_synapses), oracle_common_partners(syn, chosen, direction, min_synapses))
    if min_synapses == 1:
        assert len(oc.common_partners(syn, [roots[0], roots[1]], direction)) > 0


@pytest.mark.parametrize("min_synapses", THRESHOLDS)
def test_cell_type_matrix(table, min_synapses):
    syn, roots, seed = table
    types = random_cell_types(seed, roots)
    long, neurons, n_ambiguous = oracle_cell_types(syn, types, min_synapses=min_synapses)
    answer = oc.cell_type_matrix(syn, types, min_synapses=min_synapses, long=True)
    same(answer, long)
    matrix = oc.cell_type_matrix(syn, types, min_synapses=min_synapses)
    expected = oracle_cell_type_matrix(syn, types, min_synapses=min_synapses)
    same(matrix, expected)
    for result in (answer, matrix):
        assert result.attrs["neurons"] == dict(zip(neurons.cell_type, neurons.n_neurons.tolist()))
        assert result.attrs["n_ambiguous"] == n_ambiguous
    assert n_ambiguous >= 1
    renamed = types.rename(columns={"pt_root_id": "post_pt_root_id", "cell_type": "label"})
    same(oc.cell_type_matrix(syn, renamed, "label", "post_pt_root_id", min_synapses), matrix)


def test_cell_type_matrix_without_typed_connections(table):
    syn, _, _ = table
    types = pd.DataFrame({"pt_root_id": [UNKNOWN, UNKNOWN + 1], "cell_type": ["x", "y"]})
    same(oc.cell_type_matrix(syn, types, long=True), oracle_cell_types(syn, types)[0])
    same(oc.cell_type_matrix(syn, types), oracle_cell_type_matrix(syn, types))


ORACLE_PATHS: dict[tuple, pd.DataFrame] = {}


@pytest.mark.parametrize("search", ["breadth-first", "depth-first"])
@pytest.mark.parametrize("min_synapses", THRESHOLDS)
@pytest.mark.parametrize("max_hops", [1, 2, 3, 4])
def test_paths(table, min_synapses, max_hops, search, monkeypatch):
    """Both searches (the depth-first one takes over when partial paths pass FRONTIER_LIMIT)."""
    if search == "depth-first":
        monkeypatch.setattr(paths_module, "FRONTIER_LIMIT", 0)
    syn, roots, seed = table
    rng = np.random.default_rng(seed + max_hops)
    sources = [*rng.choice(roots, 3, replace=False), UNKNOWN]
    targets = [*rng.choice(roots, 3, replace=False), sources[0]]
    key = (seed, "size" in syn.columns, max_hops, min_synapses)
    if key not in ORACLE_PATHS:  # both searches compare with one oracle run
        ORACLE_PATHS[key] = oracle_paths(syn, sources, targets, max_hops, min_synapses)
    expected = ORACLE_PATHS[key]
    answer = oc.paths(syn, sources, targets, max_hops, min_synapses, max_paths=10**6)
    same(answer, expected)
    assert answer.attrs["truncated"] is False
    if min_synapses == 1 and max_hops >= 2:
        assert (expected.n_hops == max_hops).any()
    for cap in (1, 7, len(expected) - 1, len(expected)):
        if cap >= 1:
            capped = oc.paths(syn, sources, targets, max_hops, min_synapses, max_paths=cap)
            same(capped, expected.head(cap))
            assert capped.attrs["truncated"] is (len(expected) > cap)


def _lineage_world(seed: int) -> dict:
    """Supervoxels grouped into roots at *from*, then a merge, a split and a split-and-merge at *to*."""
    rng = np.random.default_rng(seed + 200)
    svs = 1000 + np.arange(48)
    old_roots = BASE + 10**6 + rng.choice(1000, 9, replace=False)
    owner = np.concatenate([np.arange(9), rng.integers(0, 9, len(svs) - 9)])
    old = {int(sv): int(old_roots[o]) for sv, o in zip(svs, owner)}
    groups = [list(svs[owner == i]) for i in range(9)]
    new = dict(old)
    fresh = iter(BASE + 2 * 10**6 + np.arange(100))
    merged = int(next(fresh))
    for sv in groups[0] + groups[1]:
        new[int(sv)] = merged
    halves = [int(next(fresh)), int(next(fresh))]
    for i, sv in enumerate(groups[2]):
        new[int(sv)] = halves[i % 2]
    split_merged, rest = int(next(fresh)), int(next(fresh))
    for i, sv in enumerate(groups[3]):
        new[int(sv)] = split_merged if i % 2 == 0 else rest
    for sv in groups[4]:
        new[int(sv)] = split_merged
    old[0] = new[0] = 0
    n = 320
    pre_sv = rng.choice(svs, n)
    post_sv = rng.choice(svs, n)
    pre_sv[rng.random(n) < 0.04] = 0
    post_sv[rng.random(n) < 0.04] = 0
    autapse = rng.random(n) < 0.05
    post_sv[autapse] = pre_sv[autapse]
    was = rng.random(n) < 0.8
    stays = was & (rng.random(n) < 0.8)
    added = ~was & (rng.random(n) < 0.7)
    ids = rng.permutation(n) + 1

    def rows(mask, roots):
        return pd.DataFrame(
            {
                "id": ids[mask],
                "pre_pt_supervoxel_id": pre_sv[mask],
                "post_pt_supervoxel_id": post_sv[mask],
                "pre_pt_root_id": [roots[int(s)] for s in pre_sv[mask]],
                "post_pt_root_id": [roots[int(s)] for s in post_sv[mask]],
                "size": rng.integers(10, 500, int(mask.sum())).astype(float),
            }
        ).sample(frac=1, random_state=seed)

    successors = {int(r): {new[int(sv)] for sv in svs if old[int(sv)] == r} for r in old_roots}
    return {
        "before": rows(was, old),
        "after": rows(stays | added, new),
        "roots": old_roots,
        "supervoxel_roots": lambda s: np.array([new[int(v)] for v in s], dtype=np.int64),
        "successors": successors,
    }


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("min_synapses", [1, 2, 3])
def test_diff(seed, min_synapses):
    world = _lineage_world(seed)
    roots = world["roots"]
    chosen = [roots[0], roots[2], roots[3], UNKNOWN, roots[7], roots[0], roots[1], roots[4], roots[5]]
    for successors in (None, world["successors"]):
        args = (world["before"], world["after"], chosen, min_synapses, world["supervoxel_roots"], successors)
        answer = oc.diff(*args)
        same(answer, oracle_diff(*args))
        assert {"gained", "lost", "changed"} <= set(answer.status) or min_synapses > 1
        assert answer.attrs["min_synapses"] == min_synapses


def test_diff_needs_supervoxel_roots_only_for_deleted_synapses():
    world = _lineage_world(0)
    before, after, roots = world["before"], world["after"], world["roots"]
    with pytest.raises(ValueError, match="supervoxel_roots"):
        oc.diff(before, after, roots[:3])
    alive = before[before.id.isin(after.id)].drop(columns=["pre_pt_supervoxel_id", "post_pt_supervoxel_id"])
    answer = oc.diff(alive, after, roots[:3], successors=world["successors"])
    same(answer, oracle_diff(alive, after, roots[:3], successors=world["successors"]))
    assert len(answer) > 0
    with pytest.raises(ValueError, match="pre_pt_supervoxel_id"):
        oc.diff(before.drop(columns=["pre_pt_supervoxel_id"]), after, roots[:3], supervoxel_roots=world["supervoxel_roots"])


def test_connection_rows_give_the_answers_of_their_synapse_rows(table):
    syn, roots, seed = table
    types = random_cell_types(seed, roots)
    sources, targets = roots[:4], roots[3:8]
    for min_synapses in (1, 3):
        conns = oc.edges(syn)
        assert list(conns.columns) == ["pre_pt_root_id", "post_pt_root_id", "n_synapses", "size_sum"]
        same(oc.edges(conns, roots[:6], None, min_synapses), oc.edges(syn, roots[:6], None, min_synapses))
        same(oc.adjacency(conns, roots, min_synapses), oc.adjacency(syn, roots, min_synapses))
        for direction in ("input", "output"):
            same(oc.partners(conns, roots[:3], direction, min_synapses), oc.partners(syn, roots[:3], direction, min_synapses))
            same(oc.common_partners(conns, roots[:2], direction, min_synapses), oc.common_partners(syn, roots[:2], direction, min_synapses))
        same(oc.cell_type_matrix(conns, types, min_synapses=min_synapses, long=True), oc.cell_type_matrix(syn, types, min_synapses=min_synapses, long=True))
        same(oc.paths(conns, sources, targets, 3, min_synapses), oc.paths(syn, sources, targets, 3, min_synapses))
    # connection rows repeating a pair are summed, as their synapses would be
    repeated = conns.iloc[::2]
    pairs = pd.MultiIndex.from_frame(repeated[["pre_pt_root_id", "post_pt_root_id"]])
    their_synapses = syn[pd.MultiIndex.from_frame(syn[["pre_pt_root_id", "post_pt_root_id"]]).isin(pairs)]
    same(oc.edges(pd.concat([repeated, conns], ignore_index=True)), oc.edges(pd.concat([syn, their_synapses], ignore_index=True)))


def test_attrs_name_the_moment_of_the_input():
    syn, roots = random_synapses(0)
    syn.attrs = {"datastack_name": "ds", "table_name": "synapses", "materialization_version": 3, "truncated": True}
    attrs = oc.partners(syn, roots[:2]).attrs
    assert attrs == {"datastack": "ds", "synapse_table": "synapses", "version": 3, "min_synapses": 1, "truncated": True}


def test_root_ids_of_other_integer_dtypes():
    syn, roots = random_synapses(1)
    variants = [
        syn.astype({"pre_pt_root_id": "uint64", "post_pt_root_id": "uint64"}),
        syn.astype({"pre_pt_root_id": "Int64", "post_pt_root_id": "Int64"}),
    ]
    for variant in variants:
        same(oc.edges(variant), oracle_edges(syn))
    same(oc.partners(syn, np.array(roots[:3], dtype=np.uint64)), oracle_partners(syn, roots[:3]))
    same(oc.partners(syn, pd.Series(roots[:3])), oracle_partners(syn, roots[:3]))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s, r: oc.edges(s.drop(columns="pre_pt_root_id")), "pre_pt_root_id"),
        (lambda s, r: oc.edges(s.to_dict()), "DataFrame"),
        (lambda s, r: oc.edges(s, min_synapses=0), "min_synapses"),
        (lambda s, r: oc.edges(s, min_synapses=1.5), "min_synapses"),
        (lambda s, r: oc.edges(s, min_synapses=True), "min_synapses"),
        (lambda s, r: oc.edges(s, pre_roots="123"), "pre_roots"),
        (lambda s, r: oc.adjacency(s, [r[0], r[1], r[0]]), "distinct"),
        (lambda s, r: oc.adjacency(s, [1.5, 2.0]), "integer"),
        (lambda s, r: oc.partners(s, r[:2], direction="in"), "direction"),
        (lambda s, r: oc.common_partners(s, [], "input"), "at least one root"),
        (lambda s, r: oc.common_partners(s, r[:2], "both"), "direction"),
        (lambda s, r: oc.paths(s, r[:2], r[2:4], max_hops=0), "max_hops"),
        (lambda s, r: oc.paths(s, r[:2], r[2:4], max_hops=6), "max_hops"),
        (lambda s, r: oc.paths(s, r[:2], r[2:4], max_paths=0), "max_paths"),
        (lambda s, r: oc.cell_type_matrix(s, pd.DataFrame({"pt_root_id": r})), "cell_type"),
        (lambda s, r: oc.cell_type_matrix(s, pd.DataFrame({"cell_type": ["a"]})), "pt_root_id"),
        (lambda s, r: oc.diff(oc.edges(s), s, r[:2]), "synapse rows"),
        (lambda s, r: oc.diff(s.drop(columns="id"), s, r[:2]), "id"),
        (lambda s, r: oc.diff(s, pd.concat([s, s]), r[:2]), "repeated synapse ids"),
        (lambda s, r: oc.diff(s, s, r[:2], successors=[1, 2]), "successors"),
    ],
)
def test_bad_arguments_are_refused(call, message):
    syn, roots = random_synapses(2)
    with pytest.raises(ValueError, match=message):
        call(syn, roots)


@pytest.mark.parametrize("seed", [0, 1])
def test_path_searches_agree_on_a_graph_with_hubs(seed, monkeypatch):
    """On a graph where a few hubs carry most connections (many ties, many truncated levels),
    the depth-first search gives the breadth-first search's answers."""
    rng = np.random.default_rng(seed + 300)
    n_roots, n_conns = 3000, 12000
    roots = BASE + rng.choice(10**7, n_roots, replace=False)
    weight = rng.pareto(1.0, n_roots) + 1
    pick = lambda: rng.choice(roots, n_conns, p=weight / weight.sum())  # noqa: E731
    conns = oc.edges(pd.DataFrame({"pre_pt_root_id": pick(), "post_pt_root_id": pick(), "n_synapses": rng.integers(1, 9, n_conns)}))
    sources, targets = rng.choice(roots, 6, replace=False), rng.choice(roots, 40, replace=False)
    for max_hops, max_paths, min_synapses in ((3, 5000, 1), (4, 300, 1), (4, 40, 3), (5, 25, 2)):
        wide = oc.paths(conns, sources, targets, max_hops, min_synapses, max_paths)
        with monkeypatch.context() as patched:
            patched.setattr(paths_module, "FRONTIER_LIMIT", 0)
            deep = oc.paths(conns, sources, targets, max_hops, min_synapses, max_paths)
        same(deep, wide)
        assert deep.attrs["truncated"] == wide.attrs["truncated"]
        assert len(wide) > 0
