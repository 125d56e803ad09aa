"""Work folders of imports and exports, and the removal of those whose owner has stopped.

Workers on several hosts may share one data directory, so a process id alone cannot tell
whether a folder is abandoned. A folder made by ``new_folder`` records its owner's worker name
(host, PID, process start; see ``worker_name``) in an ``OWNER`` file whose mtime a thread of
the owning process refreshes while the folder exists. The next import removes a folder whose
owner has certainly stopped on this host, or, owned on another host, whose owner file has not
been refreshed for ``STALE_AFTER`` — the rule versions and jobs use. A folder gets its name
only once its owner file is written, so folders without one (an export's partial directory, or
one made by an older release) are judged by the PID their name starts with, as before.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from opencave.services.materialize.versions import STALE_AFTER, builder_gone, worker_name

log = logging.getLogger(__name__)

OWNER = ".owner"  # in each work folder: the worker name of the process that owns it
NEW = ".new-"  # a folder's name while its owner file is written
BEAT_S = STALE_AFTER.total_seconds() / 4  # how often an owner refreshes its folders' owner files

_lock = threading.Lock()
_owned: set[Path] = set()  # folders of this process whose owner files are kept fresh
_beating: int | None = None  # PID of the process whose heartbeat thread runs (a fork has none)


def process_running(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def abandoned(folder: Path, prefix: str = "", now: float | None = None) -> bool:
    """Whether ``folder`` (``<prefix><pid>-…``) belongs to a process that has stopped."""
    now = time.time() if now is None else now
    owner_file = folder / OWNER
    try:
        owner = owner_file.read_text().strip()
        refreshed = owner_file.stat().st_mtime
    except FileNotFoundError:
        owner = ""
    except OSError:  # unreadable: not ours to judge
        return False
    if owner:
        gone = builder_gone(owner)
        return now - refreshed > STALE_AFTER.total_seconds() if gone is None else gone
    name = folder.name[len(prefix) :]
    if name.startswith(NEW):  # cut off before its owner was written, on whichever host
        try:
            return now - folder.stat().st_mtime > STALE_AFTER.total_seconds()
        except FileNotFoundError:
            return False
    pid = name.split("-", 1)[0]
    return pid.isdigit() and not process_running(int(pid))


def remove_abandoned(root: Path, prefix: str = "", now: float | None = None) -> list[Path]:
    """Remove the folders ``root/<prefix><pid>-…`` whose owner has stopped; the removed ones."""
    if not root.is_dir():
        return []
    removed = []
    for folder in sorted(root.glob(f"{glob.escape(prefix)}*")):
        if folder.is_dir() and abandoned(folder, prefix, now):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def new_folder(root: Path, label: str) -> Path:
    """A fresh folder ``root/<pid>-<label>-<time>`` owned by this process (after removing
    abandoned ones); the caller removes it, which also ends its heartbeat."""
    remove_abandoned(root)
    folder = root / f"{os.getpid()}-{label}-{datetime.now(timezone.utc):%Y%m%d%H%M%S%f}"
    making = root / f"{NEW}{folder.name}"  # named only once its owner is recorded
    making.mkdir(parents=True, exist_ok=False)
    (making / OWNER).write_text(worker_name() + "\n")
    making.rename(folder)
    _keep_fresh(folder)
    return folder


def _keep_fresh(folder: Path) -> None:
    """Refresh ``folder``'s owner file every ``BEAT_S`` until the folder is removed."""
    global _beating
    with _lock:
        if _beating != os.getpid():  # no thread here yet (or only the parent's, before a fork)
            _owned.clear()
            _beating = os.getpid()
            threading.Thread(target=_beat, name="work-folder-heartbeat", daemon=True).start()
        _owned.add(folder)


def _beat() -> None:
    """The heartbeat thread: runs while this process owns folders, then ends."""
    global _beating
    while True:
        time.sleep(BEAT_S)
        with _lock:
            folders = list(_owned)
        for folder in folders:
            try:
                os.utime(folder / OWNER)
            except FileNotFoundError:  # removed by its owner: done with it
                with _lock:
                    _owned.discard(folder)
            except OSError:
                log.warning("could not refresh the owner file of %s; tried again in %.0f s", folder, BEAT_S, exc_info=True)
        with _lock:
            if not _owned:
                _beating = None
                return
