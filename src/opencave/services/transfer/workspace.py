"""Work folders of imports and exports, named after the process that owns them.

A folder is named ``<prefix><pid>-…``; one whose process has stopped (killed midway) is found by
that name and removed by the next import or export, so nothing a crash leaves grows for ever.
"""

from __future__ import annotations

import glob
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path


def process_running(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_abandoned(root: Path, prefix: str = "") -> None:
    """Remove the folders ``root/<prefix><pid>-…`` whose process has stopped."""
    if not root.is_dir():
        return
    for folder in root.glob(f"{glob.escape(prefix)}*"):
        pid = folder.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not process_running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def new_folder(root: Path, label: str) -> Path:
    """A fresh folder ``root/<pid>-<label>-<time>`` (after removing abandoned ones); the caller removes it."""
    remove_abandoned(root)
    folder = root / f"{os.getpid()}-{label}-{datetime.now(timezone.utc):%Y%m%d%H%M%S%f}"
    folder.mkdir(parents=True, exist_ok=False)
    return folder
