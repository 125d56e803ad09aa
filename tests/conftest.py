"""Shared fixtures: every storage-touching test runs on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import importlib
import os

import pytest

from tests.clients import IMPLEMENTATIONS
from tests.support.demo import WORLD_CACHE_ENV
from tests.support.postgres import create_database, postgres_server
from tests.support.server import ServerProcess

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session", autouse=True)
def shared_world_cache(tmp_path_factory):
    """Servers started by the tests share one built demo world (it is deterministic)."""
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
def server_factory(tmp_path_factory, database_for):
    """Start extra servers: ``server_factory(backend, *extra_args)``; all stop at session end."""
    started: list[ServerProcess] = []

    def start(backend: str, *extra_args: str) -> ServerProcess:
        root = tmp_path_factory.mktemp(f"server-{backend}")
        server = ServerProcess(root / "data", database_for(backend), extra_args=extra_args).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def server(backend, server_factory) -> ServerProcess:
    """One shared server per storage engine, with the demo datastack."""
    return server_factory(backend)


@pytest.fixture(scope="session")
def admin_token(server) -> str:
    return server.new_token()


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
