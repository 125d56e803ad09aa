"""Client-side live queries: answering "as of time T" from the newest materialized version
before T plus chunkedgraph lookups (caveclient's ``live_query`` algorithm).

1. root-id filters are mapped from T back to the version's time (``map_filters``), because the
   frozen version only knows the roots of its own time;
2. the version is queried with the mapped filters;
3. the root ids of the rows are brought forward to T (``update_root_ids``);
4. the original filters are applied again (``post_filter``), which drops rows of past objects
   that are no longer part of the requested ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from .query_frames import convert_timestamp

RootFilter = Mapping[str, Any] | None


def _is_collection(value: Any) -> bool:
    return isinstance(value, (Iterable, np.ndarray)) and not isinstance(value, (str, bytes))


def _filter_root_ids(filters: Sequence[RootFilter]) -> np.ndarray | None:
    """Every value given to a ``*root_id`` column in the filters, unique; None if there is none.

    The ids are gathered as int64: caveclient concatenates them as given, so a numpy uint64
    array in one filter and a Python int in another become float64 and lose their low bits
    (the past-id lookup then misses the real roots and the query fails with a KeyError).
    """
    chunks = [
        np.atleast_1d(np.asarray(list(value) if _is_collection(value) else [value], dtype=np.int64))
        for filter_dict in filters
        if filter_dict is not None
        for column, value in filter_dict.items()
        if column.endswith("root_id")
    ]
    if not chunks:
        return None
    return np.unique(np.concatenate(chunks))


def map_filters(
    cg_client: Any, filters: Sequence[RootFilter], timestamp: Any, timestamp_past: Any
) -> tuple[list[RootFilter], dict[int, Any]]:
    """Translate root-id filter values from ``timestamp`` to ``timestamp_past``.

    Each id must be a root at ``timestamp`` and created before it (else ValueError naming the
    expired and too recent ids). Each is replaced by the roots at ``timestamp_past`` that
    shared supervoxels with it (a scalar becomes a list). Returns the new filters and the
    chunkedgraph's ``future_id_map`` (past root → its root at ``timestamp``).
    """
    timestamp = convert_timestamp(timestamp)
    timestamp_past = convert_timestamp(timestamp_past)
    root_ids = _filter_root_ids(filters)
    if root_ids is None:
        return list(filters), {}

    is_latest = np.asarray(cg_client.is_latest_roots(root_ids, timestamp=timestamp), dtype=bool)
    created_before = np.asarray(cg_client.get_root_timestamps(root_ids) < timestamp, dtype=bool)
    if not np.all(is_latest & created_before):
        expired = root_ids[~is_latest]
        too_recent = root_ids[~created_before]
        expired_text = f"{expired} are expired, " if len(expired) else ""
        recent_text = f"{too_recent} are too recent, " if len(too_recent) else ""
        raise ValueError(
            f"Timestamp incompatible with IDs: {expired_text}{recent_text} use chunkedgraph client to find valid ID(s)"
        )

    id_mapping = cg_client.get_past_ids(root_ids, timestamp_past=timestamp_past, timestamp_future=timestamp)
    past_map = id_mapping["past_id_map"]

    def past_ids(root_id: Any) -> list[Any]:
        try:
            return list(past_map[int(root_id)])
        except KeyError:
            raise ValueError(f"The chunkedgraph did not report the past ids of root {root_id}") from None

    new_filters: list[RootFilter] = []
    for filter_dict in filters:
        if filter_dict is None:
            new_filters.append(None)
            continue
        mapped: dict[str, Any] = {}
        for column, value in filter_dict.items():
            if not column.endswith("root_id"):
                mapped[column] = value
            elif _is_collection(value):
                mapped[column] = np.concatenate([past_ids(v) for v in value]) if len(value) else np.array([])
            else:
                mapped[column] = past_ids(value)
        new_filters.append(mapped)
    return new_filters, id_mapping.get("future_id_map") or {}


def move_root_equalities(
    filter_in_dict: dict[str, Any] | None, filter_equal_dict: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Move mapped ``*root_id`` equality filters into the "in" filters (one root may have had
    several past roots); an equality filter left empty becomes None."""
    if filter_equal_dict is None:
        return filter_in_dict, None
    equal = dict(filter_equal_dict)
    for column in [c for c in equal if c.endswith("root_id")]:
        filter_in_dict = {} if filter_in_dict is None else dict(filter_in_dict)
        filter_in_dict[column] = equal.pop(column)
    return filter_in_dict, (equal or None)


def update_root_ids(
    cg_client: Any, df: pd.DataFrame, timestamp: datetime, future_map: Mapping[Any, Any]
) -> pd.DataFrame:
    """Bring every ``<p>_root_id`` column paired with a ``<p>_supervoxel_id`` column to
    ``timestamp``.

    Roots known to continue unchanged (``future_map``) are replaced first; then the roots that
    are not latest at ``timestamp`` are looked up again from their supervoxels, in one
    ``get_roots`` call. Root 0 (no segment) stays 0. Unlike caveclient, no request is made
    when nothing needs looking up, and supervoxel columns whose root column was not selected
    are skipped instead of raising KeyError.
    """
    pairs = [
        (column, column[: -len("supervoxel_id")] + "root_id")
        for column in df.columns
        if isinstance(column, str) and column.endswith("supervoxel_id")
    ]
    pairs = [(sv_column, root_column) for sv_column, root_column in pairs if root_column in df.columns]
    if future_map:
        df = df.copy()
        for _, root_column in pairs:
            df[root_column] = df[root_column].replace(dict(future_map))
    if not pairs:
        return df

    roots = np.unique(np.concatenate([df[root_column].to_numpy() for _, root_column in pairs]))
    roots = roots[roots != 0]
    latest = np.array([0], dtype=roots.dtype)
    if len(roots):
        is_latest = np.asarray(cg_client.is_latest_roots(roots, timestamp=timestamp), dtype=bool)
        latest = np.concatenate([latest, roots[is_latest]])

    stale_masks = [~np.isin(df[root_column].to_numpy(), latest) for _, root_column in pairs]
    stale_svids = [df[sv_column].to_numpy()[mask] for (sv_column, _), mask in zip(pairs, stale_masks)]
    total = sum(len(s) for s in stale_svids)
    if total == 0:
        return df
    new_roots = np.asarray(cg_client.get_roots(np.concatenate(stale_svids), timestamp=timestamp))
    start = 0
    for (_, root_column), mask, svids in zip(pairs, stale_masks, stale_svids):
        values = df[root_column].to_numpy().copy()
        values[mask] = new_roots[start : start + len(svids)]
        start += len(svids)
        df[root_column] = values
    return df


def post_filter(df: pd.DataFrame, filters: Mapping[str, Mapping[str, Any] | None]) -> pd.DataFrame:
    """Apply flat filters (keyed by query kwarg: ``filter_in_dict`` ...) to a DataFrame.

    Spatial and regex filters are not re-applied (the server already applied them and they
    do not depend on root ids).
    """
    tests = {
        "filter_in_dict": lambda column, value: column.isin(value),
        "filter_out_dict": lambda column, value: ~column.isin(value),
        "filter_equal_dict": lambda column, value: column == value,
        "filter_greater_dict": lambda column, value: column > value,
        "filter_less_dict": lambda column, value: column < value,
        "filter_greater_equal_dict": lambda column, value: column >= value,
        "filter_less_equal_dict": lambda column, value: column <= value,
    }
    for kind, test in tests.items():
        for column, value in (filters.get(kind) or {}).items():
            df = df[test(df[column], value)]
    return df
