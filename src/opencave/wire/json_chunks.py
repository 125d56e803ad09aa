"""Compact JSON text of answers holding big numpy arrays, made a slice at a time.

Turning a whole array into Python values (``tolist``) and one string costs about 80 bytes per
id, so an answer of 5 million ids would need ~400 MB to encode. Here each array is encoded
``CHUNK_VALUES`` values at a time by the ``json`` module itself (exact for uint64, floats
including NaN/Infinity, and booleans), and the text comes out in pieces of about a megabyte,
so encoding needs a few MB whatever the answer's size. The text is what
``json.dumps(value, separators=(",", ":")) + "\\n"`` gives for the same values made plain.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

CHUNK_VALUES = 65_536
"""Values of an array or list turned into Python objects at once (a few MB at most)."""

FLUSH_CHARS = 1 << 20
"""Text gathered before a piece is handed out, so small values do not each become a piece."""

_dumps = json.JSONEncoder(separators=(",", ":")).encode


def json_chunks(value: Any, int64_as_str: bool = False) -> Iterator[bytes]:
    """The compact JSON text of ``value``, newline-terminated, as pieces of about ``FLUSH_CHARS``.

    numpy integers become JSON integers, or strings with ``int64_as_str`` (as PyChunkedGraph's
    ``int64_as_str`` answers: arrays keep their shape); dict keys become strings. An answer that
    fits in one piece comes out as exactly one piece.
    """
    buffer: list[str] = []
    size = 0
    for piece in _pieces(value, int64_as_str):
        buffer.append(piece)
        size += len(piece)
        if size >= FLUSH_CHARS:
            yield "".join(buffer).encode()
            buffer.clear()
            size = 0
    buffer.append("\n")
    yield "".join(buffer).encode()


def _pieces(value: Any, as_str: bool) -> Iterator[str]:
    if isinstance(value, np.ndarray):
        yield from _array(value, as_str)
    elif isinstance(value, dict):
        yield "{"
        for i, (key, item) in enumerate(value.items()):
            yield ("," if i else "") + _dumps(str(key)) + ":"
            yield from _pieces(item, as_str)
        yield "}"
    elif isinstance(value, (list, tuple)):
        yield "["
        if all(not isinstance(item, _CONTAINERS) for item in value):
            for start in range(0, len(value), CHUNK_VALUES):
                chunk = [_scalar(item, as_str) for item in value[start : start + CHUNK_VALUES]]
                yield ("," if start else "") + _dumps(chunk)[1:-1]
        else:
            for i, item in enumerate(value):
                if i:
                    yield ","
                yield from _pieces(item, as_str)
        yield "]"
    else:
        yield _dumps(_scalar(value, as_str))


_CONTAINERS = (np.ndarray, dict, list, tuple)


def _array(array: np.ndarray, as_str: bool) -> Iterator[str]:
    as_str = as_str and array.dtype.kind in "ui"
    if array.ndim == 0:
        yield _dumps(str(array.item()) if as_str else array.item())
        return
    row = int(np.prod(array.shape[1:]))
    step = max(1, CHUNK_VALUES // max(row, 1))
    yield "["
    for start in range(0, len(array), step):
        chunk = array[start : start + step]
        yield ("," if start else "") + _dumps(chunk.astype(str).tolist() if as_str else chunk.tolist())[1:-1]
    yield "]"


def _scalar(value: Any, as_str: bool) -> Any:
    """A JSON-ready scalar: numpy ids as ints (or strings with ``int64_as_str``)."""
    if isinstance(value, np.integer):
        return str(int(value)) if as_str else int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
