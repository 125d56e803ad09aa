"""The remesh request worker: a thread per server process that consumes ``remesh_requests``.

The chunkedgraph queues L2 ids there (caveclient's ``remesh_level2_chunks``). The worker meshes
those without a mesh and only then deletes their rows, so a request outlives a crash; several
processes may take the same rows, which costs duplicate work but nothing else.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from opencave.errors import NotFound

from .layout import MESHED_LAYER

if TYPE_CHECKING:
    from .service import MeshService

log = logging.getLogger("opencave.meshing")
POLL_S = 1.0
REQUEST_BATCH = 1000


class RequestWorker:
    def __init__(self, meshes: MeshService) -> None:
        self.meshes = meshes
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def consume(self, limit: int = REQUEST_BATCH) -> int:
        """Mesh queued L2 nodes, then delete their requests; the number of requests handled."""
        store, graphs = self.meshes.store, self.meshes.graphs
        requests = store.pending_requests(limit)
        by_table: dict[str, list] = defaultdict(list)
        for request in requests:
            by_table[request.table_id].append(request)
        for table_id, items in by_table.items():
            try:
                handle = graphs.graph(table_id)
            except NotFound:  # the graph is gone (its requests go with it)
                store.delete_requests([r.id for r in items])
                continue
            ids = np.array(sorted({r.l2_id for r in items}), dtype=np.uint64)
            idx = handle.index.node_index(ids)
            valid = (idx >= 0) & (handle.index.node_layer.view()[np.maximum(idx, 0)] == MESHED_LAYER)
            self.meshes.ensure(handle, ids[valid].tolist())
            store.delete_requests([r.id for r in items])
        return len(requests)

    def start(self) -> None:
        """Poll the queue in a background thread until ``stop``."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="meshing-requests", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                handled = self.consume()
            except Exception:
                log.exception("consuming remesh requests failed; retrying")
                handled = 0
            if handled == 0:
                self._wake.wait(POLL_S)
                self._wake.clear()
