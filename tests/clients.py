"""Helpers for tests that drive both client implementations (the ``impl`` fixture is in conftest)."""

from __future__ import annotations

IMPLEMENTATIONS = ["caveclient", "opencave"]


def flavour(cls) -> str:
    """``"caveclient"`` or ``"opencave"``: which library a ``CAVEclient`` class comes from."""
    return cls.__module__.split(".")[0]
