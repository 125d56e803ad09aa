"""Reading the caller's DataFrames: synapse rows or connection rows, root lists, thresholds.

Every operation starts here: ``connections`` reduces synapse rows (or re-groups connection rows,
as ``edges`` returns them) to one row per ordered root pair at or above ``min_synapses``, with
roots 0 dropped. Grouping is Arrow's hash aggregate (``pyarrow.Table.group_by``): on 10 M rows
about 0.5 s, where a two-column pandas ``groupby`` takes several seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

PRE, POST = "pre_pt_root_id", "post_pt_root_id"
CONNECTION_COLUMNS = [PRE, POST, "n_synapses", "size_sum"]

# Keys of a query answer's attrs (opencave's and caveclient's query_table) naming its moment.
_MOMENT_ATTRS = {
    "datastack": ("datastack", "datastack_name"),
    "synapse_table": ("synapse_table", "table_name"),
    "version": ("version", "materialization_version"),
    "timestamp": ("timestamp",),
}


def check_min_synapses(min_synapses: Any) -> int:
    if isinstance(min_synapses, bool) or not isinstance(min_synapses, (int, np.integer)) or min_synapses < 1:
        raise ValueError(f"min_synapses must be an integer >= 1, got {min_synapses!r}")
    return int(min_synapses)


def check_direction(direction: Any) -> str:
    if direction not in ("input", "output"):
        raise ValueError(f"direction must be 'input' or 'output', got {direction!r}")
    return direction


def as_roots(roots: Any, name: str = "roots") -> np.ndarray:
    """Root ids as an int64 array (a single id is a list of one)."""
    if roots is None or isinstance(roots, (str, bytes, Mapping)):
        raise ValueError(f"{name} must be a list of root ids, got {type(roots).__name__}")
    values = np.atleast_1d(np.asarray(list(roots) if isinstance(roots, (set, frozenset)) else roots))
    if values.ndim != 1:
        raise ValueError(f"{name} must be a flat list of root ids")
    if values.dtype.kind in "iu" or values.size == 0:
        return values.astype(np.int64)
    if values.dtype == object and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return np.array(values.tolist(), dtype=np.int64)
    raise ValueError(f"{name} must be integer root ids, got {values.dtype} values")


def distinct(roots: np.ndarray) -> np.ndarray:
    """The roots without repeats, each at its first place."""
    return pd.unique(roots)


def require_columns(frame: Any, columns: Iterable[str], what: str, hint: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{what} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks the column(s) {', '.join(missing)}: {hint}")


def root_array(column: pd.Series) -> np.ndarray:
    """A root or supervoxel column as int64, nulls as 0 (no segment)."""
    if column.dtype.kind in "iu":
        return column.to_numpy().astype(np.int64, copy=False)
    try:
        return column.astype("Int64").to_numpy(dtype=np.int64, na_value=0)
    except (TypeError, ValueError):
        raise ValueError(f"column {column.name} must hold integer ids, got {column.dtype}") from None


def is_connections(frame: pd.DataFrame) -> bool:
    return "n_synapses" in frame.columns


def check_synapses(synapses: Any) -> None:
    require_columns(
        synapses,
        (PRE, POST),
        "synapses",
        "pass a synapse table's rows (e.g. from query_table) or connection rows as edges() returns them",
    )


def _grouped(pre: np.ndarray, post: np.ndarray, counts: np.ndarray | None, sizes: np.ndarray | None) -> pd.DataFrame:
    """One row per (pre, post): n_synapses (row count, or sum of ``counts``) and SQL-style size sum."""
    columns = {PRE: pre, POST: post}
    aggregates: list[tuple] = [([], "count_all") if counts is None else ("n", "sum")]
    if counts is not None:
        columns["n"] = counts
    if sizes is not None:
        columns["size"] = pa.array(sizes, type=pa.float64(), from_pandas=True)  # NaN -> null: skipped
        aggregates.append(("size", "sum", pc.ScalarAggregateOptions(skip_nulls=True, min_count=1)))
    grouped = pa.table(columns).group_by([PRE, POST], use_threads=False).aggregate(aggregates)
    n = grouped.column("count_all" if counts is None else "n_sum").to_numpy()
    return pd.DataFrame(
        {
            PRE: grouped.column(PRE).to_numpy(),
            POST: grouped.column(POST).to_numpy(),
            "n_synapses": n.astype(np.int64),
            "size_sum": grouped.column("size_sum").to_numpy(zero_copy_only=False) if sizes is not None else np.full(len(n), np.nan),
        }
    )


def _float_column(frame: pd.DataFrame, name: str) -> np.ndarray | None:
    if name not in frame.columns:
        return None
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def connections(
    synapses: pd.DataFrame,
    min_synapses: int = 1,
    pre_roots: np.ndarray | None = None,
    post_roots: np.ndarray | None = None,
) -> pd.DataFrame:
    """Connections ``pre_pt_root_id, post_pt_root_id, n_synapses, size_sum`` (unordered).

    Only rows with pre in ``pre_roots`` and post in ``post_roots`` (when given) count; rows with a
    0 root are dropped; pairs below ``min_synapses`` are dropped.
    """
    check_synapses(synapses)
    min_synapses = check_min_synapses(min_synapses)
    pre, post = root_array(synapses[PRE]), root_array(synapses[POST])
    keep = (pre != 0) & (post != 0)
    if pre_roots is not None:
        keep &= pd.Series(pre).isin(pre_roots).to_numpy()
    if post_roots is not None:
        keep &= pd.Series(post).isin(post_roots).to_numpy()
    rows = slice(None) if keep.all() else keep
    sizes = _float_column(synapses, "size_sum" if is_connections(synapses) else "size")
    counts = root_array(synapses["n_synapses"])[rows] if is_connections(synapses) else None
    grouped = _grouped(pre[rows], post[rows], counts, None if sizes is None else sizes[rows])
    return grouped[grouped["n_synapses"].to_numpy() >= min_synapses].reset_index(drop=True)


def answer_attrs(source: pd.DataFrame, min_synapses: int, truncated: bool = False) -> dict[str, Any]:
    """attrs of an answer: the input's moment (when its attrs name one), threshold, truncation.

    An answer computed from a truncated query is itself truncated.
    """
    attrs: dict[str, Any] = {}
    for key, names in _MOMENT_ATTRS.items():
        for name in names:
            if source.attrs.get(name) is not None:
                attrs[key] = source.attrs[name]
                break
    attrs["min_synapses"] = min_synapses
    attrs["truncated"] = bool(truncated or source.attrs.get("truncated", False))
    return attrs
