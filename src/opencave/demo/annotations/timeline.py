"""When things happen in the demo: the proofreading history's times, working hours, version times.

All times are float POSIX seconds (UTC). People (proofreaders, curators) act in working hours,
Monday to Friday 09:00-18:00 UTC, like the world's history; pipelines run at any hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from opencave.demo.world.spec import WorldSpec

DAY = 86400.0
HOUR = 3600.0
WORK_START = 9 * HOUR
WORK_END = 18 * HOUR
_THURSDAY = 3  # 1970-01-01 was a Thursday: weekday (Monday = 0) of day 0


def posix(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@dataclass(frozen=True)
class History:
    """The world's proofreading history as times and the neurons each operation touched."""

    epoch: float
    op_times: np.ndarray  # (n_ops,) float seconds, increasing
    last_edit: np.ndarray  # (n_neurons,) last operation touching each cell (NaN: never edited)

    @property
    def end(self) -> float:
        """The last edit, or a week after the epoch for a world without history."""
        return float(self.op_times[-1]) if len(self.op_times) else self.epoch + 7 * DAY


def read_history(world: WorldSpec) -> History:
    """Times of the history's operations and, per cell, the time of the last one that touched it.

    An operation touches the cells of the supervoxels it names; undo and redo touch the cells of
    their target, since they change the same objects.
    """
    graph = world.graph
    touched: list[np.ndarray] = []
    times = []
    last = np.full(world.n_neurons, np.nan)
    for op in world.history:
        kind = op["kind"]
        if kind in ("undo", "redo"):
            neurons = touched[int(op["target"])]
        else:
            points: list[list[Any]] = (
                op["points"] if kind == "merge" else [*op["sources"], *op["sinks"]]
            )
            index = graph.sv_index([int(p[0]) for p in points])
            neurons = np.unique(graph.sv_neuron[index[index >= 0]])
            neurons = neurons[neurons > 0]
        touched.append(neurons)
        t = posix(op["timestamp"])
        times.append(t)
        last[neurons - 1] = t
    return History(posix(world.epoch), np.array(times, dtype=np.float64), last)


def workday_times(rng: np.random.Generator, start: float, end: float, n: int) -> np.ndarray:
    """``n`` random moments within working hours in [start, end], to the millisecond.

    Falls back to the whole interval when it holds no working hours.
    """
    if end <= start:
        end = start + 1.0
    days = np.arange(np.floor(start / DAY) * DAY, end + DAY, DAY)
    weekday = (days // DAY + _THURSDAY) % 7
    lo = np.clip(days + WORK_START, start, end)
    hi = np.clip(days + WORK_END, start, end)
    keep = (weekday < 5) & (hi > lo)
    if not keep.any():
        return np.round(rng.uniform(start, end, size=n), 3)
    lo, hi = lo[keep], hi[keep]
    cumulative = np.cumsum(hi - lo)
    u = rng.uniform(0, cumulative[-1], size=n)
    day = np.minimum(np.searchsorted(cumulative, u, side="right"), len(lo) - 1)
    t = hi[day] - (cumulative[day] - u)
    return np.clip(np.round(t, 3), start, end)


def distinct_time(t: float, stamps: list[np.ndarray]) -> float:
    """``t`` moved forward by whole seconds until no timestamp in ``stamps`` is within 1 ms.

    Version times must not coincide with any row or edit time: "as of T" would be ambiguous.
    """
    while any(np.any(np.abs(s - t) < 1e-3) for s in stamps):
        t += 1.0
    return t
