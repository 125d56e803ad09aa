"""Small numpy building blocks of the in-memory graph index."""

from __future__ import annotations

import numpy as np


class Growable:
    """An append-only 1-D array with amortised growth.

    Readers keep the ``view()`` they took: appends write past its end (or into a new buffer),
    so a reader's view never changes under it.
    """

    def __init__(self, dtype: np.dtype | type, values: np.ndarray | None = None) -> None:
        values = np.zeros(0, dtype=dtype) if values is None else np.asarray(values, dtype=dtype)
        self._buffer = np.empty(max(16, int(values.size * 1.25)), dtype=dtype)
        self._buffer[: values.size] = values
        self.size = values.size

    def append(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=self._buffer.dtype).ravel()
        needed = self.size + values.size
        if needed > self._buffer.size:
            grown = np.empty(max(needed, 2 * self._buffer.size), dtype=self._buffer.dtype)
            grown[: self.size] = self._buffer[: self.size]
            self._buffer = grown
        self._buffer[self.size : needed] = values
        self.size = needed

    def view(self) -> np.ndarray:
        return self._buffer[: self.size]

    @property
    def capacity_nbytes(self) -> int:
        """Bytes allocated, growth room included."""
        return self._buffer.nbytes

    def set(self, index: np.ndarray, values: np.ndarray | int) -> None:
        """In-place update of existing entries (only for values readers compare by time)."""
        self._buffer[index] = values


def gather_ranges(ptr: np.ndarray, flat: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated ``flat[ptr[r]:ptr[r+1]]`` for each row, and the row each value came from."""
    starts = ptr[rows]
    sizes = ptr[rows + 1] - starts
    total = int(sizes.sum())
    if total == 0:
        return flat[:0], np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(sizes)[:-1])), sizes)
    return flat[offsets + np.arange(total)], np.repeat(np.arange(rows.size), sizes)


def lookup_sorted(sorted_keys: np.ndarray, values: np.ndarray, queries: np.ndarray, missing: int = -1) -> np.ndarray:
    """``values`` at the position of each query in ``sorted_keys``; ``missing`` where absent."""
    out = np.full(queries.size, missing, dtype=values.dtype)
    if sorted_keys.size == 0 or queries.size == 0:
        return out
    pos = np.searchsorted(sorted_keys, queries)
    pos_clipped = np.minimum(pos, sorted_keys.size - 1)
    found = sorted_keys[pos_clipped] == queries
    out[found] = values[pos_clipped[found]]
    return out


def insert_sorted(sorted_keys: np.ndarray, values: np.ndarray, new_keys: np.ndarray, new_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New arrays with (new_keys, new_values) merged into the sorted pair, order kept."""
    order = np.argsort(new_keys, kind="stable")
    new_keys, new_values = new_keys[order], new_values[order]
    pos = np.searchsorted(sorted_keys, new_keys, side="right")
    return np.insert(sorted_keys, pos, new_keys), np.insert(values, pos, new_values)
