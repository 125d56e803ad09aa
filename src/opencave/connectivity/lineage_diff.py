"""What changed in given roots' partners between two moments, following lineage.

Synapse ids are the stable keys: a synapse alive at both moments takes its roots at *to* from
the *after* rows; one deleted in between takes, on each side, the root at *to* of that side's
supervoxel (``supervoxel_roots``), so an old root's synapses land on its successors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from opencave.connectivity.frames import (
    POST,
    PRE,
    answer_attrs,
    as_roots,
    check_min_synapses,
    distinct,
    is_connections,
    require_columns,
    root_array,
)

KEYS = ["root_id", "root_id_after", "direction", "partner_root_id"]
SUPERVOXELS = ("pre_pt_supervoxel_id", "post_pt_supervoxel_id")
DIRECTIONS = np.array(["input", "output"], dtype=object)


def _check_synapse_rows(frame, name: str, moment: str) -> None:
    if isinstance(frame, pd.DataFrame) and is_connections(frame):
        raise ValueError(f"{name} holds connection rows (n_synapses); diff needs synapse rows with their ids")
    require_columns(frame, ("id", PRE, POST), name, f"pass the synapse table's rows alive at the {moment} moment with their ids")


def _to_roots_of_deleted(
    before: pd.DataFrame, rows: np.ndarray, supervoxel_roots: Callable[[np.ndarray], np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Roots at *to* of the (pre, post) supervoxels of the given before rows."""
    if supervoxel_roots is None:
        raise ValueError(
            f"{len(rows)} synapse(s) of the given roots were deleted between the moments: pass "
            "supervoxel_roots, a function giving roots at the later moment of supervoxel ids "
            "(e.g. lambda svs: client.chunkedgraph.get_roots(svs, timestamp=to))"
        )
    require_columns(before, SUPERVOXELS, "before", "synapses deleted between the moments are followed through their supervoxels")
    pre_sv = root_array(before[SUPERVOXELS[0]]).take(rows)
    post_sv = root_array(before[SUPERVOXELS[1]]).take(rows)
    svs = np.unique(np.concatenate([pre_sv, post_sv]))
    svs = svs[svs != 0]  # supervoxel 0 is no segment: root 0
    mapped = np.zeros(0, dtype=np.int64)
    if svs.size:
        mapped = np.asarray(supervoxel_roots(svs)).astype(np.int64).ravel()
        if mapped.shape != svs.shape:
            raise ValueError(f"supervoxel_roots returned {mapped.size} roots for {svs.size} supervoxels")
    lookup = pd.Index(svs)

    def roots_of(sv: np.ndarray) -> np.ndarray:
        found = lookup.get_indexer(sv)
        return np.where(found >= 0, mapped[np.maximum(found, 0)] if mapped.size else 0, 0)

    return roots_of(pre_sv), roots_of(post_sv)


def _successor_pairs(successors: Mapping | None, roots: np.ndarray, inferred: pd.DataFrame) -> pd.DataFrame:
    """``root_id, root_id_after``: each given root with each of its successors at *to*."""
    if successors is None:
        return inferred.drop_duplicates()
    if not isinstance(successors, Mapping):
        raise ValueError("successors must be a dict: root at the earlier moment -> its roots at the later moment")
    pairs = []
    for root in roots.tolist():
        after: Iterable = successors.get(root, ())
        for successor in as_roots(after, f"successors[{root}]").tolist():
            if successor != 0:
                pairs.append((root, successor))
    return pd.DataFrame(pairs, columns=["root_id", "root_id_after"], dtype=np.int64).drop_duplicates()


def _count(frames: list[pd.DataFrame], name: str) -> pd.DataFrame:
    rows = pd.concat(frames, ignore_index=True)
    return rows.groupby(KEYS, sort=False).size().rename(name).reset_index()


def diff(
    before: pd.DataFrame,
    after: pd.DataFrame,
    roots,
    min_synapses: int = 1,
    supervoxel_roots: Callable[[np.ndarray], np.ndarray] | None = None,
    successors: Mapping[int, Iterable[int]] | None = None,
) -> pd.DataFrame:
    """Per given root r, successor s, direction and partner p: synapses before and after.

    ``before``/``after``: synapse rows alive at *from*/*to* (``id``, roots at that moment;
    ``before`` also the supervoxel columns for synapses deleted in between). ``roots`` are roots
    at *from*. n_before counts r's synapses at *from* whose r-side lies in s at *to* and whose
    other side lies in p at *to*; n_after counts synapses at *to* between s and p. Successors of
    r default to the roots at *to* of r's side of its *before* synapses. Rows with
    max(n_before, n_after) >= min_synapses; columns ``root_id, root_id_after, direction,
    partner_root_id, n_before, n_after, change, status``; ordered by root (given order),
    direction (input first), |change| descending, partner, then root_id_after.
    """
    _check_synapse_rows(before, "before", "earlier")
    _check_synapse_rows(after, "after", "later")
    min_synapses = check_min_synapses(min_synapses)
    roots = distinct(as_roots(roots))

    pre_all, post_all = root_array(before[PRE]), root_array(before[POST])
    in_pre_all = pd.Series(pre_all).isin(roots).to_numpy()
    in_post_all = pd.Series(post_all).isin(roots).to_numpy()
    touching = np.flatnonzero(in_pre_all | in_post_all)
    pre_f, post_f = pre_all[touching], post_all[touching]
    in_pre, in_post = in_pre_all[touching], in_post_all[touching]

    after_ids = pd.Index(root_array(after["id"]))
    if not after_ids.is_unique:
        raise ValueError("after has repeated synapse ids; pass each synapse once")
    after_pre, after_post = root_array(after[PRE]), root_array(after[POST])
    position = after_ids.get_indexer(root_array(before["id"]).take(touching))
    alive = position >= 0
    pre_t = np.where(alive, after_pre.take(np.maximum(position, 0)) if len(after_pre) else 0, 0)
    post_t = np.where(alive, after_post.take(np.maximum(position, 0)) if len(after_post) else 0, 0)
    if not alive.all():
        deleted = np.flatnonzero(~alive)
        pre_t[deleted], post_t[deleted] = _to_roots_of_deleted(before, touching[deleted], supervoxel_roots)

    inferred = pd.concat(
        [
            pd.DataFrame({"root_id": post_f[in_post & (post_t != 0)], "root_id_after": post_t[in_post & (post_t != 0)]}),
            pd.DataFrame({"root_id": pre_f[in_pre & (pre_t != 0)], "root_id_after": pre_t[in_pre & (pre_t != 0)]}),
        ],
        ignore_index=True,
    )
    pairs = _successor_pairs(successors, roots, inferred)

    counted = (pre_f != 0) & (post_f != 0) & (pre_t != 0) & (post_t != 0)
    inputs, outputs = counted & in_post, counted & in_pre
    before_counts = _count(
        [
            pd.DataFrame({"root_id": post_f[inputs], "root_id_after": post_t[inputs], "direction": 0, "partner_root_id": pre_t[inputs]}),
            pd.DataFrame({"root_id": pre_f[outputs], "root_id_after": pre_t[outputs], "direction": 1, "partner_root_id": post_t[outputs]}),
        ],
        "n_before",
    )
    # after counts per (successor, direction, partner) first, then per given root: a successor
    # shared by many roots (a big merge) is counted once, not once per root
    successor_ids = pairs["root_id_after"].unique()
    live = (after_pre != 0) & (after_post != 0)
    received = live & pd.Series(after_post).isin(successor_ids).to_numpy()
    sent = live & pd.Series(after_pre).isin(successor_ids).to_numpy()
    per_successor = pd.concat(
        [
            pd.DataFrame({"root_id_after": after_post[received], "direction": 0, "partner_root_id": after_pre[received]}),
            pd.DataFrame({"root_id_after": after_pre[sent], "direction": 1, "partner_root_id": after_post[sent]}),
        ],
        ignore_index=True,
    )
    per_successor = per_successor.groupby(KEYS[1:], sort=False).size().rename("n_after").reset_index()
    after_counts = pairs.merge(per_successor, on="root_id_after")[[*KEYS, "n_after"]]

    both = before_counts.merge(after_counts, on=KEYS, how="outer")
    n_before = both["n_before"].fillna(0).to_numpy(dtype=np.int64)
    n_after = both["n_after"].fillna(0).to_numpy(dtype=np.int64)
    keep = np.maximum(n_before, n_after) >= min_synapses
    both, n_before, n_after = both[keep], n_before[keep], n_after[keep]
    change = n_after - n_before
    direction = both["direction"].to_numpy(dtype=np.int64)
    partner = both["partner_root_id"].to_numpy(dtype=np.int64)
    successor = both["root_id_after"].to_numpy(dtype=np.int64)
    root = both["root_id"].to_numpy(dtype=np.int64)
    order = np.lexsort((successor, partner, -np.abs(change), direction, pd.Index(roots).get_indexer(root)))
    status = np.select([n_before == 0, n_after == 0, change != 0], ["gained", "lost", "changed"], "same").astype(object)
    result = pd.DataFrame(
        {
            "root_id": root[order],
            "root_id_after": successor[order],
            "direction": DIRECTIONS[direction[order]],
            "partner_root_id": partner[order],
            "n_before": n_before[order],
            "n_after": n_after[order],
            "change": change[order],
            "status": status[order],
        }
    )
    result.attrs = answer_attrs(after, min_synapses)
    return result
