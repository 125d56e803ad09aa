"""Faults the caller cannot fix answer JSON on a connection that stays usable: unexpected errors
(500), a full or read-only store (507), requests the HTTP parser refuses (400/414)."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from pathlib import Path

import psycopg
import pytest
import requests
import sqlalchemy.exc
from fastapi import FastAPI, Request

from opencave.server.errors import install_error_handlers
from opencave.server.faults import FaultMiddleware
from opencave.storage.faults import StorageFault, storage_fault
from tests.support.app_server import served_app
from tests.support.server import ServerProcess

DS = "opencave_demo"
CREATE_VERSION = f"/materialize/api/v2/materialize/run/create_frozen/datastack/{DS}"


# -- recognising storage faults ----------------------------------------------------------------
def _wrapped(orig: BaseException) -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("INSERT …", {}, orig)


@pytest.mark.parametrize(
    "error,fault",
    [
        (OSError(errno.ENOSPC, "No space left on device"), StorageFault.FULL),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), StorageFault.FULL),
        (OSError(errno.EROFS, "Read-only file system"), StorageFault.READ_ONLY),
        (_wrapped(sqlite3.OperationalError("database or disk is full")), StorageFault.FULL),
        (_wrapped(sqlite3.OperationalError("attempt to write a readonly database")), StorageFault.READ_ONLY),
        (_wrapped(psycopg.errors.DiskFull("could not extend file")), StorageFault.FULL),
        (OSError("IOError: Failed to write: No space left on device"), StorageFault.FULL),  # Arrow/DuckDB text
        (ValueError("bad"), None),
        (OSError(errno.ENOENT, "No such file"), None),
    ],
)
def test_storage_fault_classification(error, fault):
    assert storage_fault(error) is fault


def test_storage_fault_found_behind_a_later_error():
    """A failure while cleaning up after a full disk still counts as a full disk."""
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("could not record the failure")
    except RuntimeError as error:
        assert storage_fault(error) is StorageFault.FULL


# -- the connection survives an unexpected error -----------------------------------------------
@pytest.fixture(scope="module")
def faulty_app_url():
    """A tiny app with the server's error layers, served by uvicorn with the server's protocol."""
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/port")
    def port(request: Request) -> int:
        return request.client.port

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("an unexpected failure")

    @app.get("/full")
    def full() -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    app.add_middleware(FaultMiddleware)
    with served_app(app) as url:
        yield url


def test_unexpected_error_is_json_and_keeps_the_connection(faulty_app_url):
    with requests.Session() as session:
        before = session.get(f"{faulty_app_url}/port").json()
        answer = session.get(f"{faulty_app_url}/boom")
        assert answer.status_code == 500
        assert answer.json()["error"] == "internal_error" and "RuntimeError" in answer.json()["message"]
        assert "close" not in answer.headers.get("connection", "")
        assert session.get(f"{faulty_app_url}/port").json() == before  # same client port: same connection


def test_full_disk_is_507(faulty_app_url):
    answer = requests.get(f"{faulty_app_url}/full")
    assert answer.status_code == 507
    body = answer.json()
    assert body["error"] == "insufficient_storage" and "free space" in body["message"]


def test_overlong_url_is_json_414(faulty_app_url):
    answer = requests.get(f"{faulty_app_url}/port?ids=" + "1," * 60_000)
    assert answer.status_code == 414
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["error"] == "uri_too_long" and "body" in body["message"]


def test_unparsable_request_is_json_400(faulty_app_url):
    host, port = faulty_app_url.removeprefix("http://").split(":")
    import socket

    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"GET /port HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        raw = sock.recv(65536).decode()
    head, _, body = raw.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 400") and "application/json" in head
    assert '"bad_http_request"' in body


def test_real_server_answers_overlong_urls_with_json(server):
    answer = requests.get(f"{server.url}/info/api/v2/datastacks?x=" + "b" * 100_000)
    assert answer.status_code == 414 and answer.json()["code"] == 414


# -- a full data directory ---------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 48 MiB tmpfs (only root can mount one; CI runs as root)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` to the last byte."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as error:
                assert error.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_full_data_directory_answers_507_and_recovers(backend, database_for, small_disk):
    server = ServerProcess(small_disk / "data", database_for(backend)).start()
    try:
        token = server.new_token()
        headers = {"Authorization": f"Bearer {token}"}
        versions_before = requests.get(f"{server.url}/materialize/api/v2/datastack/{DS}/versions", headers=headers).json()
        _fill(small_disk)
        with requests.Session() as session:
            answer = session.post(f"{server.url}{CREATE_VERSION}", json={}, headers=headers)
            assert answer.status_code == 507, answer.text
            assert answer.json()["error"] == "insufficient_storage"
            # nothing half-done: no new version is listed
            listed = session.get(f"{server.url}/materialize/api/v2/datastack/{DS}/versions", headers=headers)
            assert listed.status_code == 200 and listed.json() == versions_before
        for leftover in small_disk.glob("filler*"):
            os.remove(leftover)
        answer = requests.post(f"{server.url}{CREATE_VERSION}", json={}, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "AVAILABLE"
    finally:
        server.stop()
