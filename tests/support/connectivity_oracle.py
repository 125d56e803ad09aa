"""Brute-force reference for the connectivity contract (docs/connectivity.md).

Every function walks the synapse rows one by one with plain loops, dicts and
``collections.Counter``; nothing is shared with ``opencave.connectivity`` or the server, so a
test comparing either with these answers compares two independent computations.

Inputs are plain synapse DataFrames: columns ``pre_pt_root_id`` and ``post_pt_root_id``,
optionally ``size`` (and, for ``oracle_diff``, ``id``, ``pre_pt_supervoxel_id`` and
``post_pt_supervoxel_id``). Rows with a 0 root on either side are ignored everywhere.

Choices where the contract leaves room (the package makes the same ones):

* ``size_sum`` sums the non-null sizes, SQL-style: NaN when every size of the group is null
  (or the table has no ``size`` column).
* Repeated roots in ``partners``/``common_partners``/``diff`` count once, at their first place;
  in ``adjacency`` they are a ValueError. ``common_partners`` of no roots is a ValueError.
* Cell-type columns (``pre_type``, ``post_type``, ``cell_type``) have object dtype.
* ``paths``: ``path`` and ``weights`` cells are Python lists of int.
* ``diff``: a synapse counts in ``n_before`` only if its four roots (both sides, at both
  moments) are non-zero, in ``n_after`` if both its roots at *to* are. Synapses deleted between
  the moments are mapped to *to* roots only when they touch a given root (then
  ``supervoxel_roots`` is required; it gets an int64 array of the distinct non-zero supervoxels,
  supervoxel 0 has root 0). Default successors of r: the non-zero *to* roots of r's side
  of every *before* row where r is that side's root at *from*. Rows that tie on the contract's
  order are ordered by ``root_id_after`` ascending.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

EDGE_COLUMNS = {"pre_pt_root_id": "int64", "post_pt_root_id": "int64", "n_synapses": "int64", "size_sum": "float64"}
PARTNER_COLUMNS = {"root_id": "int64", "partner_root_id": "int64", "n_synapses": "int64", "size_sum": "float64"}
COMMON_COLUMNS = {"partner_root_id": "int64", "root_id": "int64", "n_synapses": "int64", "size_sum": "float64"}
CELL_TYPE_COLUMNS = {
    "pre_type": "object",
    "post_type": "object",
    "n_synapses": "int64",
    "size_sum": "float64",
    "n_connections": "int64",
    "n_pre_neurons": "int64",
    "n_post_neurons": "int64",
    "synapses_per_pre_neuron": "float64",
    "synapses_per_post_neuron": "float64",
}
NEURON_COLUMNS = {"cell_type": "object", "n_neurons": "int64"}
PATH_COLUMNS = {"path": "object", "n_hops": "int64", "weights": "object", "bottleneck": "int64"}
DIFF_COLUMNS = {
    "root_id": "int64",
    "root_id_after": "int64",
    "direction": "object",
    "partner_root_id": "int64",
    "n_before": "int64",
    "n_after": "int64",
    "change": "int64",
    "status": "object",
}


def _frame(rows: list[tuple], columns: Mapping[str, str]) -> pd.DataFrame:
    """A DataFrame of ``rows`` with exactly these columns and dtypes and a RangeIndex."""
    data = {}
    for i, (name, dtype) in enumerate(columns.items()):
        values = [row[i] for row in rows]
        if dtype == "object":
            series = pd.Series(values, dtype=object)
        else:
            series = pd.Series(values, dtype=dtype)
        data[name] = series
    return pd.DataFrame(data, index=pd.RangeIndex(len(rows)))


def _is_null(value) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _add(total: float, value) -> float:
    """SQL SUM: nulls are skipped; NaN until a non-null value arrives."""
    if _is_null(value):
        return total
    value = float(value)
    return value if math.isnan(total) else total + value


def _ids(frame: pd.DataFrame, column: str) -> list[int]:
    """A column of ids as Python ints, null as 0, read column-wise (a row-wise read of a frame
    with a float column would turn 18-digit root ids into floats)."""
    return [0 if _is_null(v) else int(v) for v in frame[column].tolist()]


def _synapses(syn: pd.DataFrame) -> Iterable[tuple[int, int, float]]:
    """(pre, post, size) of every row with two non-zero roots; size NaN when absent or null."""
    sizes = syn["size"].tolist() if "size" in syn.columns else [None] * len(syn)
    for pre, post, size in zip(_ids(syn, "pre_pt_root_id"), _ids(syn, "post_pt_root_id"), sizes):
        if pre == 0 or post == 0:
            continue
        yield pre, post, (math.nan if _is_null(size) else float(size))


def _connections(syn: pd.DataFrame, min_synapses: int) -> dict[tuple[int, int], tuple[int, float]]:
    """(pre, post) -> (n_synapses, size_sum) for the connections at or above the threshold."""
    counts: Counter = Counter()
    sizes: dict[tuple[int, int], float] = defaultdict(lambda: math.nan)
    for pre, post, size in _synapses(syn):
        counts[(pre, post)] += 1
        sizes[(pre, post)] = _add(sizes[(pre, post)], size)
    return {pair: (n, sizes[pair]) for pair, n in counts.items() if n >= min_synapses}


def _distinct(roots: Iterable[int]) -> list[int]:
    seen: list[int] = []
    for root in roots:
        if int(root) not in seen:
            seen.append(int(root))
    return seen


def oracle_edges(syn: pd.DataFrame, pre_roots=None, post_roots=None, min_synapses: int = 1) -> pd.DataFrame:
    """Connections ``pre_pt_root_id, post_pt_root_id, n_synapses, size_sum``.

    Only rows with pre in ``pre_roots`` / post in ``post_roots`` (when not None) count.
    Ordered by n_synapses descending, then pre, then post.
    """
    pre_set = None if pre_roots is None else {int(r) for r in pre_roots}
    post_set = None if post_roots is None else {int(r) for r in post_roots}
    counts: Counter = Counter()
    sizes: dict[tuple[int, int], float] = defaultdict(lambda: math.nan)
    for pre, post, size in _synapses(syn):
        if pre_set is not None and pre not in pre_set:
            continue
        if post_set is not None and post not in post_set:
            continue
        counts[(pre, post)] += 1
        sizes[(pre, post)] = _add(sizes[(pre, post)], size)
    rows = [(pre, post, n, sizes[(pre, post)]) for (pre, post), n in counts.items() if n >= min_synapses]
    rows.sort(key=lambda r: (-r[2], r[0], r[1]))
    return _frame(rows, EDGE_COLUMNS)


def oracle_adjacency(syn: pd.DataFrame, roots, min_synapses: int = 1) -> pd.DataFrame:
    """Dense roots x roots DataFrame of n_synapses (int64), pre in the index, post in the columns."""
    roots = [int(r) for r in roots]
    if len(set(roots)) != len(roots):
        raise ValueError("roots must be distinct")
    conns = _connections(syn, min_synapses)
    cells = [[conns.get((pre, post), (0, math.nan))[0] for post in roots] for pre in roots]
    return pd.DataFrame(
        np.array(cells, dtype=np.int64).reshape(len(roots), len(roots)),
        index=pd.Index(roots, dtype="int64", name="pre_pt_root_id"),
        columns=pd.Index(roots, dtype="int64", name="post_pt_root_id"),
    )


def _partner_lists(conns, roots: list[int], direction: str) -> dict[int, dict[int, tuple[int, float]]]:
    """root -> {partner: (n_synapses, size_sum)} in the given direction."""
    if direction not in ("input", "output"):
        raise ValueError("direction must be 'input' or 'output'")
    found: dict[int, dict[int, tuple[int, float]]] = {r: {} for r in roots}
    for (pre, post), value in conns.items():
        if direction == "input" and post in found:
            found[post][pre] = value
        if direction == "output" and pre in found:
            found[pre][post] = value
    return found


def oracle_partners(syn: pd.DataFrame, roots, direction: str = "input", min_synapses: int = 1) -> pd.DataFrame:
    """``root_id, partner_root_id, n_synapses, size_sum``: roots in order, then n desc, partner asc."""
    roots = _distinct(roots)
    found = _partner_lists(_connections(syn, min_synapses), roots, direction)
    rows = []
    for root in roots:
        ranked = sorted(found[root].items(), key=lambda item: (-item[1][0], item[0]))
        rows.extend((root, partner, n, size) for partner, (n, size) in ranked)
    return _frame(rows, PARTNER_COLUMNS)


def oracle_common_partners(syn: pd.DataFrame, roots, direction: str = "input", min_synapses: int = 1) -> pd.DataFrame:
    """``partner_root_id, root_id, n_synapses, size_sum`` for the partners of every given root.

    Ordered by the partner's total n_synapses over the roots descending, partner ascending,
    then the roots in the given order.
    """
    roots = _distinct(roots)
    if not roots:
        raise ValueError("common_partners needs at least one root")
    found = _partner_lists(_connections(syn, min_synapses), roots, direction)
    common = set(found[roots[0]])
    for root in roots[1:]:
        common &= set(found[root])
    totals = {p: sum(found[root][p][0] for root in roots) for p in common}
    rows = []
    for partner in sorted(common, key=lambda p: (-totals[p], p)):
        rows.extend((partner, root, *found[root][partner]) for root in roots)
    return _frame(rows, COMMON_COLUMNS)


def oracle_root_types(cell_types: pd.DataFrame, column: str = "cell_type", root_column: str = "pt_root_id") -> tuple[dict[int, object], int]:
    """(root -> type for the typed roots, number of ambiguous roots)."""
    values: dict[int, set] = defaultdict(set)
    for root, value in zip(_ids(cell_types, root_column), cell_types[column].tolist()):
        if root == 0 or _is_null(value):
            continue
        values[root].add(value)
    typed = {root: next(iter(v)) for root, v in values.items() if len(v) == 1}
    return typed, sum(1 for v in values.values() if len(v) > 1)


def oracle_cell_types(
    syn: pd.DataFrame,
    cell_types: pd.DataFrame,
    column: str = "cell_type",
    root_column: str = "pt_root_id",
    min_synapses: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(long aggregate per (pre_type, post_type), neurons per type, number of ambiguous roots)."""
    typed, n_ambiguous = oracle_root_types(cell_types, column, root_column)
    groups: dict[tuple, dict] = {}
    for (pre, post), (n, size) in _connections(syn, min_synapses).items():
        if pre not in typed or post not in typed:
            continue
        group = groups.setdefault((typed[pre], typed[post]), {"n": 0, "size": math.nan, "pairs": 0, "pre": set(), "post": set()})
        group["n"] += n
        group["size"] = _add(group["size"], size)
        group["pairs"] += 1
        group["pre"].add(pre)
        group["post"].add(post)
    per_type = Counter(typed.values())
    rows = [
        (pre_type, post_type, g["n"], g["size"], g["pairs"], len(g["pre"]), len(g["post"]), g["n"] / per_type[pre_type], g["n"] / per_type[post_type])
        for (pre_type, post_type), g in sorted(groups.items(), key=lambda item: item[0])
    ]
    neurons = [(cell_type, per_type[cell_type]) for cell_type in sorted(per_type)]
    return _frame(rows, CELL_TYPE_COLUMNS), _frame(neurons, NEURON_COLUMNS), n_ambiguous


def oracle_cell_type_matrix(
    syn: pd.DataFrame,
    cell_types: pd.DataFrame,
    column: str = "cell_type",
    root_column: str = "pt_root_id",
    min_synapses: int = 1,
) -> pd.DataFrame:
    """The type x type n_synapses matrix over every typed type, with the client's attrs."""
    long, neurons, n_ambiguous = oracle_cell_types(syn, cell_types, column, root_column, min_synapses)
    types = list(neurons["cell_type"])
    counts = {(row.pre_type, row.post_type): row.n_synapses for row in long.itertuples()}
    cells = [[counts.get((a, b), 0) for b in types] for a in types]
    matrix = pd.DataFrame(
        np.array(cells, dtype=np.int64).reshape(len(types), len(types)),
        index=pd.Index(types, dtype=object, name="pre_type"),
        columns=pd.Index(types, dtype=object, name="post_type"),
    )
    matrix.attrs["neurons"] = dict(zip(neurons["cell_type"], neurons["n_neurons"].tolist()))
    matrix.attrs["n_ambiguous"] = n_ambiguous
    return matrix


def oracle_paths(syn: pd.DataFrame, sources, targets, max_hops: int = 3, min_synapses: int = 1) -> pd.DataFrame:
    """Every simple directed path of 1..max_hops connections from a source to a target.

    ``path, n_hops, weights, bottleneck``, ordered by n_hops ascending, bottleneck descending,
    path ascending; not truncated.
    """
    if not 1 <= max_hops <= 5:
        raise ValueError("max_hops must be between 1 and 5")
    conns = _connections(syn, min_synapses)
    out: dict[int, list[int]] = defaultdict(list)
    for pre, post in conns:
        out[pre].append(post)
    target_set = {int(t) for t in targets}
    found = []

    def walk(path: list[int], weights: list[int]) -> None:
        for nxt in out[path[-1]]:
            if nxt in path:
                continue
            new_path, new_weights = path + [nxt], weights + [conns[(path[-1], nxt)][0]]
            if nxt in target_set:
                found.append((new_path, len(new_weights), new_weights, min(new_weights)))
            if len(new_weights) < max_hops:
                walk(new_path, new_weights)

    for source in {int(s) for s in sources}:
        walk([source], [])
    found.sort(key=lambda r: (r[1], -r[3], r[0]))
    return _frame(found, PATH_COLUMNS)


def oracle_diff(
    before: pd.DataFrame,
    after: pd.DataFrame,
    roots,
    min_synapses: int = 1,
    supervoxel_roots: Callable[[np.ndarray], np.ndarray] | None = None,
    successors: Mapping[int, Iterable[int]] | None = None,
) -> pd.DataFrame:
    """Per (root, successor, direction, partner): synapses before and after, following lineage.

    ``before``/``after``: synapse rows alive at *from* / *to* (roots at that moment, ``id``;
    ``before`` also the supervoxel columns). ``supervoxel_roots(svs)`` gives roots at *to*;
    ``successors``: root -> its roots at *to* (default: see the module docstring).
    """
    roots = _distinct(roots)
    root_set = set(roots)
    to_roots = {}
    for syn_id, pre, post in zip(_ids(after, "id"), _ids(after, "pre_pt_root_id"), _ids(after, "post_pt_root_id")):
        to_roots[syn_id] = (pre, post)

    # (pre_from, post_from, pre_to, post_to) of each before row that touches a given root
    touching = []
    no_svs = [None] * len(before)
    pre_svs = _ids(before, "pre_pt_supervoxel_id") if "pre_pt_supervoxel_id" in before.columns else no_svs
    post_svs = _ids(before, "post_pt_supervoxel_id") if "post_pt_supervoxel_id" in before.columns else no_svs
    columns = zip(_ids(before, "id"), _ids(before, "pre_pt_root_id"), _ids(before, "post_pt_root_id"), pre_svs, post_svs)
    for syn_id, pre_f, post_f, pre_sv, post_sv in columns:
        if pre_f in root_set or post_f in root_set:
            touching.append((syn_id, pre_f, post_f, pre_sv, post_sv))
    deleted_svs = []
    for syn_id, _, _, pre_sv, post_sv in touching:
        if syn_id not in to_roots:
            deleted_svs.extend([pre_sv, post_sv])
    sv_root: dict[int, int] = {}
    if deleted_svs:
        if supervoxel_roots is None:
            raise ValueError("synapses deleted between the moments need supervoxel_roots")
        if any(sv is None for sv in deleted_svs):
            raise ValueError("deleted synapses need pre_pt_supervoxel_id and post_pt_supervoxel_id")
        unique_svs = sorted(set(deleted_svs) - {0})  # supervoxel 0 is no segment: root 0
        mapped = supervoxel_roots(np.array(unique_svs, dtype=np.int64)) if unique_svs else []
        for sv, root in zip(unique_svs, list(mapped)):
            sv_root[sv] = int(root)
        sv_root[0] = 0
    rows_before = []
    for syn_id, pre_f, post_f, pre_sv, post_sv in touching:
        pre_t, post_t = to_roots[syn_id] if syn_id in to_roots else (sv_root[pre_sv], sv_root[post_sv])
        rows_before.append((pre_f, post_f, pre_t, post_t))

    if successors is None:
        inferred: dict[int, set] = {r: set() for r in roots}
        for pre_f, post_f, pre_t, post_t in rows_before:
            if pre_f in inferred and pre_t != 0:
                inferred[pre_f].add(pre_t)
            if post_f in inferred and post_t != 0:
                inferred[post_f].add(post_t)
        successors = inferred
    succ = {r: {int(s) for s in successors.get(r, ()) if int(s) != 0} for r in roots}

    n_before: Counter = Counter()
    for pre_f, post_f, pre_t, post_t in rows_before:
        if 0 in (pre_f, post_f, pre_t, post_t):
            continue
        if post_f in root_set:
            n_before[(post_f, post_t, "input", pre_t)] += 1
        if pre_f in root_set:
            n_before[(pre_f, pre_t, "output", post_t)] += 1
    n_after: Counter = Counter()
    for pre_t, post_t in to_roots.values():
        if pre_t == 0 or post_t == 0:
            continue
        for root in roots:
            if post_t in succ[root]:
                n_after[(root, post_t, "input", pre_t)] += 1
            if pre_t in succ[root]:
                n_after[(root, pre_t, "output", post_t)] += 1

    rows = []
    for key in set(n_before) | set(n_after):
        b, a = n_before[key], n_after[key]
        if max(a, b) < min_synapses:
            continue
        status = "gained" if b == 0 else "lost" if a == 0 else "changed" if a != b else "same"
        rows.append((key[0], key[1], key[2], key[3], b, a, a - b, status))
    place = {root: i for i, root in enumerate(roots)}
    rows.sort(key=lambda r: (place[r[0]], r[2] != "input", -abs(r[6]), r[3], r[1]))
    return _frame(rows, DIFF_COLUMNS)
