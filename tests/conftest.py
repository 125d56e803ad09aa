"""Shared fixtures: every storage-touching test runs on SQLite and on a real PostgreSQL server.

Before anything is imported or built, HOME (and the XDG, cloud-volume and cloud-files
directories) points at a temporary directory for the whole session: clients built by module-
or session-scoped fixtures write their token files and datastack caches there, never in the
user's home. The user's own files are fingerprinted first and checked when the session ends.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.support.home import HOME_ENV_VARS, fingerprint

# Under pytest-xdist the workers inherit the controller's environment, whose HOME is already
# the controller's temporary one: the user's home is passed on by name, so each worker checks it.
REAL_HOME_ENV = "PYTEST_OPENCAVE_REAL_HOME"
REAL_HOME = os.environ.setdefault(REAL_HOME_ENV, os.path.expanduser("~"))
REAL_HOME_FILES = fingerprint(REAL_HOME)
SESSION_HOME = tempfile.mkdtemp(prefix="opencave-tests-home-")
for _name in HOME_ENV_VARS:
    os.environ.pop(_name, None)
os.environ["HOME"] = SESSION_HOME
for _name, _sub in (("XDG_CONFIG_HOME", ".config"), ("XDG_CACHE_HOME", ".cache"), ("XDG_DATA_HOME", ".local/share")):
    os.environ[_name] = os.path.join(SESSION_HOME, _sub)

import importlib  # noqa: E402 - after HOME is isolated: cloud-volume reads it at import

import pytest  # noqa: E402

from tests.clients import IMPLEMENTATIONS  # noqa: E402
from tests.support.demo import WORLD_CACHE_ENV  # noqa: E402
from tests.support.postgres import create_database, postgres_server  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402

BACKENDS = ["sqlite", "postgresql"]


def pytest_unconfigure(config):
    """Every process (the xdist controller too, which runs no fixture) removes its own HOME."""
    shutil.rmtree(SESSION_HOME, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def real_home_untouched():
    """Fails the session (an error in the last teardown) if the user's home changed."""
    yield
    changed = fingerprint(REAL_HOME).diff(REAL_HOME_FILES)
    assert not changed, f"the tests changed files in the real home {REAL_HOME}: {changed}"


@pytest.fixture(scope="session", autouse=True)
def shared_world_cache(tmp_path_factory):
    """Servers started by the tests share one built demo world (it is deterministic). The
    directory is the session's own, and under pytest-xdist each worker's basetemp is its own,
    so two workers never build into the same directory at once."""
    os.environ[WORLD_CACHE_ENV] = str(tmp_path_factory.mktemp("worlds"))
    yield
    os.environ.pop(WORLD_CACHE_ENV, None)


@pytest.fixture(scope="session")
def postgres_admin_url():
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def database_for(postgres_admin_url):
    """``database_for(backend)`` → a database URL for a fresh store (None: SQLite in the data dir)."""

    def make(backend: str) -> str | None:
        return None if backend == "sqlite" else create_database(postgres_admin_url)

    return make


@pytest.fixture(scope="session")
def start_server(tmp_path_factory, database_for) -> Callable[..., ServerProcess]:
    """``start_server(backend, *extra_args)`` → a started server on a fresh store; the caller stops it."""

    def start(backend: str, *extra_args: str) -> ServerProcess:
        root = tmp_path_factory.mktemp(f"server-{backend}")
        return ServerProcess(root / "data", database_for(backend), extra_args=extra_args).start()

    return start


@pytest.fixture(scope="module")
def server_factory(start_server):
    """Start extra servers: ``server_factory(backend, *extra_args)``; they stop when the module
    ends, so a worker holds at most one module's extra servers at a time."""
    started: list[ServerProcess] = []

    def start(backend: str, *extra_args: str) -> ServerProcess:
        server = start_server(backend, *extra_args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@dataclass
class SharedServers:
    """The one shared server (and admin token) of each storage engine, started when first asked
    for and kept until the session ends.

    Kept here rather than in the ``server`` fixture's cache: pytest sets ``server`` up again
    whenever the ``backend`` parameter changes, which under pytest-xdist's ``loadscope`` is
    twice per module (a worker runs a module's tests on SQLite, then on PostgreSQL)."""

    start: Callable[..., ServerProcess]
    servers: dict[str, ServerProcess] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def server(self, backend: str) -> ServerProcess:
        if backend not in self.servers:
            self.servers[backend] = self.start(backend)
        return self.servers[backend]

    def token(self, backend: str) -> str:
        if backend not in self.tokens:
            self.tokens[backend] = self.server(backend).new_token()
        return self.tokens[backend]

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


@pytest.fixture(scope="session")
def shared_servers(start_server):
    shared = SharedServers(start_server)
    yield shared
    shared.stop()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def server(backend, shared_servers) -> ServerProcess:
    """One shared server per storage engine, with the demo datastack."""
    return shared_servers.server(backend)


@pytest.fixture(scope="session")
def admin_token(backend, shared_servers) -> str:
    return shared_servers.token(backend)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Token files and the datastack cache live under ~/.cloudvolume: give every test its own home."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request):
    """The ``CAVEclient`` class of the genuine caveclient 8.2.1, then of opencave."""
    module = importlib.import_module(request.param)
    if request.param == "caveclient":
        assert module.__version__ == "8.2.1"
    return module.CAVEclient
