"""Server memory under big answers: a process's resident memory, sampled while a request runs,
and the scripts that give a store a table of a million synapses (used by tests and benchmarks)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import requests

FILL = """
import sys, time
import numpy as np
from opencave.config import resolve_settings
from opencave.runtime import Runtime

runtime = Runtime.open(resolve_settings(sys.argv[1], sys.argv[2] or None))
table, rows = sys.argv[3], int(sys.argv[4])
source = runtime.annotations.read_rows("opencave_demo", "synapses")
rng = np.random.default_rng(0)
pick = rng.integers(0, source.num_rows, rows)
columns = {
    f"{p}_position": np.stack([source.column(f"{p}_position_{a}").to_numpy() for a in "xyz"], axis=1)[pick]
    for p in ("pre_pt", "post_pt", "ctr_pt")
}
columns["size"] = rng.uniform(1, 1000, pick.size)
runtime.annotations.create_table(
    "opencave_demo", table, "synapse", description="many synapses", voxel_resolution=[8, 8, 40], user_id="1"
)
runtime.annotations.insert_columns("opencave_demo", table, columns, created=np.full(pick.size, time.time() - 60))
"""

CHANGE = """
import sys
from opencave.config import resolve_settings
from opencave.runtime import Runtime

runtime = Runtime.open(resolve_settings(sys.argv[1], sys.argv[2] or None))
table, deleted, added = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
runtime.annotations.delete("opencave_demo", table, list(range(1, 2 * deleted, 2)))
source = runtime.annotations.read_rows("opencave_demo", "synapses").slice(0, added).to_pylist()
point = lambda row, p: [row[f"{p}_position_{a}"] for a in "xyz"]
runtime.annotations.insert(
    "opencave_demo",
    table,
    [{"pre_pt": {"position": point(r, "pre_pt")}, "post_pt": {"position": point(r, "post_pt")},
      "ctr_pt": {"position": point(r, "ctr_pt")}, "size": 1.0} for r in source],
)
"""


def run_script(server, script: str, *args: object) -> None:
    """Run ``script`` in a fresh interpreter on ``server``'s store (data dir, database, *args)."""
    result = subprocess.run(
        [sys.executable, "-c", script, str(server.data_dir), server.database or "", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        raise AssertionError(result.stderr)


def fill_synapses(server, table: str, rows: int) -> None:
    """A synapse table of ``rows`` rows (positions drawn from the demo's synapses), written at once."""
    run_script(server, FILL, table, rows)


def change_synapses(server, table: str, deleted: int, added: int) -> None:
    """Delete the rows of ids 1, 3, 5, … (``deleted`` of them) and insert ``added`` new rows."""
    run_script(server, CHANGE, table, deleted, added)


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


class PeakRss:
    """The highest resident memory of a process while the ``with`` block runs, sampled every 10 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = self.peak = rss(pid)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, rss(self.pid))
            time.sleep(0.01)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, rss(self.pid))

    @property
    def rise(self) -> int:
        return self.peak - self.baseline


def count_json_records(response: requests.Response) -> tuple[int, int]:
    """Records and bytes of a streamed JSON array of records whose first key is ``id``, read a
    chunk at a time (never held whole)."""
    token = b'{"id":'
    rows = size = 0
    head, tail = None, b""
    for chunk in response.iter_content(chunk_size=1 << 20):
        if head is None:
            head = chunk[:1]
        size += len(chunk)
        text = tail + chunk
        rows += text.count(token)
        tail = text[-(len(token) - 1) :]
    if head != b"[" or not tail.endswith(b"]"):
        raise AssertionError(f"not a JSON array: starts {head!r}, ends {tail!r}")
    return rows, size
