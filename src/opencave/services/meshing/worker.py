"""The remesh request worker: a periodic job of each server process's background executor
that consumes ``remesh_requests``.

The chunkedgraph queues L2 ids there (caveclient's ``remesh_level2_chunks``). The worker meshes
those without a mesh and only then deletes their rows, so a request outlives a crash; several
processes may take the same rows, which costs duplicate work but nothing else.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from opencave.errors import NotFound

from .layout import MESHED_LAYER

if TYPE_CHECKING:
    from .service import MeshService

POLL_S = 1.0
REQUEST_BATCH = 1000


class RequestWorker:
    def __init__(self, meshes: MeshService) -> None:
        self.meshes = meshes

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

    def poll(self) -> bool:
        """One round (the runtime's executor calls it every ``POLL_S``); True if a full batch
        was handled, so more requests may be waiting."""
        return self.consume() == REQUEST_BATCH
