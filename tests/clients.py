"""The two client implementations every compatibility test drives."""

from __future__ import annotations

import importlib

import pytest

IMPLEMENTATIONS = ["caveclient", "opencave"]


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request):
    """The ``CAVEclient`` class of the genuine caveclient 8.2.1, then of opencave."""
    module = importlib.import_module(request.param)
    if request.param == "caveclient":
        assert module.__version__ == "8.2.1"
    return module.CAVEclient


def flavour(cls) -> str:
    return cls.__module__.split(".")[0]
