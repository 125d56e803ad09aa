"""Independent expectations for materialization tests.

Every expected answer here is computed from first principles, without the materialization
engine: rows from the annotation service (``GET …/annotations`` with their ``created`` and
``deleted`` times), supervoxels read from the watershed volume at each position, and roots from
the chunkedgraph's ``get_roots(supervoxels, timestamp=T)``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import numpy as np
import pandas as pd
import requests

DS = "opencave_demo"
AXES = ("x", "y", "z")
# The synapse schema as the frozen (merged) table answers it: points bound to the segmentation
# first, then the scalar ``size``, then every position split.
SYNAPSE_POINTS = ("pre_pt", "post_pt")
SYNAPSE_POSITIONS = ("pre_pt_position", "post_pt_position", "ctr_pt_position")
SYNAPSE_COLUMNS = [
    "id",
    "valid",
    "pre_pt_supervoxel_id",
    "pre_pt_root_id",
    "post_pt_supervoxel_id",
    "post_pt_root_id",
    "size",
    *(f"{p}_{a}" for p in SYNAPSE_POSITIONS for a in AXES),
]


def caveclient_for(server, token: str):
    """The genuine caveclient on ``server``. caveclient 8.2.1 caches version and table metadata
    per datastack name in class-level caches shared by every client (whatever its server), so
    they are cleared first: each test server has its own "opencave_demo"."""
    import caveclient.materializationengine as engine
    from caveclient import CAVEclient

    for value in vars(engine.MaterializationClient).values():
        cache = getattr(value, "cache", None)
        if cache is not None:
            cache.clear()
    return CAVEclient(DS, server_address=server.url, auth_token=token)


def utc(value: dt.datetime | str) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def round_half_away(values: np.ndarray) -> np.ndarray:
    """Positions are answered as integers rounded half away from zero (DuckDB/SQL ``round``)."""
    values = np.asarray(values, dtype=np.float64)
    return (np.sign(values) * np.floor(np.abs(values) + 0.5)).astype(np.int64)


def annotation_rows(client, table: str, chunk: int = 1000) -> pd.DataFrame:
    """Every row ever written to ``table`` (deleted and superseded ones too), through the
    annotation service, with ``created``/``deleted`` as UTC datetimes."""
    count = client.annotation.get_annotation_count(table)
    rows: list[dict] = []
    for start in range(1, count + 1, chunk):
        rows += client.annotation.get_annotation(table, list(range(start, min(start + chunk, count + 1))))
    frame = pd.DataFrame(rows)
    assert len(frame) == count and frame["id"].tolist() == list(range(1, count + 1)), "ids must be 1..count"
    frame["created"] = pd.to_datetime([utc(v) for v in frame["created"]], utc=True)
    frame["deleted"] = pd.to_datetime([None if v is None or v != v else utc(v) for v in frame["deleted"]], utc=True)
    return frame


def alive_at(rows: pd.DataFrame, moment: dt.datetime) -> pd.DataFrame:
    """Rows created by ``moment`` and not deleted by then (created <= T < deleted)."""
    moment = pd.Timestamp(utc(moment))
    alive = (rows["created"] <= moment) & (rows["deleted"].isna() | (rows["deleted"] > moment))
    return rows[alive.to_numpy()]


def synapses_at(client, world, rows: pd.DataFrame, moment: dt.datetime, roots_moment: dt.datetime | None = None) -> pd.DataFrame:
    """The synapse table as a fresh materialization at ``moment`` must hold it, split positions,
    sorted by id: supervoxels from the watershed volume, roots from the chunkedgraph at T
    (or at ``roots_moment``)."""
    alive = alive_at(rows, moment).sort_values("id")
    out = pd.DataFrame({"id": alive["id"].to_numpy(np.int64), "valid": np.ones(len(alive), dtype=bool)})
    positions = {p: np.array(alive[p].tolist(), dtype=np.float64).reshape(-1, 3) for p in SYNAPSE_POSITIONS}
    for point in SYNAPSE_POINTS:
        svs = world.volume.supervoxels_at(positions[f"{point}_position"]).astype(np.int64)
        out[f"{point}_supervoxel_id"] = svs
        out[f"{point}_root_id"] = roots_at(client, svs, roots_moment or moment)
    out["size"] = alive["size"].to_numpy(np.float64)
    for p in SYNAPSE_POSITIONS:
        for axis, name in enumerate(AXES):
            out[f"{p}_{name}"] = round_half_away(positions[p][:, axis])
    return out[SYNAPSE_COLUMNS].reset_index(drop=True)


def roots_at(client, supervoxels: Iterable[int], moment: dt.datetime) -> np.ndarray:
    svs = np.asarray(list(supervoxels), dtype=np.int64)
    out = np.zeros(svs.size, dtype=np.int64)
    known = svs > 0
    if known.any():
        unique, inverse = np.unique(svs[known], return_inverse=True)
        roots = np.asarray(client.chunkedgraph.get_roots(unique.astype(np.uint64), timestamp=utc(moment)), dtype=np.int64)
        out[known] = roots[inverse]
    return out


def canonical(frame: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """A frame for exact comparison: chosen columns, sorted by id, plain numpy dtypes."""
    frame = frame if columns is None else frame[columns]
    if "id" in frame.columns:
        frame = frame.sort_values("id", kind="stable")
    frame = frame.reset_index(drop=True).copy()
    for name in frame.columns:
        column = frame[name]
        if name == "valid" or column.dtype == bool or str(column.dtype) == "boolean":
            frame[name] = column.astype(bool)
        elif name == "size" or column.dtype.kind == "f" or str(column.dtype).startswith("Float"):
            frame[name] = column.astype(np.float64)
        elif column.dtype.kind in "iu" or str(column.dtype).startswith(("Int", "UInt")):
            frame[name] = column.astype(np.int64)
    return frame


def assert_same_rows(actual: pd.DataFrame, expected: pd.DataFrame, what: str = "") -> None:
    columns = list(expected.columns)
    assert list(actual.columns) == columns, (what, list(actual.columns), columns)
    a, e = canonical(actual, columns), canonical(expected, columns)
    if "id" in columns and (len(a) != len(e) or a["id"].tolist() != e["id"].tolist()):
        missing = sorted(set(e["id"]) - set(a["id"]))[:10]
        extra = sorted(set(a["id"]) - set(e["id"]))[:10]
        raise AssertionError(f"{what}: {len(a)} rows, expected {len(e)}; missing ids {missing}, unexpected ids {extra}")
    pd.testing.assert_frame_equal(a, e, check_dtype=True, obj=what or "rows")


def create_version(server, token: str, timestamp: dt.datetime | None = None) -> dict:
    """Materialize a version through the admin endpoint (at ``timestamp``, default now)."""
    body = {} if timestamp is None else {"timestamp": utc(timestamp).isoformat()}
    r = requests.post(
        f"{server.url}/materialize/api/v2/materialize/run/create_frozen/datastack/{DS}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    return r.json()
