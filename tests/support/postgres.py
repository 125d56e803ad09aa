"""A throwaway PostgreSQL server for the tests.

``OPENCAVE_TEST_POSTGRES_URL`` (a URL of a role that may create databases) is used when set;
otherwise a private cluster is created with the machine's ``initdb`` in a temporary directory,
started on a free loopback port and removed afterwards. Running as root, the cluster runs as the
``postgres`` system user, because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from contextlib import contextmanager
from collections.abc import Iterator

import psycopg


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise RuntimeError(
            f"PostgreSQL's {name} was not found: install PostgreSQL (Debian: apt-get install postgresql) "
            "or set OPENCAVE_TEST_POSTGRES_URL"
        )
    return candidates[-1]


# Under pytest-xdist each worker hands out ports from its own block below the kernel's ephemeral
# range (32768 and up): a port is chosen well before its server binds it, and the kernel could
# give the same free port to two workers in that time; a worker never reuses one it gave out.
WORKER_PORT_BLOCK = 1500
_worker_ports: Iterator[int] | None = None


def _worker_index() -> int | None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", … in a pytest-xdist worker
    return int(worker[2:]) % 8 if worker.startswith("gw") and worker[2:].isdigit() else None


def _can_bind(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port nothing listens on (nor will another test worker hand out)."""
    global _worker_ports
    index = _worker_index()
    if index is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
    if _worker_ports is None:
        first = 20000 + index * WORKER_PORT_BLOCK
        _worker_ports = itertools.cycle(range(first, first + WORKER_PORT_BLOCK))
    for _ in range(WORKER_PORT_BLOCK):
        port = next(_worker_ports)
        if _can_bind(port):
            return port
    raise RuntimeError(f"no free port in this worker's block from {20000 + index * WORKER_PORT_BLOCK}")


def _as_postgres_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield an admin URL of a running PostgreSQL server."""
    configured = os.environ.get("OPENCAVE_TEST_POSTGRES_URL")
    if configured:
        yield configured
        return
    root = tempfile.mkdtemp(prefix="opencave-pg-")
    data = os.path.join(root, "data")
    os.chmod(root, 0o777)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    subprocess.run(
        _as_postgres_user([_pg_bin("initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
        check=True,
        capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} -c fsync=off -c max_connections=300"
    subprocess.run(
        _as_postgres_user([_pg_bin("pg_ctl"), "-D", data, "-o", options, "-l", os.path.join(root, "log"), "-w", "start"]),
        check=True,
        capture_output=True,
    )
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        yield url
    finally:
        subprocess.run(_as_postgres_user([_pg_bin("pg_ctl"), "-D", data, "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def create_database(admin_url: str) -> str:
    """A new empty database on the server; returns its URL."""
    name = "opencave_test_" + uuid.uuid4().hex[:12]
    deadline = time.time() + 30
    while True:
        try:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            break
        except psycopg.OperationalError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"
