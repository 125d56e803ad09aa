"""Connections between roots: the edge list, the adjacency matrix, partners and common partners."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse as sp

from opencave.connectivity.frames import (
    POST,
    PRE,
    answer_attrs,
    as_roots,
    check_direction,
    check_min_synapses,
    check_synapses,
    connections,
    distinct,
)


def edges(
    synapses: pd.DataFrame,
    pre_roots=None,
    post_roots=None,
    min_synapses: int = 1,
) -> pd.DataFrame:
    """One row per connected ordered root pair: ``pre_pt_root_id, post_pt_root_id, n_synapses, size_sum``.

    Only synapses with pre in ``pre_roots`` / post in ``post_roots`` (when given) count; rows
    with root 0 are ignored; pairs with fewer than ``min_synapses`` synapses are dropped.
    ``size_sum`` sums the non-null sizes (NaN without a ``size`` column). Ordered by n_synapses
    descending, then pre, then post.
    """
    check_synapses(synapses)
    min_synapses = check_min_synapses(min_synapses)
    pre = None if pre_roots is None else as_roots(pre_roots, "pre_roots")
    post = None if post_roots is None else as_roots(post_roots, "post_roots")
    conns = connections(synapses, min_synapses, pre, post)
    order = np.lexsort((conns[POST].to_numpy(), conns[PRE].to_numpy(), -conns["n_synapses"].to_numpy()))
    result = conns.take(order).reset_index(drop=True)
    result.attrs = answer_attrs(synapses, min_synapses)
    return result


def adjacency(
    synapses: pd.DataFrame,
    roots,
    min_synapses: int = 1,
    sparse: bool = False,
) -> pd.DataFrame | sp.csr_array:
    """n_synapses from each root (rows, presynaptic) to each root (columns, postsynaptic).

    ``roots`` must be distinct; their order is kept. A cell is 0 below ``min_synapses``.
    Dense: an int64 DataFrame (index ``pre_pt_root_id``, columns ``post_pt_root_id``); sparse: a
    ``scipy.sparse.csr_array`` of the same cells.
    """
    check_synapses(synapses)
    min_synapses = check_min_synapses(min_synapses)
    roots = as_roots(roots)
    if len(distinct(roots)) != len(roots):
        repeated = pd.Series(roots)[pd.Series(roots).duplicated()].unique().tolist()
        raise ValueError(f"roots must be distinct; repeated: {repeated[:10]}")
    conns = connections(synapses, min_synapses, roots, roots)
    index = pd.Index(roots)
    rows = index.get_indexer(conns[PRE].to_numpy())
    cols = index.get_indexer(conns[POST].to_numpy())
    counts = conns["n_synapses"].to_numpy()
    n = len(roots)
    if sparse:
        matrix = sp.csr_array((counts, (rows, cols)), shape=(n, n), dtype=np.int64)
        matrix.sort_indices()
        return matrix
    cells = np.zeros((n, n), dtype=np.int64)
    cells[rows, cols] = counts
    result = pd.DataFrame(
        cells,
        index=pd.Index(roots, dtype="int64", name=PRE),
        columns=pd.Index(roots, dtype="int64", name=POST),
    )
    result.attrs = answer_attrs(synapses, min_synapses)
    return result


def _sides(direction: str) -> tuple[str, str]:
    """(column of the given root, column of its partner) for a direction."""
    return (POST, PRE) if direction == "input" else (PRE, POST)


def _partner_rows(synapses: pd.DataFrame, roots: np.ndarray, direction: str, min_synapses: int) -> pd.DataFrame:
    """``root_id, partner_root_id, n_synapses, size_sum`` of the given roots, unordered."""
    root_side, partner_side = _sides(direction)
    conns = connections(
        synapses,
        min_synapses,
        pre_roots=roots if root_side == PRE else None,
        post_roots=roots if root_side == POST else None,
    )
    return pd.DataFrame(
        {
            "root_id": conns[root_side].to_numpy(),
            "partner_root_id": conns[partner_side].to_numpy(),
            "n_synapses": conns["n_synapses"].to_numpy(),
            "size_sum": conns["size_sum"].to_numpy(),
        }
    )


def partners(
    synapses: pd.DataFrame,
    roots,
    direction: str = "input",
    min_synapses: int = 1,
) -> pd.DataFrame:
    """The input (p -> root) or output (root -> p) partners of each root, ranked.

    ``root_id, partner_root_id, n_synapses, size_sum``: roots in the given order (a repeated root
    counts once), then n_synapses descending, then partner ascending. Roots without partners
    give no rows.
    """
    check_synapses(synapses)
    direction = check_direction(direction)
    min_synapses = check_min_synapses(min_synapses)
    roots = distinct(as_roots(roots))
    rows = _partner_rows(synapses, roots, direction, min_synapses)
    place = pd.Index(roots).get_indexer(rows["root_id"].to_numpy())
    order = np.lexsort((rows["partner_root_id"].to_numpy(), -rows["n_synapses"].to_numpy(), place))
    result = rows.take(order).reset_index(drop=True)
    result.attrs = answer_attrs(synapses, min_synapses)
    return result


def common_partners(
    synapses: pd.DataFrame,
    roots,
    direction: str = "input",
    min_synapses: int = 1,
) -> pd.DataFrame:
    """Partners (in ``direction``, after the threshold) shared by every given root.

    ``partner_root_id, root_id, n_synapses, size_sum``: one row per (common partner, root),
    ordered by the partner's total n_synapses over the roots descending, partner ascending,
    then the roots in the given order.
    """
    check_synapses(synapses)
    direction = check_direction(direction)
    min_synapses = check_min_synapses(min_synapses)
    roots = distinct(as_roots(roots))
    if len(roots) == 0:
        raise ValueError("common_partners needs at least one root")
    rows = _partner_rows(synapses, roots, direction, min_synapses)
    by_partner = rows.groupby("partner_root_id", sort=False)["n_synapses"]
    shared = by_partner.transform("size").to_numpy() == len(roots)
    rows = rows[shared]
    total = by_partner.transform("sum").to_numpy()[shared]
    place = pd.Index(roots).get_indexer(rows["root_id"].to_numpy())
    order = np.lexsort((place, rows["partner_root_id"].to_numpy(), -total))
    result = rows.take(order)[["partner_root_id", "root_id", "n_synapses", "size_sum"]].reset_index(drop=True)
    result.attrs = answer_attrs(synapses, min_synapses)
    return result
