"""pytest plugin of the run of caveclient's suite: records which ``caveclient`` is imported, and
deselects exactly the node ids listed (one per line) in the file ``$CAVECLIENT_SUITE_DESELECT``
(``--deselect`` would also drop every test whose id merely starts with a listed one), writing
those it found next to it (``<file>.found``) so that a stale entry is noticed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

LIST = Path(os.environ["CAVECLIENT_SUITE_DESELECT"])
DESELECTED = set(LIST.read_text().split())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    dropped = [item for item in items if item.nodeid in DESELECTED]
    LIST.with_name(LIST.name + ".found").write_text("".join(f"{item.nodeid}\n" for item in dropped))
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item.nodeid not in DESELECTED]


def pytest_configure(config: pytest.Config) -> None:
    """Record which ``caveclient`` the run imports (``<file>.module``), so the caller can check
    that it is opencave's."""
    import caveclient

    LIST.with_name(LIST.name + ".module").write_text(caveclient.__file__)
