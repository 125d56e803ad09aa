"""Fixtures for the client tests: an isolated HOME, a fake browser and a mocked CAVE server.

No test touches the network or the real ~/.cloudvolume: HOME points at a temporary directory
and HTTP goes to ``responses`` mocks (or to a throw-away server on 127.0.0.1).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import responses

from opencave.client import session as session_module


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME for every test, so token and cache files are the test's own."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def restore_session_defaults():
    yield
    session_module.set_session_defaults()


@pytest.fixture(autouse=True)
def browser(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """URLs the client tried to open in a web browser."""
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url, *a, **k: opened.append(url) or True)
    return opened


@pytest.fixture
def secrets(home: Path) -> Path:
    return home / ".cloudvolume" / "secrets"


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock
