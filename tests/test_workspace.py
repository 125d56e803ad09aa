"""Work folders of imports on a data directory several hosts share: a folder is removed only
when its owner has stopped — seen directly on this host, by an owner file left unrefreshed for
``STALE_AFTER`` on another — and a live owner keeps its folders' owner files fresh."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opencave.services.materialize.versions import STALE_AFTER, worker_name
from opencave.services.transfer import workspace
from opencave.services.transfer.workspace import NEW, OWNER, abandoned, new_folder, remove_abandoned

STALE_S = STALE_AFTER.total_seconds()


@pytest.fixture
def root(tmp_path) -> Path:
    """The work root (the data directory's imports folder)."""
    folder = tmp_path / "imports"
    folder.mkdir()
    return folder


def _dead_pid() -> int:
    """The PID of a process that has ended (a child run to completion)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(child.stdout)


def _owned(root: Path, name: str, owner: str, age_s: float = 0.0) -> Path:
    """A work folder as another process made it: its owner file refreshed ``age_s`` ago."""
    folder = root / name
    (folder / "staged").mkdir(parents=True)
    (folder / OWNER).write_text(owner + "\n")
    then = time.time() - age_s
    os.utime(folder / OWNER, (then, then))
    return folder


def test_owners_on_other_hosts_are_judged_by_their_heartbeat(root):
    other_host = f"not-{socket.gethostname()}"
    pid = _dead_pid()  # no such process here: irrelevant for a folder of another host
    live_elsewhere = _owned(root, f"{pid}-table-live", f"{other_host}:{pid}:abcd-123:0123456789ab")
    stale_elsewhere = _owned(root, f"{pid}-table-stale", f"{other_host}:{pid}:abcd-123:ba9876543210", age_s=STALE_S + 60)
    host, _, start, _ = worker_name().split(":")
    dead_here = _owned(root, f"{pid}-table-dead", f"{host}:{pid}:{start}:00000000000a")
    reused_pid = _owned(root, f"{os.getpid()}-table-reused", f"{host}:{os.getpid()}:{start}0:00000000000b")  # this PID, another start
    mine = _owned(root, f"{os.getpid()}-table-mine", worker_name(), age_s=STALE_S + 60)  # this process: alive however old
    older_release = root / f"{pid}-version-old"  # no owner file: judged by its PID, as before
    older_release.mkdir()
    parent = root / f"{os.getppid()}-version-parent"
    parent.mkdir()
    unrelated = root / "uploads"
    unrelated.mkdir()

    assert not abandoned(live_elsewhere) and abandoned(stale_elsewhere)
    assert remove_abandoned(root) == sorted([stale_elsewhere, dead_here, reused_pid, older_release])
    assert sorted(p.name for p in root.iterdir()) == sorted(p.name for p in (live_elsewhere, mine, parent, unrelated))
    # the same folder once its owner has not been heard of for longer than STALE_AFTER
    assert remove_abandoned(root, now=time.time() + STALE_S + 60) == [live_elsewhere]


def test_a_folder_cut_off_before_its_owner_was_written(root):
    """Kept while it may still be being made (on any host), removed once stale."""
    making = root / f"{NEW}{_dead_pid()}-table-x-1"
    making.mkdir()
    assert remove_abandoned(root) == []
    assert remove_abandoned(root, now=time.time() + STALE_S + 60) == [making]


def test_new_folders_record_their_owner_and_keep_it_fresh(root, monkeypatch):
    monkeypatch.setattr(workspace, "BEAT_S", 0.05)
    workspace._owned.clear()
    workspace._beating = None  # a thread started at the default beat would sleep 30 s first
    folder = new_folder(root, "table-synapses")
    assert folder.name.startswith(f"{os.getpid()}-table-synapses-") and [p.name for p in root.iterdir()] == [folder.name]
    assert (folder / OWNER).read_text().strip() == worker_name()
    old = time.time() - STALE_S - 60
    os.utime(folder / OWNER, (old, old))
    deadline = time.monotonic() + 10
    while (folder / OWNER).stat().st_mtime < time.time() - 60:
        assert time.monotonic() < deadline, "the owner file was not refreshed"
        time.sleep(0.02)
    # judged as it would be from another host: alive while refreshed
    monkeypatch.setattr(workspace, "builder_gone", lambda worker: None)
    assert not abandoned(folder)
    assert new_folder(root, "table-other").is_dir() and folder.is_dir()
    for made in list(root.iterdir()):  # as their imports do when they end
        shutil.rmtree(made)
    deadline = time.monotonic() + 10
    while workspace._beating is not None:  # every folder removed: the heartbeat thread ends
        assert time.monotonic() < deadline, "the heartbeat thread kept running"
        time.sleep(0.02)
    assert not workspace._owned


@pytest.mark.parametrize("content", ["", "\n"])
def test_an_empty_owner_file_falls_back_to_the_pid(root, content):
    folder = root / f"{_dead_pid()}-table-x"
    folder.mkdir()
    (folder / OWNER).write_text(content)
    assert remove_abandoned(root) == [folder]
