"""JSON encoding of the numpy/pandas values CAVE request and response bodies carry.

CAVE bodies are built from numpy arrays of uint64 ids, pandas columns and datetimes, which the
standard ``json`` module rejects. The encoder turns them into plain JSON values the way
caveclient's ``BaseEncoder`` does, so bodies are byte-for-byte what CAVE servers already
parse. Unlike that encoder it also accepts numpy floats and booleans (``float32``, ``bool_``)
instead of raising ``TypeError``.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import numpy as np


class CaveJSONEncoder(json.JSONEncoder):
    """``json.JSONEncoder`` for numpy arrays and scalars, pandas Series/Index/arrays, sets
    and datetimes.

    Integers keep their exact value (``tolist()``/``item()`` give Python ints, so uint64 ids
    above 2**63 are not rounded through float); datetimes and dates become ``isoformat()``.
    """

    def default(self, obj: Any) -> Any:
        if isinstance(obj, np.datetime64):
            return np.datetime_as_string(obj)
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray) or _is_pandas_array(obj):
            return obj.tolist()
        if isinstance(obj, (set, frozenset)):
            return list(obj)
        if isinstance(obj, (datetime.datetime, datetime.date)):
            return obj.isoformat()
        return super().default(obj)


def _is_pandas_array(obj: Any) -> bool:
    # Checked by module rather than by import, so the encoder does not need pandas loaded.
    return type(obj).__module__.startswith("pandas") and callable(getattr(obj, "tolist", None))


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` with ``CaveJSONEncoder`` (default separators, as caveclient sends)."""
    return json.dumps(obj, cls=CaveJSONEncoder, **kwargs)
