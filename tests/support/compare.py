"""Comparing what the genuine caveclient 8.2.1 and opencave's client return for the same call.

``same`` is a deep equality that also requires equal types (DataFrames through
``pandas.testing.assert_frame_equal``). ``same_frames`` compares two query answers including
``df.attrs``, after removing the documented intentional differences (docs/client.md):

* opencave adds ``attrs["warnings"]`` and ``attrs["truncated"]`` only when the server sent a
  ``Warning`` header;
* in join attributes opencave records each table's real suffix, where caveclient zips the
  keys of a suffix dict (quirk 23 of the spec) or falls back to ``["_x", "_y"]``.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd


def same(a: Any, b: Any, path: str = "result") -> None:
    """Deep equality that also requires equal types and dtypes."""
    if isinstance(a, pd.DataFrame):
        assert isinstance(b, pd.DataFrame), (path, type(b))
        pd.testing.assert_frame_equal(a, b)
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, (path, type(b), getattr(b, "dtype", None), a.dtype)
        assert a.shape == b.shape and np.array_equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(map(str, a)) == set(map(str, b)), (path, set(a) ^ set(b) if isinstance(b, dict) else b)
        assert [type(k) for k in a] == [type(k) for k in b], path
        for key in a:
            same(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), (path, a, b)
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), path
    elif isinstance(a, BaseException):
        assert type(a) is type(b), (path, a, b)
        assert " ".join(str(a).split()) == " ".join(str(b).split()), (path, str(a), str(b))
    else:
        assert type(a) is type(b) and a == b, (path, a, b)


def normalised_attrs(attrs: Mapping[str, Any], real_suffixes: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``attrs`` without the documented intentional differences. With ``real_suffixes``
    (``{table: suffix}``) the recorded join suffixes are checked against them first."""
    attrs = copy.deepcopy(dict(attrs))
    if "warnings" in attrs:  # opencave: only when the server sent warnings
        assert attrs["warnings"] and isinstance(attrs["warnings"], list), attrs["warnings"]
        assert isinstance(attrs.pop("truncated"), bool)
        attrs.pop("warnings")
    for table, table_attrs in (attrs.get("tables") or {}).items():
        suffix = table_attrs.pop("suffix", None)
        if real_suffixes is not None:
            assert suffix == real_suffixes[table], (table, suffix, real_suffixes)
    return attrs


def same_frames(
    genuine: pd.DataFrame,
    ours: pd.DataFrame,
    *,
    real_suffixes: Mapping[str, str] | None = None,
    server_warned: bool = False,
) -> None:
    """Equal frames (columns, dtypes, values, index) and equal ``attrs`` up to the documented
    differences. ``server_warned``: the server sent a ``Warning`` header, so opencave must have
    ``attrs["warnings"]``; otherwise it must not."""
    assert isinstance(genuine, pd.DataFrame) and isinstance(ours, pd.DataFrame), (type(genuine), type(ours))
    pd.testing.assert_frame_equal(genuine, ours)
    assert "warnings" not in genuine.attrs and "truncated" not in genuine.attrs
    assert ("warnings" in ours.attrs) is server_warned, ours.attrs.get("warnings")
    if genuine.attrs.get("join_query"):
        assert set(genuine.attrs["tables"]) == set(ours.attrs["tables"])
    same(normalised_attrs(genuine.attrs), normalised_attrs(ours.attrs, real_suffixes), "attrs")


def outcome(call: Callable[[Any], Any], client: Any) -> Any:
    """The call's result, or the exception it raised."""
    try:
        return call(client)
    except Exception as error:  # noqa: BLE001 - compared with the other client's
        return error


def both(
    pair,
    call: Callable[[Any], Any],
    *,
    error: type[BaseException] | tuple[type[BaseException], ...] | None = None,
    status: int | None = None,
    **frame_options: Any,
) -> Any:
    """Run ``call(client)`` with the genuine client and with opencave's; the results must be
    the same. Returns the genuine result.

    A call must succeed with both clients unless it is declared an error case: ``error`` is the
    exception type the genuine client must raise (opencave's must raise the same type with the
    same message up to whitespace) and ``status`` the HTTP status of its response, if any.
    An HTTP error is never a 5xx: two identical server failures are not agreement.
    """
    genuine, ours = (outcome(call, client) for client in pair)
    if error is None:
        if isinstance(genuine, BaseException):
            raise AssertionError(f"the genuine client failed: {type(genuine).__name__}: {genuine}") from genuine
        if isinstance(ours, BaseException):
            raise AssertionError(f"opencave's client failed where the genuine one succeeded: {ours!r}") from ours
    else:
        if not isinstance(genuine, error):
            raise AssertionError(f"expected {error} from the genuine client, got {genuine!r}") from (
                genuine if isinstance(genuine, BaseException) else None
            )
        response = getattr(genuine, "response", None)
        if response is not None:
            assert response.status_code < 500, f"the server failed: {response.status_code} {response.text[:500]}"
            assert status is None or response.status_code == status, (response.status_code, status, response.text[:500])
        else:
            assert status is None, f"{status} expected, but {genuine!r} carries no HTTP response"
    if isinstance(genuine, pd.DataFrame):
        same_frames(genuine, ours, **frame_options)
    else:
        same(genuine, ours)
    return genuine


def utc(value: dt.datetime | str) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)
