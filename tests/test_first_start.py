"""The first start and the command line as an operator meets them: an interrupted first start
still tells how to log in, administration commands never build the demo, a busy port and an
unwritable or full data directory each give one line saying what to fix."""

from __future__ import annotations

import contextlib
import errno
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from opencave import cli
from tests.support.postgres import free_port
from tests.support.server import ServerProcess, admin_password

OPENCAVE = [sys.executable, "-m", "opencave"]


def _storage(data_dir: Path, database: str | None) -> list[str]:
    return ["--data-dir", str(data_dir)] + (["--database", database] if database else [])


def _run(*args: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    if args[0] == "serve" and "--port" not in args:
        args = (*args, "--port", str(free_port()))
    return subprocess.run([*OPENCAVE, *args], capture_output=True, text=True, input=input, timeout=timeout)


def _web_login(server: ServerProcess, email: str, password: str) -> bool:
    """Log in on the server's login page as a person would; True if it let them in."""
    from tests.test_auth_service import _browser_login

    session = requests.Session()
    try:
        _browser_login(session, server, email, password)
    except AssertionError:
        return False
    return session.get(server.url + "/auth/api/v1/user/cache", timeout=30).status_code == 200


# A child inherits an ignored SIGINT, and Python then never turns Ctrl-C into KeyboardInterrupt;
# a test worker process may have SIGINT ignored (set by a library, below Python's view), so the
# server is started as an operator's terminal would start it: SIGINT at its default.
WITH_CTRL_C = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, '-m', 'opencave', *sys.argv[1:]])",
]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_ctrl_c_during_the_first_start_keeps_the_login(backend, tmp_path, database_for):
    data_dir, database = tmp_path / "data", database_for(backend)
    command = [*WITH_CTRL_C, "serve", "--port", str(free_port()), "--log-level", "warning", *_storage(data_dir, database)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    try:
        for line in process.stdout:
            seen.append(line)
            if line.startswith("opencave: "):  # the demo is being built: the operator presses Ctrl-C
                process.send_signal(signal.SIGINT)
                break
        # read on while it stops (a full pipe would block it); a busy machine may take a while
        reader = threading.Thread(target=lambda: seen.append(process.stdout.read()), daemon=True)
        reader.start()
        try:
            process.wait(180)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            reader.join(10)
            raise AssertionError(f"opencave serve still ran 180 s after Ctrl-C:\n{''.join(seen)}") from None
        reader.join(10)
    finally:
        process.kill()
    output = "".join(seen)
    assert process.returncode == 130, output
    assert "opencave is serving" not in output and "password" not in output, output

    server = ServerProcess(data_dir, database).start()
    try:
        password = admin_password(server.banner)  # shown by the first start that completes
        location = "--database URL" if database else f"--data-dir {data_dir}"
        assert f"opencave user set-password admin@localhost {location}" in server.banner, server.banner
        assert _web_login(server, "admin@localhost", password)
    finally:
        server.stop()
    again = ServerProcess(data_dir, database).start()
    again.stop()
    assert "password:" not in again.banner and "set-password" not in again.banner, again.banner  # someone logged in


def test_every_banner_names_set_password_until_someone_logs_in(tmp_path):
    data_dir = tmp_path / "data"
    first = ServerProcess(data_dir, None).start()
    first.stop()
    password = admin_password(first.banner)
    second = ServerProcess(data_dir, None).start()
    try:
        assert password not in second.banner and "password:" not in second.banner  # shown once
        assert "set-password admin@localhost" in second.banner, second.banner
        changed = second.cli("user", "set-password", "admin@localhost", "--password-stdin", input="a-new-password\n")
        assert "password set" in changed.stdout
        assert not _web_login(second, "admin@localhost", password)
        assert _web_login(second, "admin@localhost", "a-new-password")
    finally:
        second.stop()
    third = ServerProcess(data_dir, None).start()
    third.stop()
    assert "set-password" not in third.banner, third.banner


def test_set_password_never_takes_it_from_the_command_line(tmp_path):
    storage = _storage(tmp_path / "data", None)
    refused = _run("user", "set-password", "admin@localhost", "--password", "visible-in-ps", *storage)
    assert refused.returncode == 2 and "unrecognized arguments: visible-in-ps" in refused.stderr
    short = _run("user", "set-password", "admin@localhost", "--password-stdin", *storage, input="short\n")
    assert short.returncode == 2 and "at least 8 characters" in short.stderr
    empty = _run("user", "set-password", "admin@localhost", *storage, input="")
    assert empty.returncode != 0 and "no password given" in empty.stderr


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_admin_commands_never_build_the_demo(backend, tmp_path, database_for):
    data_dir, database = tmp_path / "data", database_for(backend)
    listed = _run("user", "list", *_storage(data_dir, database), timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "admin@localhost" in listed.stdout
    assert "admin login: admin@localhost password:" in listed.stderr  # the new store's password, once
    assert "building" not in listed.stderr and "ingesting" not in listed.stderr, listed.stderr
    assert not (data_dir / "worlds").exists()
    stacks = _run("datastack", "list", *_storage(data_dir, database))
    assert stacks.returncode == 0 and stacks.stdout.strip() == "(none)", stacks.stdout
    assert "password" not in stacks.stderr


def test_a_busy_port_gives_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run("serve", "--port", str(port), "--data-dir", str(tmp_path / "data"), timeout=60)
    assert result.returncode == 2
    assert result.stdout == "", result.stdout  # no "serving" banner
    assert result.stderr.splitlines() == [
        f"opencave: port {port} on 127.0.0.1 is already in use (another opencave serve?); stop it or choose another --port"
    ]
    assert not (tmp_path / "data").exists(), "nothing is set up before the port is known to be free"


# -- unwritable data directories ----------------------------------------------------------------
@contextlib.contextmanager
def _tmpfs(where: Path, options: str):
    """A tmpfs mounted at ``where`` (we run as root in CI); None where mounting is not allowed."""
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True).returncode == 0
    try:
        yield where if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(where)], check=True)


def _fill(directory: Path) -> None:
    with contextlib.suppress(OSError), open(directory / "filler", "wb") as f:
        while True:
            f.write(bytes(1 << 16))
            f.flush()


READ_ONLY = "opencave: cannot write to the data directory {} (Read-only file system); choose a writable --data-dir"
FULL = "opencave: no space left for the data directory {} (No space left on device); free some space or choose another --data-dir"


@pytest.mark.parametrize("command", [["serve"], ["user", "list"]])
def test_a_read_only_data_directory_gives_one_line(command, tmp_path, monkeypatch, capsys):
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as mount:
        if mount is not None:
            for data_dir in (mount, mount / "data"):  # an existing directory, one to be created
                result = _run(*command, "--data-dir", str(data_dir), timeout=60)
                assert result.returncode == 2 and result.stdout == ""
                assert result.stderr.splitlines() == [READ_ONLY.format(data_dir)], result.stderr
            return
    _simulate(monkeypatch, errno.EROFS)  # no mounting here: the same failure, in this process
    assert cli.main([*command, "--data-dir", str(tmp_path / "data"), *_port(command)]) == 2
    assert capsys.readouterr().err.splitlines() == [READ_ONLY.format(tmp_path / "data")]


@pytest.mark.parametrize("command", [["serve"], ["user", "list"]])
def test_a_full_data_directory_gives_one_line(command, tmp_path, monkeypatch, capsys):
    with _tmpfs(tmp_path / "full", "size=512k") as mount:
        if mount is not None:
            (mount / "data").mkdir()
            _fill(mount)
            result = _run(*command, "--data-dir", str(mount / "data"), timeout=60)
            assert result.returncode == 2 and result.stdout == ""
            assert result.stderr.splitlines() == [FULL.format(mount / "data")], result.stderr
            return
    _simulate(monkeypatch, errno.ENOSPC)
    assert cli.main([*command, "--data-dir", str(tmp_path / "data"), *_port(command)]) == 2
    assert capsys.readouterr().err.splitlines() == [FULL.format(tmp_path / "data")]


def _port(command: list[str]) -> list[str]:
    return ["--port", str(free_port())] if command[0] == "serve" else []


def _simulate(monkeypatch, code: int) -> None:
    import os

    import opencave.runtime

    def refuse(directory: Path) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(opencave.runtime, "check_writable", refuse)
